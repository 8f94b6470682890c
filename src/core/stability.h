// Decides when a producer's file is complete: its size, mtime and inode are unchanged across two
// consecutive scans AND have been unchanged for at least the minimum age measured on this
// process's monotonic clock (never `now - mtime`: the NFS server's clock may differ).
#pragma once

#include "util/clock.h"
#include "util/fs.h"
#include "util/string_set.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nbu::core {

class StabilityTracker {
 public:
  explicit StabilityTracker(Duration min_age) : min_age_(min_age) {}

  // Starts a scan generation; files not observed (or skipped by SkipStat) until EndScan are
  // forgotten, except under what KeepUnseen() names.
  void BeginScan();
  // This scan could not see everything at `rel` (relative; "" is the whole session): a directory
  // whose listing failed or stopped part-way, or an entry that could not be stat-ed (a file, or a
  // directory as far as anyone can tell). EndScan keeps the entries of `rel` and of every name
  // under `rel/` that the scan did not list, as they are: a queued file stays queued (not queued
  // a second time once the listing works again), a pending one keeps its first-seen time. Only
  // their coming of age is left out of next_due: they are looked at when a scan lists them. An
  // entry kept for a file that did go meanwhile goes at the first scan that lists its directory.
  void KeepUnseen(std::string_view rel);
  // Records an observation; true when the file is ready to be queued. A file reported ready is
  // remembered as queued: it is not reported again until Forget() (after its claim) or until it
  // disappears from a scan.
  // `requeued`, when given, says whether a true answer is a Retry() of a file the caller queued
  // before (see Retry).
  bool Observe(const std::string& rel, const fs::FileStat& st, MonoTime now,
               bool* requeued = nullptr);
  // True (and the entry is kept alive for this scan) when stat-ing `rel` now cannot change the
  // outcome: it is queued, or it was seen and its minimum age has not run out yet. A file is then
  // stat-ed when first seen and again once its age is due: if (size, mtime, inode) are still
  // those of the first sight, it has been unchanged for the minimum age; if not, its clock
  // restarts. This keeps a scan of a large backlog to a directory listing. `changed`: the file was
  // reported closed or renamed in since the last scan (see ChangeHints); a pending one is then
  // stat-ed at once, so that a sight before its last bytes does not hold its clock back.
  bool SkipStat(const std::string& rel, MonoTime now, bool changed = false);
  // Oldest first-seen time among tracked files, queued or not (for the backlog-age gauge), and
  // the earliest time a file not yet queued comes of age (when the next scan should run to
  // queue it without waiting for the poll interval).
  // Also the files not yet queued (their minimum age not run out, or changed since), and the
  // first one's name.
  struct Summary {
    std::optional<MonoTime> oldest_pending;
    std::optional<MonoTime> next_due;
    size_t not_ready = 0;
    std::string not_ready_example;
  };
  // Drops entries not seen in the current generation (the file was claimed, moved or deleted)
  // but those KeepUnseen() names, and forgotten ones, and summarizes the rest.
  Summary EndScan();
  // Drops `rel` (called once its claim succeeded or failed, so a new file with the same name is
  // tracked from scratch). The entry itself goes at the next EndScan.
  void Forget(const std::string& rel);
  // `rel`, reported ready, could not be taken: its open or its claim failed (a permission, an
  // I/O error). It keeps its entry and first-seen time, so the backlog age shows it waiting, and
  // is not counted as not ready; the first scan at or after `due` stats it again and, while it is
  // unchanged, reports it ready again at once, so that the caller tries again (and counts each
  // failure). Scans before `due` skip it, as a queued file. `queued`: the caller had queued it
  // (its claim failed), not only found it ready (its open failed).
  void Retry(const std::string& rel, MonoTime due, bool queued);
  // The earliest due time after `after` of such a file that had been queued (a failed claim; a
  // failed open is looked at by every scan anyway).
  std::optional<MonoTime> NextRetry(MonoTime after) const;
  // Files tracked, counting forgotten ones until the next EndScan.
  size_t size() const { return entries_.size(); }
  // Names SkipStat matched with the last listing in order, without a table lookup (the fast path
  // of a steady-state scan), since construction.
  uint64_t skipped_in_listing_order() const { return in_order_; }

