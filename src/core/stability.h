// Decides when a producer's file is complete: its size, mtime and inode are unchanged across two
// consecutive scans AND have been unchanged for at least the minimum age measured on this
// process's monotonic clock (never `now - mtime`: the NFS server's clock may differ).
#pragma once

#include "util/clock.h"
#include "util/fs.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace nbu::core {

class StabilityTracker {
 public:
  explicit StabilityTracker(Duration min_age) : min_age_(min_age) {}

  // Starts a scan generation; files not observed (or skipped by SkipStat) until EndScan are
  // forgotten.
  void BeginScan();
  // Records an observation; true when the file is ready to be queued. A file reported ready is
  // remembered as queued: it is not reported again until Forget() (after its claim) or until it
  // disappears from a scan.
  bool Observe(const std::string& rel, const fs::FileStat& st, MonoTime now);
  // True (and the entry is kept alive for this scan) when stat-ing `rel` now cannot change the
  // outcome: it is queued, or it was seen and its minimum age has not run out yet. A file is then
  // stat-ed when first seen and again once its age is due: if (size, mtime, inode) are still
  // those of the first sight, it has been unchanged for the minimum age; if not, its clock
  // restarts. This keeps a scan of a large backlog to a directory listing.
  bool SkipStat(const std::string& rel, MonoTime now);
  // Oldest first-seen time among tracked files, queued or not (for the backlog-age gauge), and
  // the earliest time a file not yet queued comes of age (when the next scan should run to
  // queue it without waiting for the poll interval).
  struct Summary {
    std::optional<MonoTime> oldest_pending;
    std::optional<MonoTime> next_due;
  };
  // Drops entries not seen in the current generation (the file was claimed, moved or deleted)
  // and summarizes the rest, in one pass.
  Summary EndScan();
  // Drops `rel` (called once its claim succeeded or failed, so a new file with the same name is
  // tracked from scratch). The entry itself goes at the next EndScan.
  void Forget(const std::string& rel);
  // Files tracked, counting forgotten ones until the next EndScan.
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    fs::FileStat stat;
    MonoTime first_seen;  // first time this exact stat was observed
    uint32_t scans_equal = 0;
    uint64_t generation = 0;
    size_t pos = SIZE_MAX;  // index in order_, when it was listed by the last complete scan
    bool queued = false;
    bool forgotten = false;  // by Forget(): as if absent; erased at EndScan
  };
  using Node = std::unordered_map<std::string, Entry>::value_type;
  // The entry of `rel`, or null. A directory lists its unchanged names in the same order scan
  // after scan, so the name expected next (order_[cursor_]) is compared first: a steady-state scan
  // walks memory in order instead of taking the hash table's dependent cache misses per name.
  Node* Find(const std::string& rel);
  // Counts the entry as listed by this scan.
  void MarkSeen(Node* n);

  Duration min_age_;
  uint64_t generation_ = 0;
  // Node pointers stay valid while other entries are inserted; entries are erased only in
  // EndScan, which rebuilds order_ and empties seen_ first.
  std::unordered_map<std::string, Entry> entries_;
  std::vector<Node*> order_;  // the last complete scan's entries, in listing order
  std::vector<Node*> seen_;   // this scan's entries so far, in listing order
  size_t cursor_ = 0;
};

}  // namespace nbu::core
