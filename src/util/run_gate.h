// A gate some runs pass side by side and others pass alone: a reader-writer lock whose lone
// runs go first (one waiting closes the gate to new side-by-side runs, so a steady stream of
// them cannot keep it out), whose lone waits are bounded (a run inside that never ends must not
// hold every other run back for ever: past the limit the lone run goes in beside the others),
// and whose waits end at a stop.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace nbu {

class RunGate {
 public:
  // Held for one run, alone or side by side; nothing held when `stop` came first.
  class Pass {
   public:
    Pass(RunGate& gate, bool alone, std::stop_token stop, std::chrono::milliseconds alone_limit)
        : gate_(gate), held_(gate.Enter(alone, stop, alone_limit)) {}
    ~Pass() { gate_.Leave(held_); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    explicit operator bool() const { return held_ != Held::kNone; }
    bool alone() const { return held_ == Held::kAlone; }
    // A pass held alone goes on side by side, letting in the runs it held back.
    void Share() {
      if (held_ == Held::kAlone) {
        gate_.Share();
        held_ = Held::kSideBySide;
      }
    }

   private:
    friend class RunGate;
    enum class Held { kNone, kSideBySide, kAlone };
    RunGate& gate_;
    Held held_;
  };

  // Runs inside now, side by side, and lone runs waiting (for tests).
  int side_by_side() const {
    std::lock_guard lock(mu_);
    return side_by_side_;
  }
  int alone_waiting() const {
    std::lock_guard lock(mu_);
    return alone_waiting_;
  }

 private:
  using Held = Pass::Held;

  Held Enter(bool alone, std::stop_token stop, std::chrono::milliseconds alone_limit) {
    std::unique_lock lock(mu_);
    if (alone) {
      ++alone_waiting_;
      bool entered = false;
      // The limit is for side-by-side runs that may never end. Another lone run inside ends
      // with its first attempt: behind it the wait starts again, still alone (suspects that
      // come together must not go in beside the others for having waited on each other).
      do {
        entered = cv_.wait_until(lock, stop, std::chrono::steady_clock::now() + alone_limit,
                                 [&] { return !alone_inside_ && side_by_side_ == 0; });
      } while (!entered && !stop.stop_requested() && alone_inside_);
      --alone_waiting_;
      if (entered) {
        alone_inside_ = true;
        return Held::kAlone;
      }
      cv_.notify_all();  // side-by-side runs may have waited on this one alone
      if (stop.stop_requested()) return Held::kNone;
      // Past its limit it goes in beside the runs inside, not after other lone runs waiting:
      // those could keep coming for as long as a run inside never ends.
      if (!cv_.wait(lock, stop, [&] { return !alone_inside_; })) return Held::kNone;
      ++side_by_side_;
      return Held::kSideBySide;
    }
    if (!cv_.wait(lock, stop, [&] { return !alone_inside_ && alone_waiting_ == 0; })) {
      return Held::kNone;
    }
    ++side_by_side_;
    return Held::kSideBySide;
  }
  void Share() {
    {
      std::lock_guard lock(mu_);
      alone_inside_ = false;
      ++side_by_side_;
    }
    cv_.notify_all();
  }
  void Leave(Held held) {
    if (held == Held::kNone) return;
    {
      std::lock_guard lock(mu_);
      if (held == Held::kAlone) {
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
