#include "core/scanner.h"

#include "util/fs.h"
#include "util/log.h"
#include "util/text.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>

namespace nbu::core {
namespace {

double ThreadCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void NotRegular(const std::string& rel, Scanner::Stats* stats) {
  if (stats->not_regular++ == 0) stats->not_regular_example = rel;
}

// A file the filters skip, `name` in `rel_dir`. Its path is built for the first one only: no
// allocation per skipped name.
void Ignored(const std::string& rel_dir, std::string_view name, Scanner::Stats* stats) {
  if (stats->ignored++ != 0) return;
  stats->ignored_example.assign(rel_dir);
  if (!rel_dir.empty()) stats->ignored_example.push_back('/');
  stats->ignored_example.append(name);
}

// Counts `rel` (a directory's ends in '/') as unreadable; the first one is the example, or the
// first directory (see Stats::unreadable_example).
void Unreadable(const std::string& rel, const char* call, int err, Scanner::Stats* stats) {
  const bool dir = rel.ends_with('/');
  if (stats->unreadable++ == 0 || (dir && !stats->unreadable_example_is_dir)) {
    stats->unreadable_example = rel + ": " + ErrnoStatus(call, err).ToString();
    stats->unreadable_example_is_dir = dir;
  }
}

// A directory's relative path as the unreadable example names it.
std::string DirName(const std::string& rel_dir) { return (rel_dir.empty() ? "." : rel_dir) + "/"; }

// The directory `rel_dir` below the directory open as `session_fd` (the session directory, or
// incoming for the session directory itself), with no part of `rel_dir` followed if it is a
// symlink (ELOOP): a directory swapped for one since it was listed (`a` of `a/b`) would lead out
// of incoming. Nor if it is another mount (EXDEV: an NFSv4
// crossmnt export, an automount, a bind mount): no claim's rename could leave it. Where openat2
// is missing (Linux before 5.6) or filtered (a container's seccomp profile), by `path`, whose
// last part only is not followed.
int OpenBelow(int session_fd, const std::string& rel_dir, const std::string& path) {
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_NO_XDEV;
  const long fd = ::syscall(SYS_openat2, session_fd, rel_dir.c_str(), &how, sizeof how);
  if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return static_cast<int>(fd);
  return ::open(path.c_str(), static_cast<int>(how.flags));
}

}  // namespace

Scanner::Scanner(const Config& config, Clock& clock, BoundedQueue<WorkItem>& queue,
                 Instruments& inst, ChangeHints* hints)
    : config_(config),
      clock_(clock),
      queue_(queue),
      inst_(inst),
      hints_(hints),
      tracker_(FromSeconds(config.min_file_age_s)) {}

bool Scanner::SkipsDotName(std::string_view name) const {
  return IsHiddenName(name) &&
         (!config_.include_dot_files || IsNfsSillyName(name) || IsSnapshotDirName(name));
}

Scanner::Holds Scanner::EntryHolds(int dfd, const dirent& e, dev_t dev, int depth,
                                   LookBudget* budget, bool* is_dir) const {
  *is_dir = false;
  const std::string_view name(e.d_name);
  if (e.d_type == DT_REG) return Accepts(name) ? Holds::kYes : Holds::kNo;
  if (e.d_type != DT_DIR && e.d_type != DT_UNKNOWN) return Holds::kNo;  // links, special files
  struct stat st {};
  if (::fstatat(dfd, e.d_name, &st, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT) != 0) {
    return Holds::kNo;  // gone since the listing
  }
  if (S_ISREG(st.st_mode)) return Accepts(name) ? Holds::kYes : Holds::kNo;
  if (!S_ISDIR(st.st_mode) || st.st_dev != dev) return Holds::kNo;  // not another mount
  *is_dir = true;
  const int fd = ::openat(dfd, e.d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? Holds::kNo : Holds::kYes;  // unreadable: counted
  return HoldsWork(fd, dev, depth, budget);
}

Scanner::Holds Scanner::HoldsWork(int fd, dev_t dev, int depth, LookBudget* budget) const {
  // An automount point reports its parent's device until the open mounts it.
  if (struct stat self{}; ::fstat(fd, &self) == 0 && self.st_dev != dev) {
    ::close(fd);
    return Holds::kNo;
  }
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return Holds::kYes;  // cannot be read: counted rather than missed
  }
  Holds holds = Holds::kNo;
  while (holds == Holds::kNo) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) holds = Holds::kYes;  // a listing that failed part-way: counted
      break;
    }
    const std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    if (budget->Spent() || depth == 0) {
      holds = Holds::kUnchecked;
      break;
    }
    --budget->entries;
    if (SkipsDotName(name)) continue;
    bool is_dir = false;
    holds = EntryHolds(::dirfd(d), *e, dev, depth - 1, budget, &is_dir);
  }
  ::closedir(d);
  return holds;
}

