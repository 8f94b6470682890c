#include "core/stability.h"

namespace nbu::core {

bool StabilityTracker::Observe(const std::string& rel, const fs::FileStat& st, MonoTime now) {
  auto [it, inserted] = entries_.try_emplace(rel);
  Entry& e = it->second;
  e.generation = generation_;
  if (inserted || !(e.stat == st)) {
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

bool StabilityTracker::SkipStat(const std::string& rel, MonoTime now) {
  auto it = entries_.find(rel);
  if (it == entries_.end()) return false;
  Entry& e = it->second;
  if (!e.queued && now - e.first_seen >= min_age_) return false;
  e.generation = generation_;
  return true;
}

StabilityTracker::Summary StabilityTracker::EndScan() {
  Summary out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& e = it->second;
    if (e.generation != generation_) {
      it = entries_.erase(it);
      continue;
    }
    if (!out.oldest_pending || e.first_seen < *out.oldest_pending)
      out.oldest_pending = e.first_seen;
    if (!e.queued && (!out.next_due || e.first_seen + min_age_ < *out.next_due)) {
      out.next_due = e.first_seen + min_age_;
    }
    ++it;
  }
  return out;
}

void StabilityTracker::Forget(const std::string& rel) { entries_.erase(rel); }

}  // namespace nbu::core
