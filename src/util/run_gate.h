// A gate some runs pass side by side and others pass alone: a reader-writer lock whose lone
// runs go first (one waiting closes the gate to new side-by-side runs, so a steady stream of
// them cannot keep it out), and whose waits end at a stop.
#pragma once

#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace nbu {

class RunGate {
 public:
  // Held for one run; false (nothing held) when `stop` came first.
  class Pass {
   public:
    Pass(RunGate& gate, bool alone, std::stop_token stop) : gate_(gate), alone_(alone) {
      held_ = gate_.Enter(alone_, stop);
    }
    ~Pass() {
      if (held_) gate_.Leave(alone_);
    }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    explicit operator bool() const { return held_; }

   private:
    RunGate& gate_;
    bool alone_;
    bool held_ = false;
  };

  // Runs inside now, side by side, and lone runs waiting (for tests and the status).
  int side_by_side() const {
    std::lock_guard lock(mu_);
    return side_by_side_;
  }
  int alone_waiting() const {
    std::lock_guard lock(mu_);
    return alone_waiting_;
  }

 private:
  bool Enter(bool alone, std::stop_token stop) {
    std::unique_lock lock(mu_);
    if (!alone) {
      if (!cv_.wait(lock, stop, [&] { return !alone_inside_ && alone_waiting_ == 0; })) {
        return false;
      }
      ++side_by_side_;
      return true;
    }
    ++alone_waiting_;
    const bool entered = cv_.wait(lock, stop, [&] { return !alone_inside_ && side_by_side_ == 0; });
    --alone_waiting_;
    if (entered) {
      alone_inside_ = true;
    } else {
      cv_.notify_all();  // side-by-side runs may have waited on this one alone
    }
    return entered;
  }
  void Leave(bool alone) {
    {
      std::lock_guard lock(mu_);
      if (alone) {
        alone_inside_ = false;
      } else {
        --side_by_side_;
      }
    }
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  int side_by_side_ = 0;       // guarded by mu_
  int alone_waiting_ = 0;      // guarded by mu_
  bool alone_inside_ = false;  // guarded by mu_
};

}  // namespace nbu