Scanner::Outside Scanner::LookOutside(const std::string& session, std::stop_token stop) const {
  Outside out;
  auto root = fs::OpenDir(config_.incoming_dir);
  if (!root.ok()) return out;
  struct stat root_st {};
  DIR* d = ::fstat(root->get(), &root_st) == 0 ? ::fdopendir(root->get()) : nullptr;
  if (d == nullptr) return out;
  root->release();  // closedir closes it
  // One budget for the whole look, once a minute: a finished session keeps its (empty) tree,
  // which may hold thousands of directories (a Zarr store's chunk tree). Only a file counts,
  // and the search of a directory stops at its first.
  LookBudget budget{kOutsideLookEntries, std::move(stop)};
  while (const dirent* e = ::readdir(d)) {
    if (budget.stop.stop_requested()) break;
    const std::string_view name(e->d_name);
    // The replicas' start-up probes (config.cpp, CheckVolume) live here too.
    if (name == session || name == "." || name == ".." || SkipsDotName(name) ||
        name.starts_with(".nbu-probe-")) {
      continue;
    }
    bool is_dir = false;
    const Holds holds =
        EntryHolds(::dirfd(d), *e, root_st.st_dev, kOutsideLookDepth, &budget, &is_dir);
    if (holds == Holds::kUnchecked) {
      ++out.unchecked;
    } else if (holds == Holds::kYes && out.count++ == 0) {
      out.example = std::string(name) + (is_dir ? "/" : "");
    }
  }
  ::closedir(d);
  return out;
}

bool Scanner::Accepts(std::string_view name) const {
  if (SkipsDotName(name)) return false;
  if (!config_.ignore_patterns.empty()) {
    const std::string n(name);
    for (const auto& p : config_.ignore_patterns) {
      if (GlobMatch(p, n)) return false;
    }
  }
  if (config_.file_extensions.empty()) return true;
  const std::string lower = LowerAscii(name);
  for (const auto& ext : config_.file_extensions) {
    if (lower.size() > ext.size() && lower.ends_with(ext)) return true;
  }
  return false;
}

void Scanner::Forget(const std::string& session, const std::string& rel, bool held) {
  std::lock_guard lock(mu_);
  forgotten_.push_back({session, rel, held, clock_.Now()});
}

void Scanner::Reset() {
  tracker_ = StabilityTracker(FromSeconds(config_.min_file_age_s));
  next_due_.reset();
  std::lock_guard lock(mu_);
  forgotten_.clear();
  oldest_pending_.reset();
}

void Scanner::Idle() {
  next_due_.reset();  // nothing comes of age: the loop waits for the next poll, not every 10 ms
  std::lock_guard lock(mu_);
  oldest_pending_.reset();
}

double Scanner::OldestPendingAgeS() const {
  std::lock_guard lock(mu_);
  return oldest_pending_ ? ToSeconds(clock_.Now() - *oldest_pending_) : 0.0;
}

