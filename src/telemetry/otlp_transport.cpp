#include "telemetry/otlp_transport.h"

#include "util/crypto.h"
#include "util/text.h"

#include <curl/curl.h>

#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

namespace nbu::telemetry {
namespace {

constexpr std::chrono::milliseconds kMaxConnectTimeout{3000};
constexpr std::chrono::seconds kFarFuture{int64_t{1} << 40};  // beyond any cap; no overflow
constexpr size_t kMinRedactedWord = 8;  // shorter words of a header value ("Bearer") are kept

size_t WriteBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* body = static_cast<std::string*>(user);
  const size_t n = size * nmemb;
  if (body->size() < kMaxOtlpResponseBody)
    body->append(data, std::min(n, kMaxOtlpResponseBody - body->size()));
  return n;
}

// Returning non-zero aborts the transfer (CURLE_ABORTED_BY_CALLBACK).
int Progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::atomic<bool>*>(user)->load() ? 1 : 0;
}

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

class CurlOtlpTransport final : public OtlpTransport {
 public:
  CurlOtlpTransport() : curl_(curl_easy_init()) {}
  ~CurlOtlpTransport() override {
    if (curl_ != nullptr) curl_easy_cleanup(curl_);
  }
  CurlOtlpTransport(const CurlOtlpTransport&) = delete;
  CurlOtlpTransport& operator=(const CurlOtlpTransport&) = delete;

  OtlpResult Post(const OtlpRequest& req, const std::atomic<bool>& cancel) override {
    const std::string where = "POST " + EndpointForLog(req.url);
    if (curl_ == nullptr) return Fail(ErrorKind::kTransient, where + ": curl_easy_init failed");
    std::unique_ptr<curl_slist, SlistDeleter> headers(
        curl_slist_append(nullptr, "Content-Type: application/json"));
    if (req.headers != nullptr) {
      for (const auto& [name, value] : *req.headers) {
        headers.reset(curl_slist_append(headers.release(), (name + ": " + value).c_str()));
      }
    }
    std::string response;
    curl_easy_reset(curl_);
    const auto timeout_ms = static_cast<long>(std::max<int64_t>(1, req.timeout.count()));
    curl_easy_setopt(curl_, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_POST, 1L);
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT_MS,
                     std::min<long>(timeout_ms, static_cast<long>(kMaxConnectTimeout.count())));
    curl_easy_setopt(curl_, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl_, CURLOPT_USERAGENT, "nfs-blob-uploader-otlp-exporter");
    curl_easy_setopt(curl_, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &WriteBody);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, &Progress);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, &cancel);
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc == CURLE_ABORTED_BY_CALLBACK) return Fail(ErrorKind::kCancelled, where + ": cancelled");
    if (rc != CURLE_OK) return Fail(ErrorKind::kTransient, where + ": " + curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) return {Status::Ok(), std::nullopt, std::move(response)};
    std::string message = where + ": HTTP " + std::to_string(status);
    // The body helps with a 400 (which field was refused) but is logged: header values (API
    // keys) are removed before it is shortened, which could cut one beyond recognition, and a
    // refused credential's answer (401, 403) is left out altogether.
    if (!response.empty() && status != 401 && status != 403) {
      message += ": " + WithoutSecrets(response, req.headers, req.url).substr(0, 200);
    }
    OtlpResult result = Fail(
        IsRetryableOtlpStatus(status) ? ErrorKind::kTransient : ErrorKind::kPermanent, message);
    // The two statuses OTLP/HTTP throttling pairs with Retry-After.
    if (status == 429 || status == 503) result.retry_after = RetryAfter();
    return result;
  }

 private:
  static OtlpResult Fail(ErrorKind kind, std::string message) {
    return {{kind, std::move(message)}, std::nullopt, {}};
  }

  // An HTTP-date is read against the answer's own Date, as azure/retry_policy.cpp does, so a
  // skewed clock here does not stretch or void the wait; without a Date, against ours.
  std::optional<std::chrono::seconds> RetryAfter() {
    curl_header* h = nullptr;
    if (curl_easy_header(curl_, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK) {
      return std::nullopt;
    }
    const std::string value = h->value;  // the next curl_easy_header call reuses *h
    std::time_t now = std::time(nullptr);
    if (curl_easy_header(curl_, "Date", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
      const std::time_t date = curl_getdate(h->value, nullptr);
      if (date != -1) now = date;
    }
    return ParseRetryAfter(value, now);
  }

  CURL* curl_;
};

}  // namespace

