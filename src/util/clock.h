// Clock: monotonic and wall time plus cancellable sleeping, behind an interface so tests never
// sleep on the real clock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <vector>

namespace nbu {

using MonoTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;
using Duration = std::chrono::nanoseconds;

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time of this process: the only clock used to measure ages and timeouts.
  virtual MonoTime Now() const = 0;
  // Wall-clock time: used for dates in names and for timestamps shown to people.
  virtual WallTime WallNow() const = 0;
  // Sleeps for `d` or until `stop` is requested. Returns false when woken by `stop`.
  virtual bool SleepFor(Duration d, std::stop_token stop) = 0;
};

class RealClock final : public Clock {
 public:
  MonoTime Now() const override { return std::chrono::steady_clock::now(); }
  WallTime WallNow() const override { return std::chrono::system_clock::now(); }
  bool SleepFor(Duration d, std::stop_token stop) override;

  static RealClock& Instance();
};

// A clock for tests. Time moves only when Advance() is called, or (with auto_advance) when code
// sleeps: the sleep then returns at once with the clock moved forward and the sleep recorded.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(bool auto_advance = true,
                          WallTime wall_start = WallTime(std::chrono::hours(24 * 20000)))
      : auto_advance_(auto_advance), wall_start_(wall_start) {}

  MonoTime Now() const override;
  WallTime WallNow() const override;
  bool SleepFor(Duration d, std::stop_token stop) override;
  void Advance(Duration d);
  std::vector<Duration> SleepsForTest() const;

 private:
  const bool auto_advance_;
  const WallTime wall_start_;
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  Duration elapsed_{0};           // guarded by mu_
  std::vector<Duration> sleeps_;  // guarded by mu_
};

inline double ToSeconds(Duration d) { return std::chrono::duration<double>(d).count(); }
// Exponential backoff with jitter, for request retries and file attempts alike:
// base * 2^(attempt-1) * (0.8 + 0.5 * jitter01), capped at `cap`; jitter01 is uniform in [0,1).
Duration ExponentialBackoff(int attempt, Duration base, Duration cap, double jitter01);
inline Duration FromSeconds(double s) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

}  // namespace nbu
