#include "azure/token_credential.h"

#include "azure/url.h"
#include "util/log.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace nbu::azure {
namespace {

// The token this thread was last handed, so Invalidate() after a 401 drops that token only.
struct LastUsed {
  const TokenCredential* credential = nullptr;
  uint64_t generation = 0;
};
thread_local LastUsed t_last_used;

constexpr double kMaxLifetimeS = 1e8;  // three years

// App Service 2017's expires_on: "M/D/YYYY h:mm:ss[ AM|PM] +HH:MM" (Linux answers without AM/PM,
// Windows with), as the Azure SDKs for Python and Go parse it.
std::optional<int64_t> AppService2017Time(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  const std::string& s = it->get_ref<const std::string&>();
  int mon = 0, day = 0, year = 0, hour = 0, min = 0, sec = 0, used = 0;
  // NOLINTNEXTLINE(cert-err34-c): every field is range-checked below
  if (std::sscanf(s.c_str(), "%d/%d/%d %d:%d:%d%n", &mon, &day, &year, &hour, &min, &sec, &used) !=
      6) {
    return std::nullopt;
  }
  std::string_view rest = std::string_view(s).substr(static_cast<size_t>(used));
  const bool pm = rest.starts_with(" PM");
  if (rest.starts_with(" AM") || pm) {
    if (hour < 1 || hour > 12) return std::nullopt;
    hour = hour % 12 + (pm ? 12 : 0);
    rest.remove_prefix(3);
  }
  int off_h = 0, off_m = 0;
  if (rest.size() != 7 || rest[0] != ' ' || (rest[1] != '+' && rest[1] != '-') || rest[4] != ':' ||
      std::sscanf(rest.data() + 2, "%2d:%2d", &off_h, &off_m) != 2) {
    return std::nullopt;
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || year < 1970 || hour > 23 || min > 59 ||
      sec > 60 || off_h > 14 || off_m > 59) {
    return std::nullopt;
  }
  std::tm tm = CalendarTime(year, mon, day, hour, min, sec);
  const int64_t offset = int64_t{(off_h * 3600) + (off_m * 60)} * (rest[1] == '-' ? -1 : 1);
  const int64_t at = static_cast<int64_t>(timegm(&tm)) - offset;
  // Bounded as the numeric expiries are: a later time overflows the clock's nanoseconds.
  if (static_cast<double>(at) > kMaxTokenEpochS) return std::nullopt;
  return at;
}

std::string Shorten(std::string s, size_t max) {
  if (const auto nl = s.find_first_of("\r\n"); nl != std::string::npos) s.resize(nl);
  if (s.size() > max) s.replace(max, std::string::npos, "...");
  return s;
}

ErrorKind KindForTokenStatus(long status) {
  if (status == 404 || status == 408 || status == 410 || status == 429 || status >= 500) {
    return ErrorKind::kTransient;
  }
  return ErrorKind::kAuth;
}

}  // namespace

std::optional<double> NumberField(const nlohmann::json& j, const char* key, double max) {
  auto it = j.find(key);
  if (it == j.end()) return std::nullopt;
  double v = 0;
  if (it->is_number()) {
    v = it->get<double>();
  } else if (it->is_string() && !it->get_ref<const std::string&>().empty()) {
    const std::string& s = it->get_ref<const std::string&>();
    char* end = nullptr;
    v = std::strtod(s.c_str(), &end);
    if (end == nullptr || *end != '\0') return std::nullopt;
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(v) || v < 0 || v > max) return std::nullopt;
  return v;
}

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

Status TokenCredential::Authorize(HttpRequest& req, const std::string& /*account*/,
                                  bool /*path_style*/) {
  if (Status s = CheckSecureUrl(req.url, "bearer token"); !s.ok()) return s;
  if (const std::string* v = req.FindHeader("x-ms-version");
      v != nullptr && *v < kMinBearerApiVersion) {
    return Status(ErrorKind::kPermanent, std::string("bearer tokens need x-ms-version >= ") +
                                             kMinBearerApiVersion + ", request has " + *v);
  }
  Result<std::string> token = GetToken(req.stop);
  if (!token.ok()) return token.status();
  req.SetHeader("Authorization", "Bearer " + *token);
  return Status::Ok();
}

