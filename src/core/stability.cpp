#include "core/stability.h"

#include <algorithm>
#include <cstring>

namespace nbu::core {

void StabilityTracker::BeginScan() {
  if (scanning_) {
    // The last scan stopped half-way: its entries are kept (unseen ones go at EndScan), but
    // some may have changed since order_ was built, so this scan reads every entry.
    order_.clear();
    names_.clear();
  }
  scanning_ = true;
  ++generation_;
  if (!kept_.empty()) kept_.clear();  // (clear() would wipe every bucket, even when empty)
  seen_.clear();
  cursor_ = 0;
  in_step_ = true;
}

void StabilityTracker::LeaveStep() {
  if (!in_step_) return;
  in_step_ = false;
  for (size_t i = 0; i < cursor_; ++i) seen_.push_back({order_[i].node, i});
}

StabilityTracker::Node* StabilityTracker::Find(const std::string& rel) {
  LeaveStep();  // before the cursor moves
  auto it = entries_.find(rel);
  if (it == entries_.end()) return nullptr;  // a new name: the cursor stays for the next one
  Node* n = &*it;
  // Names that left the listing since the last scan: carry on after this one.
  constexpr size_t kWindow = 64;
  const size_t end = std::min(order_.size(), cursor_ + kWindow);
  for (size_t i = cursor_; i < end; ++i) {
    if (order_[i].node == n) {
      cursor_ = i + 1;
      break;
    }
  }
  return n;
}

void StabilityTracker::MarkSeen(Node* n) {  // after Find, which left the step
  if (n->second.generation == generation_) return;
  n->second.generation = generation_;
  seen_.push_back({n, kNotListed});
}

bool StabilityTracker::Forgotten(std::string_view rel) const {
  return !forgotten_.empty() && forgotten_.find(rel) != forgotten_.end();
}

void StabilityTracker::KeepUnseen(std::string_view rel) { kept_.emplace(rel); }

bool StabilityTracker::Kept(std::string_view rel) const {
  if (kept_.empty()) return false;
  // `rel` itself, each directory above it, and "" (the whole session).
  for (std::string_view at = rel;;) {
    if (kept_.find(at) != kept_.end()) return true;
    if (at.empty()) return false;
    const size_t slash = at.rfind('/');
    at = at.substr(0, slash == std::string_view::npos ? 0 : slash);
  }
}

bool StabilityTracker::MustStat(std::string_view rel, bool queued, MonoTime first_seen,
                                MonoTime now, bool changed) const {
  return Forgotten(rel) || (!queued && (changed || now - first_seen >= min_age_)) ||
         RetryDue(rel, now);
}

bool StabilityTracker::RetryDue(std::string_view rel, MonoTime now) const {
  if (retry_.empty()) return false;
  const auto it = retry_.find(rel);
  return it != retry_.end() && now >= it->second.due;
}

bool StabilityTracker::Observe(const std::string& rel, const fs::FileStat& st, MonoTime now,
                               bool* requeued) {
  if (requeued != nullptr) *requeued = false;
  Node* n = Find(rel);
  bool fresh = n == nullptr;
  if (n == nullptr) {
    n = &*entries_.try_emplace(rel).first;
  } else if (Forgotten(rel)) {
    forgotten_.erase(rel);  // a new file under the name: tracked from scratch
    fresh = true;
  }
  Entry& e = n->second;
  const bool again = e.generation == generation_;  // listed twice by this scan: tried once
  MarkSeen(n);
  // Tried again once its time has come, while unchanged (once a scan); changed, it starts
  // afresh, and waits its minimum age again.
  const bool changed = fresh || !(e.stat == st);
  if (changed || (!again && RetryDue(rel, now))) {
    if (const auto r = retry_.find(rel); r != retry_.end()) {
      const bool queued_before = r->second.queued;
      retry_.erase(r);
      if (!changed) {  // queued all along
        if (requeued != nullptr) *requeued = queued_before;
        return true;
      }
    }
  }
  if (changed) {
    e.stat = st;
    e.first_seen = now;
    e.scans_equal = 0;
    e.queued = false;
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

bool StabilityTracker::SkipStat(const std::string& rel, MonoTime now, bool changed) {
  if (cursor_ < order_.size()) {
    const Listed& l = order_[cursor_];
    if (l.name_len == rel.size() &&
        std::memcmp(names_.data() + l.name_off, rel.data(), rel.size()) == 0) {
      const size_t at = cursor_;
      if (MustStat(rel, l.queued, l.first_seen, now, changed)) {
        LeaveStep();  // this one is looked at: Observe records it
        ++cursor_;
        return false;
      }
      ++cursor_;
      if (!in_step_) seen_.push_back({l.node, at});
      ++in_order_;
      return true;
    }
  }
  Node* n = Find(rel);
  if (n == nullptr) return false;
  const Entry& e = n->second;
  if (MustStat(rel, e.queued, e.first_seen, now, changed)) return false;
  MarkSeen(n);
  return true;
}

StabilityTracker::Summary StabilityTracker::EndScan() {
  if (in_step_ && cursor_ == order_.size() && entries_.size() == order_.size()) {
    // The listing was the last one, name for name, and none needed a look: every entry is as
    // order_ has it, so order_, names_ and the summary stay as they are. (A name forgotten
    // before the scan was looked at, or left a gap; one forgotten after it was skipped stays in
    // forgotten_ for the next scan to look at. The table is larger than order_ after a scan
    // that stopped half-way, which left order_ empty.)
    cursor_ = 0;
    scanning_ = false;
    return summary_;
  }
  LeaveStep();
  Summary out;
  // Built in the buffers of the scan before last: memory this process already touched, where a
  // fresh allocation of a large backlog's listing costs a page fault per page (and on a VM whose
  // balloon takes freed pages back, a fault in the host too).
  std::vector<Listed>& order = spare_order_;
  std::string& names = spare_names_;
  order.clear();
  names.clear();
  order.reserve(seen_.size());
  names.reserve(names_.size());
  for (const Seen& s : seen_) {
    Listed l;
    std::string_view name;
    if (s.listed != kNotListed) {
      l = order_[s.listed];  // skipped from the listing: its entry is as it was then
      name = std::string_view(names_.data() + l.name_off, l.name_len);
    } else {
      const Entry& e = s.node->second;
      name = s.node->first;
      l = Listed{s.node, e.first_seen, 0, static_cast<uint32_t>(name.size()), e.queued};
    }
    if (Forgotten(name)) continue;  // goes below
    l.name_off = names.size();
    names.append(name);
    order.push_back(l);
    if (!out.oldest_pending || l.first_seen < *out.oldest_pending)
      out.oldest_pending = l.first_seen;
    if (!l.queued && (!out.next_due || l.first_seen + min_age_ < *out.next_due)) {
      out.next_due = l.first_seen + min_age_;
    }
    if (!l.queued && out.not_ready++ == 0) out.not_ready_example.assign(name);
  }
  // Entries not listed by this scan (claimed, moved or deleted) and forgotten ones go. In the
  // steady state there are none, and neither the table nor the skipped names' entries are read.
  // (A name NFS listed twice can make the sizes agree although one is gone: forgotten names go
  // in any case, or one claimed and written again would be taken as queued for good.)
  // Unlisted ones that KeepUnseen() named stay out of order_: the next scan finds them in the
  // table, and its EndScan takes this path again.
  if (order.size() != entries_.size()) {
    for (const Seen& s : seen_) s.node->second.generation = generation_;
    std::erase_if(entries_, [&](const Node& n) {
      if (n.second.generation == generation_) return false;
      if (!Kept(n.first)) return true;
      if (Forgotten(n.first)) return false;
      if (!out.oldest_pending || n.second.first_seen < *out.oldest_pending) {
        out.oldest_pending = n.second.first_seen;  // still not claimed
      }
      if (!n.second.queued && out.not_ready++ == 0) out.not_ready_example = n.first;
      return false;
    });
  }
  for (const std::string& rel : forgotten_) entries_.erase(rel);
  std::erase_if(retry_, [&](const auto& r) { return !entries_.contains(r.first); });
  order_.swap(order);
  names_.swap(names);
  seen_.clear();
  forgotten_.clear();
  cursor_ = 0;
  scanning_ = false;
  summary_ = out;
  return out;
}

void StabilityTracker::Forget(const std::string& rel) {
  if (entries_.contains(rel)) forgotten_.insert(rel);
}

std::optional<MonoTime> StabilityTracker::NextRetry(MonoTime after) const {
  std::optional<MonoTime> next;
  for (const auto& [rel, r] : retry_) {
    if (r.queued && r.due > after && (!next || r.due < *next)) next = r.due;
  }
  return next;
}

void StabilityTracker::Retry(const std::string& rel, MonoTime due, bool queued) {
  if (entries_.contains(rel)) retry_[rel] = {due, queued};
}

}  // namespace nbu::core
