// Test support: a gate that holds threads (a fault proxy's handlers, say) until the test opens
// it, at most for a bounded time each.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace nbu::test {

class Gate {
 public:
  Gate() = default;
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // True once the gate is open; false if it stayed shut for `limit`.
  bool Wait(std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return open_; });
  }
  // Opens the gate when it goes out of scope. Declare it after what waits at the gate (a proxy
  // that joins its handlers when destroyed), so the waiters are let through before the join.
  [[nodiscard]] auto OpenAtExit() {
    struct Opener {
      explicit Opener(Gate* g) : gate(g) {}
      Gate* gate;
      Opener(const Opener&) = delete;
      Opener& operator=(const Opener&) = delete;
      ~Opener() { gate->Open(); }
    };
    return Opener(this);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;  // guarded by mu_
};

}  // namespace nbu::test
