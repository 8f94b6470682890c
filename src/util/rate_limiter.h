// Shares one rate of bytes among threads (APP_UPLOAD_CAP_MBPS: every upload of a replica
// together). Each caller asks for its bytes before it sends them and waits its turn, in the order
// asked: the bytes granted by any time t never exceed rate x t plus one `burst` worth, which an
// idle limiter saves up (so a lone request of no more than a burst's worth does not wait).
#pragma once

#include "util/clock.h"

#include <cstdint>
#include <mutex>
#include <stop_token>

namespace nbu {

class RateLimiter {
 public:
  RateLimiter(double bytes_per_s, Clock& clock, Duration burst = std::chrono::milliseconds(100));
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Waits until `bytes` may go. False when `stop` was requested first.
  bool Acquire(uint64_t bytes, std::stop_token stop);
  double bytes_per_s() const { return bytes_per_s_; }

 private:
  const double bytes_per_s_;
  Clock& clock_;
  const Duration burst_;
  std::mutex mu_;
  MonoTime next_{};  // guarded by mu_: when the bytes granted so far have all gone at the rate
};

}  // namespace nbu
