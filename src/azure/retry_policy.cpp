// Retry policy (data + one function) and the process-wide throttle gate; see retry_policy.h.
#include "azure/retry_policy.h"

#include "util/crypto.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>

namespace nbu::azure {
namespace {

// Digits only; a number too large for int64_t is read as its largest value (a server asking for
// a very long wait is asking for the longest one we allow, not for none).
std::optional<int64_t> ParseNonNegative(const std::string* text) {
  if (text == nullptr || text->empty() || text->front() == '-') return std::nullopt;
  int64_t v = 0;
  const char* end = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(text->data(), end, v);
  if (ptr != end) return std::nullopt;
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<int64_t>::max();
  if (ec != std::errc()) return std::nullopt;
  return v;
}

std::chrono::milliseconds CappedHint(int64_t amount, int64_t ms_per_unit) {
  const int64_t cap = kMaxServerHint.count() / ms_per_unit;
  return std::chrono::milliseconds(std::clamp<int64_t>(amount, 0, cap) * ms_per_unit);
}

// An IMF-fixdate ("Wed, 21 Oct 2015 07:28:00 GMT") as seconds since the epoch.
std::optional<int64_t> ParseHttpDate(const std::string* text) {
  if (text == nullptr) return std::nullopt;
  std::tm tm{};
  const char* end = ::strptime(text->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return static_cast<int64_t>(::timegm(&tm));
}

}  // namespace

bool IsRetryableStatus(long status) {
  switch (status) {
    case 408:  // request timeout: the server gave up waiting for us; a fresh try may finish
    case 429:  // too many requests: throttled, back off and retry
    case 500:  // InternalError / OperationTimedOut: Azure says "please retry"
    case 502:  // bad gateway: a proxy or front end hiccup
    case 503:  // ServerBusy: account or partition over its limits, back off
    case 504:  // gateway timeout: as 502
      return true;
    default: return false;  // 2xx/3xx are not failures; other 4xx/5xx will not change on retry
  }
}

std::optional<std::chrono::milliseconds> ServerRetryHint(const HttpResponse& response) {
  // Checked in the order the Azure SDKs use: explicit milliseconds first, then seconds.
  if (auto ms = ParseNonNegative(response.Header("retry-after-ms"))) return CappedHint(*ms, 1);
  if (auto ms = ParseNonNegative(response.Header("x-ms-retry-after-ms"))) {
    return CappedHint(*ms, 1);
  }
  if (auto s = ParseNonNegative(response.Header("retry-after"))) return CappedHint(*s, 1000);
  // Retry-After as an HTTP date: measured against the response's own Date header, so the two
  // clocks that matter are the server's (ours may be skewed); without a Date, no hint.
  if (auto until = ParseHttpDate(response.Header("retry-after"))) {
    if (auto date = ParseHttpDate(response.Header("date"))) return CappedHint(*until - *date, 1000);
  }
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> RetryDelay(const RetryOptions& options, int attempt,
                                                    const Result<HttpResponse>& outcome,
                                                    double jitter01) {
  if (attempt >= options.max_attempts) return std::nullopt;
  if (!outcome.ok()) {
    // Connection errors and timeouts are transient; anything else not: a bad URL, or a body the
    // transport could not read back (kStaging: a resend would read the same staging copy).
    const ErrorKind kind = outcome.status().kind();
    if (kind != ErrorKind::kTransient && kind != ErrorKind::kUnavailable) return std::nullopt;
  } else {
    if (!IsRetryableStatus(outcome->status)) return std::nullopt;
    return AnswerDelay(options, attempt, *outcome, jitter01);
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      ExponentialBackoff(attempt, options.base_delay, options.max_delay, jitter01));
}

std::chrono::milliseconds AnswerDelay(const RetryOptions& options, int attempt,
                                      const HttpResponse& response, double jitter01) {
  if (auto hint = ServerRetryHint(response)) return std::min(*hint, options.max_delay);
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      ExponentialBackoff(attempt, options.base_delay, options.max_delay, jitter01));
}

ThrottleGate::ThrottleGate(Clock& clock, std::function<double()> random01)
    : clock_(clock),
      random01_(random01 ? std::move(random01) : std::function<double()>(FastRandom01)) {}

bool ThrottleGate::Wait(std::stop_token stop) {
  std::optional<double> draw;  // this caller's share of the spread, once it is held
  for (;;) {
    if (stop.stop_requested()) return false;
    Duration remaining{0};
    {
      std::lock_guard lock(mu_);
      const MonoTime now = clock_.Now();
      if (!draw && now >= not_before_) return true;  // open: nothing to spread
      if (!draw) draw = std::clamp(random01_(), 0.0, 1.0);
      // Measured from the gate's current "not before" on every pass: a throttle while this
      // caller waits moves its release too.
      const MonoTime release = not_before_ + std::chrono::duration_cast<Duration>(spread_ * *draw);
      if (now >= release) return true;
      remaining = release - now;
    }
    if (!clock_.SleepFor(remaining, stop)) return false;
  }
}

void ThrottleGate::Throttle(std::chrono::milliseconds delay) {
  std::lock_guard lock(mu_);
  const MonoTime until = clock_.Now() + delay;
  if (until <= not_before_) return;  // a shorter delay never shortens the gate
  not_before_ = until;
  // A quarter: the spread of the retry backoff's own jitter (0.8-1.3, half the delay) would
  // add up to 30 s to a 60 s Retry-After; a quarter, capped at a second, spreads the held
  // requests over a span storage can take them in, without keeping them much past the wait
  // storage asked for.
  spread_ = std::min<Duration>(Duration(delay) / 4, kMaxReleaseSpread);
}

bool ThrottleGate::ThrottledNow() const {
  std::lock_guard lock(mu_);
  return clock_.Now() < not_before_;
}

}  // namespace nbu::azure
