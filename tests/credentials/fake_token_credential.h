// Test support: a TokenCredential whose fetches are scripted (lifetime, failures, a gate to hold a
// fetch in flight), for the cache and refresh tests on a SimulatedClock.
#pragma once

#include "azure/token_credential.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace nbu::azure::test {

class FakeTokenCredential final : public TokenCredential {
 public:
  explicit FakeTokenCredential(Clock& clock, Duration lifetime = std::chrono::hours(1))
      : TokenCredential(clock), lifetime_(lifetime) {}

  std::string Describe() const override { return "fake"; }
  void SetLifetime(Duration d) { lifetime_ = d; }
  // The issuer's refresh hint (refresh_in) of the tokens fetched from now on.
  void SetRefreshIn(Duration d) { refresh_in_ = d; }
  void FailNext(bool fail) { fail_ = fail; }
  // The next fetch throws something that is no std::exception (as a library's callback might).
  void ThrowNext() { throw_ = true; }
  // While held, fetches block until Release().
  void Hold() {
    std::lock_guard lock(mu_);
    held_ = true;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Waits, at most 30 s, until `n` fetches are blocked in Hold(); false if they were not (a test
  // fails instead of hanging).
  [[nodiscard]] bool WaitBlocked(int n = 1) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return blocked_ >= n; });
  }
  // Fetches blocked in Hold() now.
  int Blocked() const {
    std::lock_guard lock(mu_);
    return blocked_;
  }
  int started() const { return started_; }

 protected:
  // Ends kCancelled when `stop` was requested by the time it is released, as a real source does.
  Result<AccessToken> FetchToken(std::stop_token stop) override {
    const int n = ++started_;
    {
      std::unique_lock lock(mu_);
      ++blocked_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !held_; });
      --blocked_;
    }
    if (stop.stop_requested()) return Status(ErrorKind::kCancelled, "fake: stopped");
    if (fail_) return Status(ErrorKind::kAuth, "fake: refused");
    if (throw_.exchange(false)) throw 42;  // NOLINT(hicpp-exception-baseclass): the point
    std::optional<WallTime> refresh_on;
    if (const Duration in = refresh_in_.load(); in >= Duration::zero()) {
      refresh_on = clock().WallNow() + in;
    }
    return AccessToken{"token-" + std::to_string(n), clock().WallNow() + lifetime_.load(),
                       refresh_on};
  }

 private:
  std::atomic<Duration> lifetime_;
  std::atomic<Duration> refresh_in_{Duration(-1)};  // negative: none
  std::atomic<bool> fail_{false};
  std::atomic<bool> throw_{false};
  std::atomic<int> started_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  int blocked_ = 0;
};

}  // namespace nbu::azure::test