bool TokenCredential::Invalidate() {
  std::lock_guard lock(mu_);
  if (!cached_) return true;  // dropped already: the next Authorize fetches
  // A token fetched after the one this thread used is kept: someone already refreshed.
  const bool mine = t_last_used.credential == this;
  if (mine && t_last_used.generation != token_generation_) return true;
  const WallTime now = clock_.WallNow();
  if (dropped_at_ && now - *dropped_at_ < kInvalidateInterval) return false;
  cached_.reset();
  next_try_ = WallTime{};
  dropped_at_ = now;
  LogInfo("token invalidated after 401", {{"credential", Describe()}});
  return true;
}

Result<std::string> TokenCredential::GetToken(std::stop_token stop) {
  std::unique_lock lock(mu_);
  for (;;) {
    const WallTime now = clock_.WallNow();
    const bool usable = UsableLocked(now);
    if (usable && (now < refresh_at_ || now < next_try_ || fetching_)) {
      t_last_used = {this, token_generation_};
      return cached_->token;
    }
    if (fetching_) {
      // No valid token: wait for the fetch in flight and share its outcome.
      const uint64_t seen = generation_;
      ++waiters_;
      const bool woken = cv_.wait(lock, stop, [&] { return generation_ != seen; });
      --waiters_;
      if (!woken) {
        return Status(ErrorKind::kCancelled, Describe() + ": stopped waiting for a token");
      }
      if (UsableLocked(clock_.WallNow())) continue;
      if (!last_error_.ok()) return last_error_;  // the fetch waited for failed: share its error
      continue;
    }
    fetching_ = true;
    ++fetches_;
    lock.unlock();
    Result<AccessToken> fetched = Status(ErrorKind::kAuth, "token fetch did not run");
    try {
      fetched = FetchToken(stop);
    } catch (...) {  // whatever it is: fetching_ must be cleared below, or every caller waits
      fetched = Status(ErrorKind::kAuth, Describe() + ": unexpected error fetching a token");
    }
    const WallTime done = clock_.WallNow();
    lock.lock();
    fetching_ = false;
    ++generation_;
    cv_.notify_all();
    // Stopped: says nothing of the source, so it is no error for the threads that waited (they
    // fetch again, unless they are stopping too) and no reason to wait before the next try.
    if (!fetched.ok() && fetched.status().kind() == ErrorKind::kCancelled) {
      last_error_ = Status::Ok();  // nor is an older fetch's error theirs
      return fetched.status();
    }
    if (fetched.ok() && fetched->expires_on <= done) {
      // Storage would refuse it, and every request would fetch another: say why instead.
      fetched = Status(ErrorKind::kAuth,
                       Describe() + ": the token issued had expired on arrival, " +
                           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                              done - fetched->expires_on)
                                              .count()) +
                           " s before this machine's clock: is the clock ahead?");
    }
    if (fetched.ok()) {
      refresh_at_ = RefreshAt(*fetched, done);
      cached_ = std::move(*fetched);
      token_generation_ = generation_;
      next_try_ = WallTime{};
      last_error_ = Status::Ok();
      LogInfo(
          "token acquired",
          {{"credential", Describe()},
           {"expires_in_s",
            std::chrono::duration_cast<std::chrono::seconds>(cached_->expires_on - done).count()}});
      t_last_used = {this, token_generation_};
      return cached_->token;
    }
    last_error_ = fetched.status();
    if (UsableLocked(done)) {
      // The old token still works: keep it, try again later.
      next_try_ = done + kRetryAfterFailure;
      LogWarn("token refresh failed; using the cached token",
              {{"credential", Describe()}, {"error", last_error_.ToString()}});
      t_last_used = {this, token_generation_};
      return cached_->token;
    }
    return last_error_;
  }
}

uint64_t TokenCredential::FetchCountForTest() const {
  std::lock_guard lock(mu_);
  return fetches_;
}

int TokenCredential::WaitersForTest() const {
  std::lock_guard lock(mu_);
  return waiters_;
}

bool TokenCredential::HoldsAValidToken() const {
  std::lock_guard lock(mu_);
  return UsableLocked(clock_.WallNow());
}

bool TokenCredential::UsableLocked(WallTime now) const {
  return cached_.has_value() && now < cached_->expires_on;
}

