// Polls <incoming>/<session>/ recursively and queues each file once it is complete (see
// StabilityTracker). Files already queued are not stat-ed again; dot-files (rsync temps, NFS
// silly-renames), symlinks, ignore patterns and extension filters are skipped (and counted, see
// Stats). A full queue makes the scan wait: nothing is dropped or queued twice.
#pragma once

#include "core/change_hints.h"
#include "core/config.h"
#include "core/instruments.h"
#include "core/stability.h"
#include "core/work_item.h"
#include "core/work_queue.h"
#include "util/clock.h"

#include <dirent.h>
#include <sys/stat.h>

#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace nbu::core {

class Scanner {
 public:
  // `hints` (optional): every directory a scan lists is watched there.
  Scanner(const Config& config, Clock& clock, BoundedQueue<WorkItem>& queue, Instruments& inst,
          ChangeHints* hints = nullptr);

  // One pass over the session directory. Called from one thread (the scan loop).
  struct Stats {
    size_t files_seen = 0;
    size_t stats = 0;  // stat calls made
    size_t queued = 0;
    // Entries neither a file nor a directory (symlinks, FIFOs, sockets, devices): never uploaded,
    // and a symlink is never followed out of incoming. The first one's relative path.
    size_t not_regular = 0;
    std::string not_regular_example;
    // Entries this process cannot stat, files ready by stat that it cannot open, and directories
    // it cannot list, or list only part-way (a permission, an I/O error, a stale handle, a path
    // longer than PATH_MAX): left in incoming and looked at again; what was tracked there keeps
    // its state (see StabilityTracker::KeepUnseen). The first one's relative path (a directory's
    // ends in '/') and error, or the first directory's: the names it holds may be many, and
    // unseen. A name gone between its listing and its stat is not counted.
    size_t unreadable = 0;
    std::string unreadable_example;
    bool unreadable_example_is_dir = false;
    // Files the filters skip (Accepts: dot-files, ignore patterns, extension filter): never
    // uploaded, and not a fault (rsync temporaries and NFS silly-renames are expected). Counted
    // when listed as a file, or without a type (DT_UNKNOWN): such a dot-entry is not stat-ed to
    // tell, so on a file system that lists no types a dot-directory counts too; a filtered name
    // without a type is stat-ed anyway, and counts only when it is a regular file. The first
    // one's relative path.
    size_t ignored = 0;
    std::string ignored_example;
    // Files seen and not queued yet: younger than the minimum age, or changed since first seen
    // (see StabilityTracker::Summary). The first one's relative path.
    size_t not_ready = 0;
    std::string not_ready_example;
    double wall_s = 0;  // this scan's duration
    double cpu_s = 0;   // CPU time of the scanning thread during it
  };
  Stats ScanOnce(const std::string& session, std::stop_token stop);
  // What the incoming directory holds beside `session`'s directory, which no scan looks at: its
  // files at the top, and the directories other than the session's that hold a file at any
  // depth (another session's, a misspelt one) or cannot be read, as the filters take names; not
  // links, special files, other mounts or empty directories (a finished session's). `example`
  // names the first one (a directory's with a trailing '/'). `unchecked`: directories not looked
  // through, the look's 20,000 entries spent (or past 64 levels). Nothing when the incoming
  // directory cannot be listed.
  struct Outside {
    size_t count = 0;
    std::string example;
    size_t unchecked = 0;
  };
  // Thread-safe beside ScanOnce (it reads only the configuration, as Accepts and SkipsDotName
  // do). A stop ends it early: directories it then cuts short count as unchecked, and the
  // rest of the top level is not looked at.
  Outside LookOutside(const std::string& session, std::stop_token stop = {}) const;
  // Thread-safe: forget `rel` of `session` (its claim settled). Applied at the next scan.
  // `held`: its claim failed and it stays in incoming (a permission, an I/O error): it keeps its
  // first sight, so the backlog age grows while it waits, and is queued again while unchanged,
  // rather than waiting a minimum age again as a new file: by the first scan a poll interval or
  // more after the failure (not by every scan a change hint brings, each a claim on the file
  // server), and not counted as discovered again.
  void Forget(const std::string& session, const std::string& rel, bool held = false);
  // Drops all tracking (the session changed).
  void Reset();
  // No session is watched: nothing is pending any more (the oldest pending file's age reads 0
  // instead of growing until the next watch, and no file's coming of age wakes the scan loop).
  // Scan thread only.
  void Idle();
  // Age of the oldest file seen but not yet claimed, on the monotonic clock (0 when none).
  double OldestPendingAgeS() const;
  // When the next file seen but not yet queued comes of age, or one whose claim failed is due to
  // be tried again, as of the last scan (none: no such file). Scan thread only.
  std::optional<MonoTime> NextDue() const { return next_due_; }
  // True when `name` passes the extension filter and ignore patterns (dot-files only with
  // APP_INCLUDE_DOT_FILES, and NFS silly renames never).
  bool Accepts(std::string_view name) const;
  // A dot-name the scan skips, a directory with all below it: every one, or with
  // APP_INCLUDE_DOT_FILES only NFS silly renames and snapshot directories.
  bool SkipsDotName(std::string_view name) const;
  // For tests: read every listed entry's type as DT_UNKNOWN, as some NFS servers and file
  // systems list them, so that each type comes from stat.
  void SetEntryTypesUnknownForTest(bool unknown) { entry_types_unknown_ = unknown; }
  // For tests: `fail(call, rel)` returns an errno that the call then fails with, unmade, as on an
  // NFS server (0: it is made). `call` is "open" for the directory `rel` ("" is the session's),
  // "stat" for the entry `rel`, "open-file" for the file `rel` found ready, and "readdir" for the
  // one that was to return the entry `rel`.
  using FailForTest = std::function<int(std::string_view call, const std::string& rel)>;
  void SetFailForTest(FailForTest fail) { fail_for_test_ = std::move(fail); }

