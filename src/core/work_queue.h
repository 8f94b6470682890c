// A bounded blocking queue: Push waits while full (backpressure: nothing is dropped), Pop waits
// while empty; both give up when their stop token fires or the queue is closed.
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
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}

  // False when stopped or closed before there was room (the item was not queued).
  bool Push(T item, std::stop_token stop) {
    std::unique_lock lock(mu_);
    if (!not_full_.wait(lock, stop, [&] { return closed_ || items_.size() < capacity_; }) ||
        closed_) {
      return false;
    }
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
    not_full_.notify_one();
    return item;
  }

  // No more pushes; pops drain what is left, then return empty.
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

  // Removes every queued item (their files stay where they are) and returns how many.
  size_t Clear() {
    std::lock_guard lock(mu_);
    const size_t n = items_.size();
    items_.clear();
    not_full_.notify_all();
    return n;
  }

  size_t size() const {
    std::lock_guard lock(mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable_any not_full_;
  std::condition_variable_any not_empty_;
  std::deque<T> items_;  // guarded by mu_
  bool closed_ = false;  // guarded by mu_
};

}  // namespace nbu::core
