#include "core/stability.h"

namespace nbu::core {

void StabilityTracker::BeginScan() {
  ++generation_;
  seen_.clear();  // what a stopped scan left (its entries are kept; unseen ones go at EndScan)
  cursor_ = 0;
}

StabilityTracker::Node* StabilityTracker::Find(const std::string& rel) {
  if (cursor_ < order_.size() && order_[cursor_]->first == rel) return order_[cursor_++];
  auto it = entries_.find(rel);
  if (it == entries_.end()) return nullptr;
  Node* n = &*it;
  // Listed out of the expected order (names came or went before it): carry on after it.
  const size_t pos = n->second.pos;
  if (pos < order_.size() && order_[pos] == n) cursor_ = pos + 1;
  return n;
}

void StabilityTracker::MarkSeen(Node* n) {
  if (n->second.generation == generation_) return;
  n->second.generation = generation_;
  seen_.push_back(n);
}

bool StabilityTracker::Observe(const std::string& rel, const fs::FileStat& st, MonoTime now) {
  Node* n = Find(rel);
  const bool fresh = n == nullptr || n->second.forgotten;
  if (n == nullptr) n = &*entries_.try_emplace(rel).first;
  Entry& e = n->second;
  MarkSeen(n);
  if (fresh || !(e.stat == st)) {
    e.stat = st;
    e.first_seen = now;
    e.scans_equal = 0;
    e.queued = false;
    e.forgotten = false;
    return false;
  }
  if (e.queued) return false;
  ++e.scans_equal;
  if (e.scans_equal >= 1 && now - e.first_seen >= min_age_) {
    e.queued = true;
    return true;
  }
  return false;
}

bool StabilityTracker::SkipStat(const std::string& rel, MonoTime now) {
  Node* n = Find(rel);
  if (n == nullptr) return false;
  const Entry& e = n->second;
  if (e.forgotten || (!e.queued && now - e.first_seen >= min_age_)) return false;
  MarkSeen(n);
  return true;
}

StabilityTracker::Summary StabilityTracker::EndScan() {
  Summary out;
  std::vector<Node*> order;
  order.reserve(seen_.size());
  for (Node* n : seen_) {
    Entry& e = n->second;
    if (e.forgotten) continue;
    e.pos = order.size();
    order.push_back(n);
    if (!out.oldest_pending || e.first_seen < *out.oldest_pending)
      out.oldest_pending = e.first_seen;
    if (!e.queued && (!out.next_due || e.first_seen + min_age_ < *out.next_due)) {
      out.next_due = e.first_seen + min_age_;
    }
  }
  // Entries not listed by this scan (claimed, moved or deleted) and forgotten ones go; in the
  // steady state there are none and the table is not walked.
  if (order.size() != entries_.size()) {
    std::erase_if(entries_, [&](const Node& n) {
      return n.second.generation != generation_ || n.second.forgotten;
    });
  }
  order_ = std::move(order);
  seen_.clear();
  cursor_ = 0;
  return out;
}

void StabilityTracker::Forget(const std::string& rel) {
  if (auto it = entries_.find(rel); it != entries_.end()) it->second.forgotten = true;
}

}  // namespace nbu::core
