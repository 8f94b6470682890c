// A gate some runs pass side by side and others pass alone: a reader-writer lock whose lone
// runs go first (one waiting closes the gate to new side-by-side runs, so a steady stream of
// them cannot keep it out), whose lone waits and lone holds are bounded (a run inside that never
// ends must not hold every other run back for ever, nor a lone run that goes on for hours: past
// the limit the one goes in beside the others, the other has them beside it), and whose waits
// end at a stop or when the gate closes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stop_token>

namespace nbu {

class RunGate {
 public:
  // Held for one run, alone or side by side; nothing held when it would wait and `stop` or
  // Close() came first.
  // `limit` bounds a lone run's wait behind side-by-side runs, and how long it stays alone.
  class Pass {
   public:
    Pass(RunGate& gate, bool alone, std::stop_token stop, std::chrono::milliseconds limit)
        : gate_(gate), held_(gate.Enter(alone, stop, limit)) {}
    ~Pass() { gate_.Leave(held_); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    explicit operator bool() const { return held_ != Held::kNone; }
    // Entered alone (it may have had company since, past its limit).
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

  // Ends every wait, now and to come, with nothing held: a service that is stopping begins no
  // run that would have to wait. The runs inside go on.
  void Close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      ++version_;
    }
    cv_.notify_all();
  }

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
  using Clock = std::chrono::steady_clock;

  Held Enter(bool alone, std::stop_token stop, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    if (alone) ++alone_waiting_;
    // A lone run's wait is bounded for side-by-side runs that may never end. Behind another lone
    // run (a suspect's first attempt) it starts again when that one ends or shares, and stays
    // alone: suspects that come together must not go in beside the others for having waited on
    // each other.
    Clock::time_point deadline = Clock::now() + limit;
    uint64_t lone_ends_seen = lone_ends_;
    for (bool waited = false;; waited = true) {
      // A run the gate lets in at once goes in, even at a stop (the caller's to heed); one that
      // waits, or would, ends at a stop or when the gate closes.
      if (waited && (closed_ || stop.stop_requested())) {
        if (alone) --alone_waiting_;
        Changed();  // side-by-side runs may have waited on this one alone
        return Held::kNone;
      }
      const Clock::time_point now = Clock::now();
      ExpireLoneHold(now);
      if (alone) {
        if (!alone_inside_ && side_by_side_ == 0) {
          --alone_waiting_;
          alone_inside_ = true;
          alone_until_ = now + limit;
          Changed();
          return Held::kAlone;
        }
        if (alone_inside_ || lone_ends_ != lone_ends_seen) {
          lone_ends_seen = lone_ends_;
          deadline = now + limit;
        } else if (now >= deadline) {
          // Past its limit it goes in beside the runs inside, not after other lone runs waiting:
          // those could keep coming for as long as a run inside never ends.
          --alone_waiting_;
          ++side_by_side_;
          Changed();
          return Held::kSideBySide;
        }
      } else if (!alone_inside_ && alone_waiting_ == 0) {
        ++side_by_side_;
        return Held::kSideBySide;
      }
      if (closed_ || stop.stop_requested()) continue;  // ends it, as above
      // Until anything changes, or the time comes for the lone hold inside to end, or else for
      // this lone wait's limit.
      const uint64_t seen = version_;
      const auto changed = [&] { return version_ != seen; };
      if (alone_inside_) {
        // A copy: the wait reads its time with mu_ released, while the next lone run sets it.
        const Clock::time_point hold_ends = alone_until_;
        cv_.wait_until(lock, stop, hold_ends, changed);
      } else if (alone) {
        cv_.wait_until(lock, stop, deadline, changed);
      } else {
        cv_.wait(lock, stop, changed);
      }
    }
  }
  // A lone run alone for longer than its limit has the others beside it from then on, counted as
  // side by side (its Share or Leave settles that count). Lone runs waiting behind it wait their
  // limit once more, for it to end (their lone turn), before they too go in beside it: side-by-side
  // runs, which wait for them, are held two limits at most for each lone run (a suspect per
  // worker, after a crash, at most: a parked worker takes no other).
  void ExpireLoneHold(Clock::time_point now) {
    if (!alone_inside_ || now < alone_until_) return;
    alone_inside_ = false;
    lone_expired_ = true;
    ++side_by_side_;
    ++lone_ends_;
    Changed();
  }
  void Share() {
    {
      std::lock_guard lock(mu_);
      if (lone_expired_) {
        lone_expired_ = false;  // counted side by side already
      } else {
        alone_inside_ = false;
        ++side_by_side_;
        ++lone_ends_;
      }
      ++version_;
    }
    cv_.notify_all();
  }
  void Leave(Held held) {
    if (held == Held::kNone) return;
    {
      std::lock_guard lock(mu_);
      if (held == Held::kSideBySide) {
        --side_by_side_;
      } else if (lone_expired_) {
        lone_expired_ = false;
        --side_by_side_;
      } else {
        alone_inside_ = false;
        ++lone_ends_;
      }
      ++version_;
    }
    cv_.notify_all();
  }
  // With mu_ held: wakes every waiter to look again.
  void Changed() {
    ++version_;
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  int side_by_side_ = 0;       // guarded by mu_
  int alone_waiting_ = 0;      // guarded by mu_
  bool alone_inside_ = false;  // guarded by mu_
  // The one lone pass held, past its limit, counts in side_by_side_ (there is at most one lone
  // pass: another enters only once side_by_side_ is 0).
  bool lone_expired_ = false;      // guarded by mu_
  Clock::time_point alone_until_;  // guarded by mu_: when the lone run inside has company
  uint64_t lone_ends_ = 0;         // guarded by mu_: lone runs ended, shared or expired
  uint64_t version_ = 0;           // guarded by mu_: every change waiters look for
  bool closed_ = false;            // guarded by mu_
};

}  // namespace nbu