std::string WithoutSecrets(const std::string& text, const KeyValues* headers,
                           std::string_view url) {
  std::vector<std::string> secrets;
  for (const auto& [name, value] : headers != nullptr ? *headers : KeyValues{}) {
    secrets.push_back(value);
    for (size_t at = 0; at < value.size();) {
      const size_t end = std::min(value.find(' ', at), value.size());
      if (end - at >= kMinRedactedWord) secrets.push_back(value.substr(at, end - at));
      at = end + 1;
    }
  }
  const auto decoded = [](std::string_view value) {
    if (value.empty()) return std::string();  // curl takes length 0 as "up to the NUL"
    int n = 0;
    char* d = curl_easy_unescape(nullptr, value.data(), static_cast<int>(value.size()), &n);
    std::string out = d != nullptr ? std::string(d, static_cast<size_t>(n)) : std::string(value);
    curl_free(d);
    return out;
  };
  const size_t query = url.find('?');
  const std::string_view pairs =
      query == std::string_view::npos ? "" : url.substr(query + 1, url.find('#') - query - 1);
  for (size_t at = 0; at < pairs.size();) {
    const size_t end = std::min(pairs.find('&', at), pairs.size());
    const std::string_view pair = pairs.substr(at, end - at);
    at = end + 1;
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos || pair.size() - eq - 1 < kMinRedactedWord) continue;
    secrets.emplace_back(pair.substr(eq + 1));
    secrets.push_back(decoded(pair.substr(eq + 1)));
  }
  // A password in the URL, and the Basic credential curl sends of its user info.
  const size_t scheme = url.find("://");
  const std::string_view authority =
      scheme == std::string_view::npos
          ? ""
          : url.substr(scheme + 3, url.find_first_of("/?#", scheme + 3) - scheme - 3);
  // A password is one whatever its length (a short one costs the text around it, not the secret);
  // a user name alone may be a gateway's key ("https://<key>@host"), when long enough for one.
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    const size_t colon = userinfo.find(':');
    const std::string user = decoded(userinfo.substr(0, colon));
    // No password, or an empty one ("https://<key>:@host"): the user name is the credential.
    const std::string_view password =
        colon == std::string_view::npos ? std::string_view() : userinfo.substr(colon + 1);
    if (!password.empty()) {
      secrets.emplace_back(password);
      secrets.push_back(decoded(password));
    } else if (user.size() >= kMinRedactedWord) {
      secrets.emplace_back(userinfo.substr(0, colon));
      secrets.push_back(user);
    }
    secrets.push_back(Base64Encode(user + ":" + decoded(password)));
  }
  return ScrubSecrets(text, secrets);  // merges overlapping spans: order does not matter
}

bool IsRetryableOtlpStatus(long http_status) {
  // OTLP/HTTP: 429 and 502/503/504 are retryable; everything else is final for that batch.
  return http_status == 429 || http_status == 502 || http_status == 503 || http_status == 504;
}

std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value, std::time_t now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (value.front() >= '0' && value.front() <= '9') {  // every HTTP-date starts with a day name
    uint64_t s = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), s);
    if (end != value.data() + value.size()) return std::nullopt;
    if (ec != std::errc() || s > static_cast<uint64_t>(kFarFuture.count())) return kFarFuture;
    return std::chrono::seconds(static_cast<int64_t>(s));
  }
  const std::time_t until = curl_getdate(std::string(value).c_str(), nullptr);
  if (until == -1) return std::nullopt;
  return std::chrono::seconds(std::clamp<int64_t>(until - now, 0, kFarFuture.count()));
}

std::unique_ptr<OtlpTransport> NewCurlOtlpTransport() {
  return std::make_unique<CurlOtlpTransport>();
}

}  // namespace nbu::telemetry
