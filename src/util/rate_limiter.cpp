#include "util/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace nbu {

RateLimiter::RateLimiter(double bytes_per_s, Clock& clock, Duration burst)
    : bytes_per_s_(bytes_per_s), clock_(clock), burst_(burst) {}

bool RateLimiter::Acquire(uint64_t bytes, std::stop_token stop) {
  const MonoTime now = clock_.Now();
  MonoTime at;
  {
    std::lock_guard lock(mu_);
    // Once these bytes and those granted before them have gone at the rate, less one burst
    // (the generic cell rate algorithm): the bytes granted by any time t are at most the rate's
    // share since the limiter was last idle, plus the burst.
    // Rounded up to the nanosecond: on the cap's side.
    next_ = std::max(next_, now) + Duration(static_cast<Duration::rep>(
                                       std::ceil(static_cast<double>(bytes) / bytes_per_s_ * 1e9)));
    at = next_ - burst_;
  }
  if (at <= now) return !stop.stop_requested();
  return clock_.SleepFor(at - now, stop);
}

}  // namespace nbu