WallTime TokenCredential::RefreshAt(const AccessToken& t, WallTime fetched) const {
  const Duration lifetime = t.expires_on - fetched;
  const WallTime by_lifetime =
      lifetime >= kHalfLifeFrom ? fetched + lifetime / 2
                                : std::max(t.expires_on - kRefreshMargin, fetched + lifetime / 2);
  if (!t.refresh_on) return by_lifetime;
  // The issuer's hint, within reason: one of 0 (a stand-in's, a proxy's) would fetch a token for
  // every request, and one past the expiry would use the token to its last instant.
  return std::min(std::max(*t.refresh_on, fetched + kEarliestHintedRefresh), by_lifetime);
}

Status CheckSecureUrl(const std::string& url, const std::string& what) {
  const UrlParts parts = SplitUrl(url);
  if (parts.scheme == "https") return Status::Ok();
  if (parts.scheme == "http" && IsLoopbackAuthority(parts.authority)) return Status::Ok();
  // Without its user info, which may hold a password.
  return Status(ErrorKind::kAuth, what + ": refusing " +
                                      RedactUrl(parts.scheme + "://" + parts.authority) +
                                      ": https is required (plain http only to loopback)");
}

std::string FormEncode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out;
  for (const auto& [name, value] : fields) {
    if (!out.empty()) out += '&';
    out += UrlEncodeQueryValue(name) + "=" + UrlEncodeQueryValue(value);
  }
  return out;
}

Result<AccessToken> ParseTokenResponse(const HttpResponse& resp, WallTime now,
                                       const std::string& who,
                                       const std::vector<std::string>& secrets) {
  const nlohmann::json j = nlohmann::json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  const bool is_object = !j.is_discarded() && j.is_object();
  if (resp.status != 200) {
    // Scrubbed before shortened: a cut through an echoed secret would keep part of it, which
    // scrubbing the message afterwards no longer recognises.
    const auto field = [&](const char* name, size_t max) {
      return Shorten(ScrubSecrets(j[name].get<std::string>(), secrets), max);
    };
    std::string msg = who + ": HTTP " + std::to_string(resp.status);
    if (is_object && j.contains("error") && j["error"].is_string()) {
      msg += " " + field("error", 80);
    }
    if (is_object && j.contains("error_description") && j["error_description"].is_string()) {
      msg += ": " + field("error_description", 200);
    } else if (is_object && j.contains("message") && j["message"].is_string()) {
      msg += ": " + field("message", 200);
    }
    return Status(KindForTokenStatus(resp.status), msg);
  }
  if (!is_object) return Status(ErrorKind::kAuth, who + ": token response is not a JSON object");
  std::string token;
  for (const char* key : {"access_token", "accessToken"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) token = it->get<std::string>();
  }
  if (token.empty()) return Status(ErrorKind::kAuth, who + ": token response has no access_token");
  AccessToken out;
  out.token = std::move(token);
  if (auto in = NumberField(j, "expires_in", kMaxLifetimeS)) {
    out.expires_on = now + std::chrono::duration_cast<Duration>(std::chrono::duration<double>(*in));
  } else if (auto on = NumberField(j, "expires_on", kMaxTokenEpochS)) {
    out.expires_on = WallTime(std::chrono::duration_cast<WallTime::duration>(
        std::chrono::seconds(static_cast<int64_t>(*on))));
  } else if (auto at = AppService2017Time(j, "expires_on")) {
    out.expires_on = WallTime(std::chrono::seconds(*at));
  } else {
    return Status(ErrorKind::kAuth,
                  who + ": token response has no usable expires_in or expires_on");
  }
  if (auto refresh_in = NumberField(j, "refresh_in", kMaxLifetimeS)) {
    out.refresh_on =
        now + std::chrono::duration_cast<Duration>(std::chrono::duration<double>(*refresh_in));
  }
  return out;
}

std::tm CalendarTime(int year, int month, int day, int hour, int min, int sec) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return tm;
}

Status AfterAttempts(const Status& s, int attempts) {
  if (attempts <= 1) return s;
  return Status(s.kind(), s.message() + " (after " + std::to_string(attempts) + " attempts)");
}

std::shared_ptr<HttpTransport> TokenTransport(const TokenSourceOptions& options) {
  return options.transport ? options.transport : std::make_shared<HttpTransport>();
}

}  // namespace nbu::azure