Scanner::Stats Scanner::ScanOnce(const std::string& session, std::stop_token stop) {
  if (session != session_) {
    Reset();
    session_ = session;
  }
  {
    std::lock_guard lock(mu_);
    for (const auto& [s, rel, held, at] : forgotten_) {
      if (s != session_) continue;
      if (held) {
        tracker_.Retry(rel, at + FromSeconds(config_.poll_interval_s), /*queued=*/true);
      } else {
        tracker_.Forget(rel);
      }
    }
    forgotten_.clear();
  }
  Stats stats;
  const MonoTime began = clock_.Now();
  const double cpu0 = ThreadCpuSeconds();
  tracker_.BeginScan();
  if (hints_ != nullptr) {
    hints_->BeginScan();
    changed_ = hints_->TakeChangedFiles();
    hints_->Watch(config_.incoming_dir);  // the session directory's arrival
  }
  ScanDir(session, "", -1, stop, &stats);
  if (stop.stop_requested()) return stats;  // a partial scan must not forget unseen files
  if (hints_ != nullptr) hints_->EndScan();
  const auto summary = tracker_.EndScan();
  next_due_ = summary.next_due;
  // A file whose claim failed is due again a poll interval after the failure, which comes after
  // this scan began: without a wake for it, it would wait for the periodic scan after next. No
  // sooner than half an interval after this scan began, though: failures spread over the
  // interval would each bring a scan of their own.
  if (auto retry = tracker_.NextRetry(began)) {  // one due during this scan too
    retry = std::max(*retry, began + FromSeconds(config_.poll_interval_s / 2));
    if (!next_due_ || *retry < *next_due_) next_due_ = retry;
  }
  stats.not_ready = summary.not_ready;
  stats.not_ready_example = summary.not_ready_example;
  stats.wall_s = ToSeconds(clock_.Now() - began);
  stats.cpu_s = ThreadCpuSeconds() - cpu0;
  std::lock_guard lock(mu_);
  oldest_pending_ = summary.oldest_pending;
  return stats;
}

bool Scanner::StatEntry(int dfd, const char* name, const std::string& rel, struct stat* st) const {
  if (fail_for_test_) {
    if (const int err = fail_for_test_("stat", rel); err != 0) {
      errno = err;
      return false;
    }
  }
  return ::fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) == 0;
}

void Scanner::StatFailed(const std::string& rel, int err, Stats* stats) {
  if (err == ENOENT) return;  // gone since the listing (claimed, renamed, deleted): not an error
  // An I/O error, a stale handle, a permission on some servers: neither uploaded nor gone. It is
  // looked at again next scan; meanwhile what is tracked of it (or under it, were it a directory
  // listed without its type) keeps its state.
  Unreadable(rel, "stat", err, stats);
  tracker_.KeepUnseen(rel);
}

