// Retry policy as data plus one function, and a process-wide throttle gate.
#pragma once

#include "azure/http.h"
#include "util/clock.h"
#include "util/status.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>

namespace nbu::azure {

struct RetryOptions {
  int max_attempts = 6;                        // total tries per request
  std::chrono::milliseconds base_delay{800};   // first backoff
  std::chrono::milliseconds max_delay{60000};  // cap for computed and server delays
};

// Decides whether attempt number `attempt` (1-based, just failed) is retried and after how long.
// Retried: connection errors/timeouts (transient Status), 408, 429, 500, 502, 503, 504.
// Never retried: other statuses (4xx are the caller's fault or final; 2xx/3xx are not failures).
// Delay: base * 2^(attempt-1) * jitter[0.8,1.3], capped; a server hint (retry-after-ms,
// x-ms-retry-after-ms, Retry-After seconds) replaces it, capped at max_delay.
// `jitter01` is a uniform random number in [0,1).
std::optional<std::chrono::milliseconds> RetryDelay(const RetryOptions& options, int attempt,
                                                    const Result<HttpResponse>& outcome,
                                                    double jitter01);
// How long a retryable answer asks requests to wait: the server's hint capped at max_delay, else
// the backoff of `attempt`. What RetryDelay returns for it, and what a throttling answer holds
// every request back by even when it is not retried (the last attempt's).
std::chrono::milliseconds AnswerDelay(const RetryOptions& options, int attempt,
                                      const HttpResponse& response, double jitter01);
// True for HTTP statuses the policy retries.
bool IsRetryableStatus(long status);
// The largest hint ServerRetryHint returns (about 68 years): any hint converts to Duration
// (nanoseconds) without overflow, so a caller can cap it with its own maximum in any unit.
inline constexpr std::chrono::milliseconds kMaxServerHint{(int64_t{1} << 31) * 1000};
// Server-suggested delay from response headers, if any: retry-after-ms, x-ms-retry-after-ms,
// Retry-After in seconds, or Retry-After as an HTTP date (relative to the response's Date).
// A number too large to hold is read as kMaxServerHint.
std::optional<std::chrono::milliseconds> ServerRetryHint(const HttpResponse& response);

// Shared by every request of the process: a throttling answer (429/503) pushes a "not before"
// time that all requests wait for, so workers back off together instead of hammering.
// A request that finds the gate closed waits past "not before" by its own random extra, up to a
// quarter of the throttling delay and at most kMaxReleaseSpread, so the requests held back do not
// all reach storage in the same instant when it opens (Azure's guidance for ServerBusy: back off,
// and not in lockstep). A request that finds the gate open is not held.
class ThrottleGate {
 public:
  static constexpr std::chrono::milliseconds kMaxReleaseSpread{1000};

  // `random01`: uniform in [0,1), one draw per held request (a test passes its own).
  explicit ThrottleGate(Clock& clock, std::function<double()> random01 = {});
  // Blocks until the gate is open for this caller; false if `stop` was requested.
  bool Wait(std::stop_token stop);
  void Throttle(std::chrono::milliseconds delay);
  bool ThrottledNow() const;

 private:
  Clock& clock_;
  const std::function<double()> random01_;
  mutable std::mutex mu_;
  MonoTime not_before_{};  // guarded by mu_
  Duration spread_{0};     // guarded by mu_; extra wait of a held request is random01 * spread_
};

}  // namespace nbu::azure