 private:
  // What a look beside the session may still spend: entries, until its stop.
  struct LookBudget {
    size_t entries;
    std::stop_token stop;
    bool Spent() const { return entries == 0 || stop.stop_requested(); }
  };
  // Whether the directory open at `fd` (closed here) holds a file a scan would take, on the file
  // system `dev`: yes (or it could not be read), no, or not looked through (past `depth` levels,
  // or `*budget` spent).
  enum class Holds { kNo, kYes, kUnchecked };
  Holds HoldsWork(int fd, dev_t dev, int depth, LookBudget* budget) const;
  // The same for one listed entry of the directory `dfd`: a file the filters take, or a
  // directory (`*is_dir`) searched as HoldsWork does; links, special files and other mounts: no.
  Holds EntryHolds(int dfd, const dirent& e, dev_t dev, int depth, LookBudget* budget,
                   bool* is_dir) const;
  static constexpr size_t kOutsideLookEntries = 20000;
  static constexpr int kOutsideLookDepth = 64;
  // `session_fd`: the session directory's descriptor (-1 when `rel_dir` is the session's own).
  void ScanDir(const std::string& session, const std::string& rel_dir, int session_fd,
               std::stop_token stop, Stats* stats);
  // fstatat of `name` (`rel`) in `dfd`, not following a symlink; false with errno set on failure.
  bool StatEntry(int dfd, const char* name, const std::string& rel, struct stat* st) const;
  // A failed stat of `rel` (not ENOENT: the name did not just go) is counted and keeps its state.
  void StatFailed(const std::string& rel, int err, Stats* stats);
  // The queue is full, so the scan is about to wait for the workers: a warning, once a minute at
  // most while that goes on (a backlog larger than the queue fills it at every refill).
  void QueueFull(const std::string& session, MonoTime now);

  const Config& config_;
  Clock& clock_;
  BoundedQueue<WorkItem>& queue_;
  Instruments& inst_;
  ChangeHints* const hints_;
  bool entry_types_unknown_ = false;
  FailForTest fail_for_test_;
  ChangeHints::ChangedFiles changed_;  // scan thread only: reported since the scan before
  std::string session_;                // scan thread only
  StabilityTracker tracker_;           // scan thread only
  mutable std::mutex mu_;
  struct Forgotten {
    std::string session, rel;
    bool held;
    MonoTime at;  // when it was reported
  };
  std::vector<Forgotten> forgotten_;           // guarded by mu_
  std::optional<MonoTime> oldest_pending_;     // guarded by mu_
  std::optional<MonoTime> next_due_;           // scan thread only
  std::optional<MonoTime> queue_full_logged_;  // scan thread only
};

}  // namespace nbu::core
