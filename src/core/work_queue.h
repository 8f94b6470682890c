// A bounded blocking queue: Push waits while full (backpressure: nothing is dropped), Pop waits
// while empty; both give up when their stop token fires or the queue is closed. A Push that found
// the queue full resumes only once it has drained to half: with a backlog larger than the queue,
// the scanner then refills it in bursts instead of waking, and contending for the lock, once for
// every item a worker takes.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <stop_token>

namespace nbu::core {

template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity), refill_at_(capacity / 2) {}

  // False when stopped or closed before there was room (the item was not queued).
  bool Push(T item, std::stop_token stop) {
    std::unique_lock lock(mu_);
    if (items_.size() >= capacity_) {
      ++pushes_waiting_;
      const bool room =
          not_full_.wait(lock, stop, [&] { return closed_ || items_.size() <= refill_at_; });
      --pushes_waiting_;
      if (!room) return false;
    }
    if (closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  // Queues the item only if there is room now: never waits. False when full or closed.
  bool TryPush(T item) {
    std::lock_guard lock(mu_);
    if (closed_ || items_.size() >= capacity_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }

  // Empty optional when stopped, or closed and drained.
  std::optional<T> Pop(std::stop_token stop) {
    std::unique_lock lock(mu_);
    if (!not_empty_.wait(lock, stop, [&] { return closed_ || !items_.empty(); })) {
      return std::nullopt;
    }
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    if (items_.size() == refill_at_) not_full_.notify_all();  // the only way down to it
    return item;
  }

  // No more pushes; pops drain what is left, then return empty.
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

  // Removes every queued item (their files stay where they are) and returns them.
  std::deque<T> Clear() {
    std::lock_guard lock(mu_);
    std::deque<T> dropped;
    dropped.swap(items_);
    not_full_.notify_all();
    return dropped;
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }
  size_t pushes_waiting() const {  // Pushes that found the queue full and wait for room now
    std::lock_guard lock(mu_);
    return pushes_waiting_;
  }
  // Whether pushes are held up: the queue is at its bound, or a push still waits for it to drain
  // to half.
  bool HoldsPushes() const {
    std::lock_guard lock(mu_);
    return items_.size() >= capacity_ || pushes_waiting_ > 0;
  }

 private:
  const size_t capacity_;
  const size_t refill_at_;  // a full queue takes pushes again at this size
  mutable std::mutex mu_;
  std::condition_variable_any not_full_;
  std::condition_variable_any not_empty_;
  std::deque<T> items_;        // guarded by mu_
  size_t pushes_waiting_ = 0;  // guarded by mu_
  bool closed_ = false;        // guarded by mu_
};

}  // namespace nbu::core