void Scanner::ScanDir(const std::string& session, const std::string& rel_dir, int session_fd,
                      std::stop_token stop, Stats* stats) {
  const std::string dir_path = fs::Join(fs::Join(config_.incoming_dir, session), rel_dir);
  // Watched before it is listed: what the listing misses raises a hint.
  const ChangeHints::Names* changed = nullptr;
  if (hints_ != nullptr) {
    hints_->Watch(dir_path);
    if (const auto it = changed_.find(dir_path); it != changed_.end()) changed = &it->second;
  }
  // O_NOFOLLOW: a session directory (or one below it, swapped in mid-scan) that is a symlink
  // is not followed out of incoming; its files are not the producer's to give away. Below the
  // session directory, no part of the path is followed either (OpenBelow).
  int dfd = -1;
  if (const int err = fail_for_test_ ? fail_for_test_("open", rel_dir) : 0; err != 0) {
    errno = err;
  } else if (rel_dir.empty()) {
    // From incoming's descriptor, so that a session directory that is a mount of its own is
    // refused too (OpenBelow).
    const fs::Fd incoming(::open(config_.incoming_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    dfd = incoming.get() >= 0
              ? OpenBelow(incoming.get(), session, dir_path)
              : ::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  } else if (session_fd < 0) {
    dfd = ::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  } else {
    dfd = OpenBelow(session_fd, rel_dir, dir_path);
  }
  if (dfd < 0) {
    const int err = errno;
    struct stat st {};
    const bool is_link = ::lstat(dir_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
    if (!rel_dir.empty() && (err == ELOOP || err == ENOTDIR) && !is_link) {
      // A directory above it swapped for a symlink since it was listed: what the symlink leads
      // to is not this session's. That directory's next listing counts the symlink. Or it, or
      // one above it, replaced by a file: gone as a directory, as after ENOENT; the file is
      // looked at by the next scan.
      return;
    }
    if ((err == ENOTDIR || err == ELOOP) && is_link) {
      // The session directory itself, or one swapped for a symlink since it was listed (Linux
      // answers O_DIRECTORY | O_NOFOLLOW on a symlink with ENOTDIR): counted with the symlinks,
      // which the status shows and a warning names when their count grows.
      NotRegular(DirName(rel_dir), stats);
    } else if (err != ENOENT) {
      // A permission, an I/O error, a path past PATH_MAX, another mount: its files are not
      // seen. Counted as unreadable, which the status and a warning show; those tracked there
      // are not taken as gone.
      Unreadable(DirName(rel_dir),
                 err == EXDEV ? "open (another mount: claims cannot be renamed out of it)" : "open",
                 err, stats);
      tracker_.KeepUnseen(rel_dir);
    }
    return;
  }
  // The session directory's own descriptor, which every directory below it is opened from
  // (by path, should it not be had).
  fs::Fd own_session;
  if (rel_dir.empty()) {
    own_session = fs::Fd(::fcntl(dfd, F_DUPFD_CLOEXEC, 0));
    session_fd = own_session.get();
  }
  DIR* d = ::fdopendir(dfd);
  if (d == nullptr) {
    Unreadable(DirName(rel_dir), "fdopendir", errno, stats);
    tracker_.KeepUnseen(rel_dir);
    ::close(dfd);
    return;
  }
  std::vector<std::string> subdirs;
  // For skipping only: a stale `now` can only delay a check, never make a file ready early.
  MonoTime now = clock_.Now();
  // `rel` is rebuilt in place for each entry: no allocation per name in a large directory.
  const size_t prefix = rel_dir.empty() ? 0 : rel_dir.size() + 1;
  std::string rel = rel_dir.empty() ? "" : rel_dir + "/";
  for (;;) {
    errno = 0;  // readdir's end and its errors look alike but for errno
    const dirent* e = ::readdir(d);
    if (e != nullptr && fail_for_test_) {
      if (const int err = fail_for_test_("readdir", fs::Join(rel_dir, e->d_name)); err != 0) {
        e = nullptr;
        errno = err;
      }
    }
    if (e == nullptr) {
      if (errno != 0) {
        // The names after that point are not seen: counted as unreadable (the service's warning
        // names it), and those tracked here are not taken as gone (nor queued again once the
        // listing works).
        const int err = errno;
        Unreadable(DirName(rel_dir), "readdir", err, stats);
        tracker_.KeepUnseen(rel_dir);
      }
      break;
    }
    if (stop.stop_requested()) break;
    const std::string_view name(e->d_name);
    // Some NFS servers list entries without their type (DT_UNKNOWN): stat tells, below.
    const unsigned char type =
        entry_types_unknown_ ? static_cast<unsigned char>(DT_UNKNOWN) : e->d_type;
    if (IsHiddenName(name)) {
      if (name == "." || name == "..") continue;
      // Dot-files (rsync temps, .nfsXXXX silly renames), unless APP_INCLUDE_DOT_FILES takes
      // them as other names. Counted, not stat-ed: one listed without its type counts as a
      // file. A dot-directory (.git, .cache) is not entered, and counts as one entry, named with
      // a '/': else the files below it would stay in incoming without a word.
      if (SkipsDotName(name)) {
        if (type == DT_DIR) {
          Ignored(rel_dir, std::string(name) + "/", stats);
        } else if (type == DT_REG || type == DT_UNKNOWN) {
          Ignored(rel_dir, name, stats);
        }
        continue;
      }
    }
    rel.resize(prefix);
    rel.append(name);
    if (type == DT_DIR) {
      subdirs.push_back(rel);
      continue;
    }
    if (type != DT_REG && type != DT_UNKNOWN) {  // symlinks, fifos...
      NotRegular(rel, stats);
      continue;
    }
    // Tracked names passed the filters when first seen: skip the glob matching for them.
    if (tracker_.SkipStat(rel, now, changed != nullptr && changed->contains(name))) {
      ++stats->files_seen;
      continue;
    }
    struct stat st {};
    if (!Accepts(name)) {
      // The filters are for files: a directory is entered whatever its name, as with DT_DIR.
      if (type == DT_REG) {
        Ignored(rel_dir, name, stats);
      } else {  // DT_UNKNOWN
        ++stats->stats;
        if (!StatEntry(dfd, e->d_name, rel, &st)) {
          StatFailed(rel, errno, stats);  // it may be a directory
        } else if (S_ISDIR(st.st_mode)) {
          subdirs.push_back(rel);
        } else if (S_ISREG(st.st_mode)) {
          Ignored(rel_dir, name, stats);
        }
      }
      continue;
    }
    ++stats->stats;
    if (!StatEntry(dfd, e->d_name, rel, &st)) {
      StatFailed(rel, errno, stats);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      subdirs.push_back(rel);
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      NotRegular(rel, stats);
      continue;
    }
    ++stats->files_seen;
    const MonoTime seen = clock_.Now();  // exact time of this observation
    bool requeued = false;
    if (!tracker_.Observe(rel, fs::FromStat(st), seen, &requeued)) continue;
    // Ready by stat: confirm with open + fstat, which revalidates NFS cached attributes.
    const int injected = fail_for_test_ ? fail_for_test_("open-file", rel) : 0;
    const int fd = injected != 0
                       ? (errno = injected, -1)
                       : ::openat(dfd, e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
      if (errno == ENOENT) {
        tracker_.Forget(rel);
      } else {
        // Kept with its first sight, so the backlog age grows while it waits, and tried again
        // (and counted) at every scan: one counted only every other scan read as a young file.
        Unreadable(rel, "open", errno, stats);
        tracker_.Retry(rel, seen, /*queued=*/requeued);
      }
      continue;
    }
    struct stat fst {};
    const bool same = ::fstat(fd, &fst) == 0 && fs::FromStat(fst) == fs::FromStat(st);
    ::close(fd);
    if (!same) {
      tracker_.Forget(rel);  // changed: start its stability clock again next scan
      continue;
    }
    WorkItem item;
    item.kind = WorkItem::Kind::kFresh;
    item.session = session;
    item.rel = rel;
    item.observed = fs::FromStat(fst);
    item.ready_at = seen;
    if (!requeued) inst_.files_discovered.Add();  // counted when first queued
    inst_.queue_depth.Add(1);
    if (queue_.size() >= queue_.capacity()) QueueFull(session, now);
    if (!queue_.Push(std::move(item), stop)) {
      inst_.queue_depth.Add(-1);
      tracker_.Forget(rel);
      break;
    }
    ++stats->queued;
    now = clock_.Now();  // Push may have waited for room
  }
  ::closedir(d);
  for (const auto& sub : subdirs) {
    if (stop.stop_requested()) return;
    ScanDir(session, sub, session_fd, stop, stats);
  }
}

void Scanner::QueueFull(const std::string& session, MonoTime now) {
  if (queue_full_logged_ && now - *queue_full_logged_ < std::chrono::minutes(1)) return;
  queue_full_logged_ = now;
  LogWarn("work queue full: files wait to be queued until the workers take some",
          {{"session", session}, {"queue_capacity", queue_.capacity()}});
}

}  // namespace nbu::core
