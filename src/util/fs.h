// Thin POSIX filesystem helpers that return Status with the path and errno text attached, and
// retry EINTR. Safe on NFS: no operation here copies-then-deletes; state changes are renames.
#pragma once

#include "util/status.h"

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nbu::fs {

struct FileStat {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint64_t ino = 0;
  uint64_t dev = 0;
  // Names of the file (hard links). With more than one, the ctime is no sign of a write: a
  // rename, link or unlink of any of the names moves it for all.
  uint64_t nlink = 1;
  bool is_dir = false;
  bool is_regular = false;
  bool operator==(const FileStat& o) const {
    return size == o.size && mtime_ns == o.mtime_ns && ino == o.ino && dev == o.dev;
  }
};

FileStat FromStat(const struct stat& st);
Result<FileStat> Stat(const std::string& path);  // lstat: symlinks are not followed
Result<FileStat> FStat(int fd);
// fstat that asks the file server now (statx with AT_STATX_FORCE_SYNC): an NFS client otherwise
// answers from attributes it cached at open, and a write by another host goes unseen.
Result<FileStat> FStatFresh(int fd);
Result<FileStat> StatFresh(const std::string& path);  // the same by path (lstat: no symlinks)

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

Result<Fd> OpenRead(const std::string& path);
Result<Fd> OpenDir(const std::string& path);  // a directory, read-only (the "opendir" seam)
// Creates a new file (O_EXCL); fails with kConflict if it exists.
Result<Fd> CreateExclusive(const std::string& path, mode_t mode = 0644);
// The same for `path` a fresh random name no other process uses: one found there was made by
// this very call, a create the server carried out whose reply was lost (a retransmission then
// answers EEXIST), and is opened, emptied, instead.
Result<Fd> CreateFresh(const std::string& path, mode_t mode = 0644);

// Makes `path` and its missing parents. A parent removed again before its child was made (another
// process pruning empty directories) is made again, twice at most. On failure `*failed_errno`,
// if given, is the failed mkdir's errno (ENOSPC, EDQUOT: the file system is full).
Status MkdirAll(const std::string& path, mode_t mode = 0755, int* failed_errno = nullptr);
// The same for `path` inside the directory `root` (path is root + "/" + something), making no
// directory but those below root: a missing root fails with not-found. A root on a volume that
// was unmounted under a running process is missing, or is the empty mount point; what would be
// made there would lie on the disk under the mount point, seen by no other host and hidden by the
// next mount.
Status MkdirBelow(const std::string& root, const std::string& path, mode_t mode = 0755);
Status Rename(const std::string& from, const std::string& to);
// Renames a state entry on a shared volume. A retransmitted NFS rename can report ENOENT although
// it landed, which the target shows: that is success. ENOENT while the source is still there
// means the target's directory is missing (pruned while empty, or not made yet): it is made and
// the rename tried once more (the directory gone again then, or while it was being made: a passing
// error). Any other ENOENT: the source is gone (another process moved it), unless a name could not
// be looked at: then the outcome is unknown, a passing error.
// A passing error (EIO, ESTALE, a soft mount's ETIMEDOUT) can come back from a rename the server
// carried out, its reply lost: when the server shows the source gone and the target there, that
// is success too. `from` must be a name no other process moves to `to`.
Status RenameEntry(const std::string& from, const std::string& to);
// Gives `from` the second name `to`, which must not exist (kConflict if it does): a
// create-if-absent that NFS servers make atomic, unlike a rename, which replaces. A retransmitted
// NFS link can report EEXIST, or a passing error, although it landed, which the link count of
// `from` and the target show: that is success.
Status LinkNew(const std::string& from, const std::string& to);
// Tests only: called instead of rename(2) and link(2) (`op` "rename" or "link"), as they are
// (-1 with errno on failure); null: the real calls. Set while no other thread renames.
using PathPairCallForTest =
    std::function<int(const char* op, const std::string& from, const std::string& to)>;
void SetPathPairCallForTest(PathPairCallForTest call);
// Tests only: called before the O_EXCL create of CreateExclusive and CreateFresh (`op` "create"),
// the stat of Stat and StatFresh ("stat", "statx"), Unlink ("unlink"), each mkdir of MkdirAll
// ("mkdir"), the open of OpenRead and so ReadSmallFile ("open") and the opendir of ListDir and
// OpenDir ("opendir"): an errno fails the call with it (the test may
// have carried the create out first), 0 lets it run. Set while no other thread uses the volume.
// Also asked for each entry ListDir returns ("d_type", its path): non-zero reports its type as
// DT_UNKNOWN, as some file systems and NFS servers do.
using PathCallForTest = std::function<int(const char* op, const std::string& path)>;
void SetPathCallForTest(PathCallForTest call);
// Runs `op`, and again after a passing error of the volume (kTransient: ESTALE, EIO), up to 3 more
// times over about 1.5 s; not after a try that took seconds itself (a soft mount's timeout), so
// that a caller holding off stop signals is not held for long.
Status Tried(const std::function<Status()>& op);
Status Unlink(const std::string& path);
Status Rmdir(const std::string& path);
Status Fsync(int fd, const std::string& what);
Status FsyncDir(const std::string& dir);
Status RemoveTree(const std::string& path);  // rm -rf; missing is fine

// Writes `data` to a new file `path` (CreateFresh: a fresh random name) and fsyncs it; on
// failure it is removed again.
Status WriteNewFile(const std::string& path, std::string_view data);
// Writes `data` to `path` atomically: temp file in the same directory (TempPathFor), fsync,
// rename, fsync dir. The temp file is left behind only by a process killed mid-write, or when
// the volume lost the reply to its removal.
Status AtomicWriteFile(const std::string& path, std::string_view data);
// A fresh temp file name beside `path`: "<path>.tmp-<12 random hex>".
std::string TempPathFor(const std::string& path);
// For a temp file name of TempPathFor's, "<name>.tmp-<12 hex>": <name>. Else nullopt.
std::optional<std::string_view> AtomicWriteTarget(std::string_view temp_name);
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 1 << 20);

struct DirEntry {
  std::string name;
  unsigned char type;  // DT_REG, DT_DIR, DT_LNK, DT_UNKNOWN...
};
// Lists a directory without "." and "..". Missing directory -> kNotFound.
Result<std::vector<DirEntry>> ListDir(const std::string& path);
// The same one entry at a time, as readdir(3) gives them, for directories too large to hold
// listed (a flat session of a million completion markers): `fn` returns false to stop. Entries
// made or removed meanwhile, by `fn` too, may or may not be seen. An error after some entries
// is returned after their calls.
Status ForEachEntry(const std::string& path, const std::function<bool(const DirEntry&)>& fn);

std::string Dirname(std::string_view path);
std::string Basename(std::string_view path);
std::string Join(std::string_view a, std::string_view b);

struct Mount {
  std::string point;  // where it is mounted
  std::string type;   // the file system's type as the kernel names it: nfs, nfs4, ext4, tmpfs...
};
// The mount holding the absolute, resolved `path`, from /proc/self/mountinfo's `text`: the one
// whose mount point is its longest prefix, and of two at one point the later (mounted over the
// other); given the path's device (st_dev), one on that device first (a mount over a parent
// hides the longer mount points below it). nullopt when no line holds it (not mountinfo's text).
std::optional<Mount> MountHolding(std::string_view mountinfo, std::string_view path,
                                  std::optional<uint64_t> dev = std::nullopt);
// The same for `path` as this process sees it: the path resolved, or the nearest directory
// above it that exists (where it would be made).
Result<Mount> MountOf(const std::string& path);

}  // namespace nbu::fs
