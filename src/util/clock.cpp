#include "util/clock.h"

#include <algorithm>
#include <cmath>

namespace nbu {

Duration ExponentialBackoff(int attempt, Duration base, Duration cap, double jitter01) {
  const double jitter = 0.8 + 0.5 * std::clamp(jitter01, 0.0, 1.0);
  const double factor = std::ldexp(1.0, std::clamp(attempt - 1, 0, 62));
  const double ns = static_cast<double>(base.count()) * factor * jitter;
  return ns >= static_cast<double>(cap.count()) ? cap : Duration(static_cast<int64_t>(ns));
}

bool RealClock::SleepFor(Duration d, std::stop_token stop) {
  std::mutex mu;
  std::condition_variable_any cv;
  // cppcheck-suppress localMutex ; a private mutex and cv only make the wait interruptible
  std::unique_lock lock(mu);
  return !cv.wait_for(lock, stop, d, [] { return false; }) && !stop.stop_requested();
}

RealClock& RealClock::Instance() {
  static RealClock clock;
  return clock;
}

MonoTime SimulatedClock::Now() const {
  std::lock_guard lock(mu_);
  return MonoTime(elapsed_);
}

WallTime SimulatedClock::WallNow() const {
  std::lock_guard lock(mu_);
  return wall_start_ + std::chrono::duration_cast<WallTime::duration>(elapsed_);
}

bool SimulatedClock::SleepFor(Duration d, std::stop_token stop) {
  std::unique_lock lock(mu_);
  sleeps_.push_back(d);
  if (auto_advance_) {
    elapsed_ += d;
    cv_.notify_all();
    return !stop.stop_requested();
  }
  const Duration until = elapsed_ + d;
  return cv_.wait(lock, stop, [&] { return elapsed_ >= until; });
}

void SimulatedClock::Advance(Duration d) {
  std::lock_guard lock(mu_);
  elapsed_ += d;
  cv_.notify_all();
}

std::vector<Duration> SimulatedClock::SleepsForTest() const {
  std::lock_guard lock(mu_);
  return sleeps_;
}

}  // namespace nbu