 private:
  struct Entry {
    fs::FileStat stat;
    MonoTime first_seen;  // first time this exact stat was observed
    uint32_t scans_equal = 0;
    uint64_t generation = 0;  // the last scan that listed it (see EndScan)
    bool queued = false;
  };
  using Node = std::unordered_map<std::string, Entry>::value_type;
  // One name of the last complete listing, with what SkipStat needs, kept in listing order. A
  // directory lists its unchanged names in the same order scan after scan, so a steady-state scan
  // compares each name with the next of these and reads them, and names_, front to back: no
  // table lookup, and no load of the table's entry (a cache miss per name on a large backlog).
  struct Listed {
    Node* node;
    MonoTime first_seen;
    uint64_t name_off;  // the name is names_[name_off, name_off + name_len)
    uint32_t name_len;
    bool queued;
  };
  // A name listed by the current scan, in order: `listed` is its index in order_ when SkipStat
  // took it from there (its entry untouched since), else kNotListed (read the entry). A name
  // listed twice in one scan (NFS readdir can repeat one while the directory changes) may leave
  // two records for a scan; both say what the entry said, or the older one sends the next scan
  // to the entry itself (a queued entry changes only after Forget, which SkipStat checks).
  struct Seen {
    Node* node;
    size_t listed;
  };
  static constexpr size_t kNotListed = SIZE_MAX;

  // The table's entry of `rel`, or null; moves the cursor past it when it is a little ahead.
  Node* Find(const std::string& rel);
  // Counts the entry as listed by this scan, read from the table.
  void MarkSeen(Node* n);
  bool Forgotten(std::string_view rel) const;
  // True when KeepUnseen() named `rel` or a directory above it.
  bool Kept(std::string_view rel) const;
  // True when SkipStat must not skip a tracked name: forgotten, or pending and old enough to be
  // checked or reported changed.
  bool MustStat(std::string_view rel, bool queued, MonoTime first_seen, MonoTime now,
                bool changed) const;

  Duration min_age_;
  uint64_t generation_ = 0;
  // Node pointers stay valid while other entries are inserted; entries are erased only in
  // EndScan, after the next order_ has been built from the live ones.
  std::unordered_map<std::string, Entry> entries_;
  std::vector<Listed> order_;
  std::string names_;
  std::vector<Listed> spare_order_;  // EndScan builds the next order_ and names_ in these
  std::string spare_names_;
  size_t cursor_ = 0;      // the position in order_ where the next name is expected
  uint64_t in_order_ = 0;  // see skipped_in_listing_order()
  bool scanning_ = false;  // between BeginScan and EndScan
  std::vector<Seen> seen_;
  // While the scan's names are exactly order_'s first cursor_ names, in order, with none looked
  // at (the steady state of a waiting backlog), seen_ is not written: it would repeat order_.
  // LeaveStep() writes it out at the first name that breaks step. A scan that ends in step
  // leaves order_, names_ and summary_ (the last complete scan's) as they are.
  bool in_step_ = false;
  void LeaveStep();
  Summary summary_;
  // Names Forget() took since the last EndScan (unless observed again since): their entries are
  // as if absent, and EndScan erases them.
  StringSet forgotten_;
  // What KeepUnseen() named in this scan; empty in a scan that saw everything.
  StringSet kept_;
  // Names Retry() took, with their due times, while their entries last (queued, and stat-ed by
  // every scan from their due time on).
  struct Retried {
    MonoTime due;
    bool queued;
  };
  std::unordered_map<std::string, Retried, StringViewHash, std::equal_to<>> retry_;
  bool RetryDue(std::string_view rel, MonoTime now) const;
};

}  // namespace nbu::core
