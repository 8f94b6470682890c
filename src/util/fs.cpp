#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <limits>
#include <thread>

#include "util/crypto.h"

namespace nbu::fs {
namespace {

template <typename F>
auto RetryEintr(F f) {
  for (;;) {
    auto r = f();
    if (r >= 0 || errno != EINTR) return r;
  }
}

PathCallForTest& PathCall() {
  static PathCallForTest call;
  return call;
}

// Nanoseconds since the epoch, held at int64_t's ends past them: a producer may set a time
// after 2262 or before 1677 (touch -d 2300-01-01), which the file systems keep.
int64_t TimeNs(int64_t sec, int64_t nsec) {
  int64_t ns = 0;
  if (__builtin_mul_overflow(sec, int64_t{1'000'000'000}, &ns) ||
      __builtin_add_overflow(ns, nsec, &ns)) {
    return sec < 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
  }
  return ns;
}

// The errno a test injects before `op` on `path`, or 0.
int InjectedForTest(const char* op, const std::string& path) {
  return PathCall() ? PathCall()(op, path) : 0;
}

}  // namespace

void SetPathCallForTest(PathCallForTest call) { PathCall() = std::move(call); }

FileStat FromStat(const struct stat& st) {
  FileStat s;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = TimeNs(st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  s.ctime_ns = TimeNs(st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
  s.ino = static_cast<uint64_t>(st.st_ino);
  s.dev = static_cast<uint64_t>(st.st_dev);
  s.nlink = static_cast<uint64_t>(st.st_nlink);
  s.is_dir = S_ISDIR(st.st_mode);
  s.is_regular = S_ISREG(st.st_mode);
  return s;
}

Result<FileStat> Stat(const std::string& path) {
  if (const int err = InjectedForTest("stat", path); err != 0) {
    return ErrnoStatus("stat " + path, err);
  }
  struct stat st {};
  if (RetryEintr([&] { return ::lstat(path.c_str(), &st); }) != 0) {
    return ErrnoStatus("stat " + path, errno);
  }
  return FromStat(st);
}

Result<FileStat> FStat(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus("fstat", errno);
  return FromStat(st);
}

namespace {

// statx with AT_STATX_FORCE_SYNC: the file server's attributes, not the client's cache.
Result<FileStat> StatxFresh(int dirfd, const char* path, int flags) {
  struct statx stx {};
  if (::statx(dirfd, path, flags | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx) != 0) {
    return ErrnoStatus("statx", errno);
  }
  FileStat s;
  s.size = stx.stx_size;
  s.mtime_ns = TimeNs(stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec);
  s.ctime_ns = TimeNs(stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec);
  s.ino = stx.stx_ino;
  s.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  s.nlink = stx.stx_nlink;
  s.is_dir = S_ISDIR(stx.stx_mode);
  s.is_regular = S_ISREG(stx.stx_mode);
  return s;
}

}  // namespace

Result<FileStat> FStatFresh(int fd) { return StatxFresh(fd, "", AT_EMPTY_PATH); }

Result<FileStat> StatFresh(const std::string& path) {
  if (const int err = InjectedForTest("statx", path); err != 0) return ErrnoStatus("statx", err);
  return StatxFresh(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW);
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Result<Fd> OpenRead(const std::string& path) {
  if (const int err = InjectedForTest("open", path); err != 0) {
    return ErrnoStatus("open " + path, err);
  }
  // O_NONBLOCK: a FIFO put in a regular file's place is not waited on (no effect on files).
  const int fd = RetryEintr(
      [&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK); });
  if (fd < 0) return ErrnoStatus("open " + path, errno);
  return Fd(fd);
}

Result<Fd> OpenDir(const std::string& path) {
  if (const int err = InjectedForTest("opendir", path); err != 0) {
    return ErrnoStatus("opendir " + path, err);
  }
  const int fd =
      RetryEintr([&] { return ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
  if (fd < 0) return ErrnoStatus("opendir " + path, errno);
  return Fd(fd);
}

Result<Fd> CreateExclusive(const std::string& path, mode_t mode) {
  if (const int err = InjectedForTest("create", path); err != 0) {
    return ErrnoStatus("create " + path, err);
  }
  const int fd = RetryEintr(
      [&] { return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode); });
  if (fd < 0) return ErrnoStatus("create " + path, errno);
  return Fd(fd);
}

Result<Fd> CreateFresh(const std::string& path, mode_t mode) {
  auto created = CreateExclusive(path, mode);
  if (created.ok() || created.status().kind() != ErrorKind::kConflict) return created;
  const int fd =
      RetryEintr([&] { return ::open(path.c_str(), O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC); });
  if (fd < 0) return ErrnoStatus("create " + path, errno);
  return Fd(fd);
}

namespace {

// mkdir(2) of `path`: 0 or its errno.
int MkdirOne(const std::string& path, mode_t mode) {
  if (const int err = InjectedForTest("mkdir", path); err != 0) return err;
  return ::mkdir(path.c_str(), mode) == 0 ? 0 : errno;
}

// MkdirAll, making no directory whose path is `kept` characters long or shorter (0: any).
Status MkdirUnder(const std::string& path, size_t kept, mode_t mode, int* failed_errno) {
  if (path.empty()) return Status::Ok();
  const std::string parent = Dirname(path);
  int err = 0;
  for (int tries = 0; tries < 3; ++tries) {
    err = MkdirOne(path, mode);
    if (err == 0 || err == EEXIST) return Status::Ok();
    if (err != ENOENT || parent == path || parent.size() <= kept) break;
    // The parent is missing: not made yet, or removed again since it was made (another process
    // pruning empty directories, as the sweeps do).
    if (Status s = MkdirUnder(parent, kept, mode, failed_errno); !s.ok()) return s;
  }
  if (failed_errno != nullptr) *failed_errno = err;
  return ErrnoStatus("mkdir " + path, err);
}

}  // namespace

Status MkdirAll(const std::string& path, mode_t mode, int* failed_errno) {
  return MkdirUnder(path, 0, mode, failed_errno);
}

Status MkdirBelow(const std::string& root, const std::string& path, mode_t mode) {
  std::string_view kept = root;
  while (kept.size() > 1 && kept.back() == '/') kept.remove_suffix(1);
  const bool inside = kept == "/" ? path.size() > 1 && path.front() == '/'
                                  : path.size() > kept.size() + 1 && path.starts_with(kept) &&
                                        path[kept.size()] == '/';
  if (!inside) {
    return Status(ErrorKind::kPermanent, path + " does not lie inside " + root);
  }
  return MkdirUnder(path, kept.size(), mode, nullptr);
}

namespace {

PathPairCallForTest& PathPairCall() {
  static PathPairCallForTest call;
  return call;
}

int CallPathPair(const char* op, const std::string& from, const std::string& to,
                 int (*real)(const char*, const char*)) {
  return RetryEintr([&] {
    return PathPairCall() ? PathPairCall()(op, from, to) : real(from.c_str(), to.c_str());
  });
}

// Whether a rename that reported a passing error was carried out all the same, as the server
// (not this client's cached attributes) shows it: the source gone, the target there (and, given
// the source's identity, the target that very file).
bool RenameLanded(const std::string& from, const std::string& to,
                  const std::optional<FileStat>& source_was = std::nullopt) {
  const auto source = StatFresh(from);
  if (source.ok() || source.status().kind() != ErrorKind::kNotFound) return false;
  const auto target = StatFresh(to);
  return target.ok() &&
         (!source_was || (target->ino == source_was->ino && target->dev == source_was->dev &&
                          target->size == source_was->size));
}

}  // namespace

void SetPathPairCallForTest(PathPairCallForTest call) { PathPairCall() = std::move(call); }

Status Rename(const std::string& from, const std::string& to) {
  if (CallPathPair("rename", from, to, ::rename) != 0) {
    return ErrnoStatus("rename " + from + " -> " + to, errno);
  }
  return Status::Ok();
}

Status RenameEntry(const std::string& from, const std::string& to) {
  Status s = Rename(from, to);
  for (int again = 1; s.kind() == ErrorKind::kNotFound; --again) {
    // Asked of the server: a lookup the client cached may predate the rename.
    auto look = StatFresh(to);
    if (look.ok()) return Status::Ok();
    if (look.status().kind() == ErrorKind::kNotFound) look = StatFresh(from);
    if (!look.ok() && look.status().kind() != ErrorKind::kNotFound) {
      // A name that could not be looked at: whether the rename landed is not known, which is no
      // "not found" (a caller takes that for the entry moved by another process). Looked at
      // once more below.
      s = Status(ErrorKind::kTransient, s.message() + "; then " + look.status().message());
      break;
    }
    if (!look.ok()) break;  // the source gone: moved by another process
    if (again == 0) {
      // The source still there and the target's directory missing again, removed since it was
      // made (another process's sweep of empty directories): worth another try later.
      return Status(ErrorKind::kTransient,
                    s.message() + "; the target's directory was removed again meanwhile");
    }
    if (Status m = MkdirAll(Dirname(to)); !m.ok()) {
      // A directory on the way removed as fast as it was made: the source is still there.
      if (m.kind() != ErrorKind::kNotFound) return m;
      return Status(ErrorKind::kTransient, s.message() + "; then " + m.message());
    }
    s = Rename(from, to);
  }
  if (s.kind() == ErrorKind::kTransient && RenameLanded(from, to)) return Status::Ok();
  return s;
}

Status LinkNew(const std::string& from, const std::string& to) {
  if (CallPathPair("link", from, to, ::link) == 0) return Status::Ok();
  const int err = errno;
  // Landed when `to` is `from`: asked of the server, whose answer to the link may have been lost
  // (the client's cached attributes predate it). Not a link count: `from` may have other names.
  if (err == EEXIST || ErrnoKind(err) == ErrorKind::kTransient) {
    const auto a = StatFresh(from);
    const auto b = a.ok() ? StatFresh(to) : a;
    if (a.ok() && b.ok() && a->ino == b->ino && a->dev == b->dev) return Status::Ok();
  }
  return ErrnoStatus("link " + from + " -> " + to, err);
}

Status Tried(const std::function<Status()>& op) {
  for (int again = 1;; ++again) {
    const auto began = std::chrono::steady_clock::now();
    Status s = op();
    if (s.kind() != ErrorKind::kTransient || again > 3 ||
        std::chrono::steady_clock::now() - began > std::chrono::seconds(2)) {
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250) * again);
  }
}

Status Unlink(const std::string& path) {
  if (const int err = InjectedForTest("unlink", path); err != 0) {
    return ErrnoStatus("unlink " + path, err);
  }
  if (::unlink(path.c_str()) != 0) return ErrnoStatus("unlink " + path, errno);
  return Status::Ok();
}

Status Rmdir(const std::string& path) {
  if (::rmdir(path.c_str()) != 0) return ErrnoStatus("rmdir " + path, errno);
  return Status::Ok();
}

Status Fsync(int fd, const std::string& what) {
  if (RetryEintr([&] { return ::fsync(fd); }) != 0) return ErrnoStatus("fsync " + what, errno);
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open dir " + dir, errno);
  Fd owned(fd);
  return Fsync(fd, dir);
}

Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return Status(ErrorKind::kTransient, "remove " + path + ": " + ec.message());
  return Status::Ok();
}

namespace {

// WriteNewFile's work; the file's identity (its inode and device, which a rename keeps: no need
// to ask the server) and size.
Result<FileStat> WriteNew(const std::string& path, std::string_view data) {
  auto fd = CreateFresh(path, 0644);
  if (!fd.ok()) return fd.status();
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd->get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::unlink(path.c_str());
      return ErrnoStatus("write " + path, err);
    }
    off += static_cast<size_t>(n);
  }
  if (Status s = Fsync(fd->get(), path); !s.ok()) {
    ::unlink(path.c_str());
    return s;
  }
  auto identity = FStat(fd->get());
  if (!identity.ok()) ::unlink(path.c_str());
  return identity;
}

}  // namespace

Status WriteNewFile(const std::string& path, std::string_view data) {
  return WriteNew(path, data).status();
}

constexpr std::string_view kTempMark = ".tmp-";
constexpr size_t kTempRandomBytes = 6;

std::string TempPathFor(const std::string& path) {
  return path + std::string(kTempMark) + HexEncode(RandomBytes(kTempRandomBytes));
}

Status AtomicWriteFile(const std::string& path, std::string_view data) {
  const std::string tmp = TempPathFor(path);
  const auto written = WriteNew(tmp, data);
  if (!written.ok()) return written.status();
  // ENOENT as well as a passing error may answer a rename that landed (a retransmission's
  // reply): the temp gone and the file there is that rename when the file there is the temp
  // (another process may have removed the temp, a leftover to it, and `path` be the old file).
  if (Status s = Rename(tmp, path);
      !s.ok() && !((s.kind() == ErrorKind::kTransient || s.kind() == ErrorKind::kNotFound) &&
                   RenameLanded(tmp, path, *written))) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(Dirname(path));
}

std::optional<std::string_view> AtomicWriteTarget(std::string_view temp_name) {
  constexpr size_t kHexLen = 2 * kTempRandomBytes;
  if (temp_name.size() <= kTempMark.size() + kHexLen) return std::nullopt;
  const size_t at = temp_name.size() - kHexLen - kTempMark.size();
  if (temp_name.substr(at, kTempMark.size()) != kTempMark) return std::nullopt;
  for (const char ch : temp_name.substr(at + kTempMark.size())) {
    if ((ch < '0' || ch > '9') && (ch < 'a' || ch > 'f')) return std::nullopt;
  }
  return temp_name.substr(0, at);
}

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  auto fd = OpenRead(path);
  if (!fd.ok()) return fd.status();
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read " + path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) return Status(ErrorKind::kPermanent, path + ": file too large");
  }
  return out;
}

Status ForEachEntry(const std::string& path, const std::function<bool(const DirEntry&)>& fn) {
  if (const int err = InjectedForTest("opendir", path); err != 0) {
    return ErrnoStatus("opendir " + path, err);
  }
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoStatus("opendir " + path, errno);
  DirEntry entry;
  // Before each call: readdir's end and its errors look alike but for errno, which the loop's
  // body (and `fn`) may set.
  for (errno = 0; const dirent* e = ::readdir(d); errno = 0) {
    const std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    entry.name = name;
    entry.type = e->d_type;
    if (PathCall() && InjectedForTest("d_type", Join(path, name)) != 0) entry.type = DT_UNKNOWN;
    if (!fn(entry)) {
      errno = 0;  // stopped, not failed: whatever `fn` left there is not readdir's
      break;
    }
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus("readdir " + path, err);
  return Status::Ok();
}

Result<std::vector<DirEntry>> ListDir(const std::string& path) {
  std::vector<DirEntry> out;
  Status s = ForEachEntry(path, [&](const DirEntry& e) {
    out.push_back(e);
    return true;
  });
  if (!s.ok()) return s;
  return out;
}

std::string Dirname(std::string_view path) {
  const auto pos = path.find_last_of('/');
  if (pos == std::string_view::npos) return ".";
  if (pos == 0) return "/";
  return std::string(path.substr(0, pos));
}

std::string Basename(std::string_view path) {
  const auto pos = path.find_last_of('/');
  return std::string(pos == std::string_view::npos ? path : path.substr(pos + 1));
}

std::string Join(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string out(a);
  if (out.back() != '/') out.push_back('/');
  out.append(b.front() == '/' ? b.substr(1) : b);
  return out;
}

namespace {

// A field of /proc/self/mountinfo, with the kernel's octal escapes of space, tab, newline and
// backslash (\040, \011, \012, \134) undone.
std::string Unescaped(std::string_view field) {
  std::string out;
  out.reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    const auto octal = [&](size_t k) { return field[k] >= '0' && field[k] <= '7'; };
    if (field[i] == '\\' && i + 3 < field.size() && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                               (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

bool Holds(std::string_view point, std::string_view path) {
  if (!path.starts_with(point)) return false;
  return point.size() == path.size() || point.ends_with('/') || path[point.size()] == '/';
}

}  // namespace

std::optional<Mount> MountHolding(std::string_view mountinfo, std::string_view path,
                                  std::optional<uint64_t> dev) {
  std::optional<Mount> best;
  bool best_on_dev = false;
  while (!mountinfo.empty()) {
    const size_t eol = mountinfo.find('\n');
    const std::string_view line = mountinfo.substr(0, eol);
    mountinfo = eol == std::string_view::npos ? std::string_view() : mountinfo.substr(eol + 1);
    // "36 35 98:0 /root /mnt/point rw,noatime master:1 - ext4 /dev/vda rw": the third field is
    // the device, the fifth the mount point, the first after the lone "-" the type (optional
    // fields come between).
    std::vector<std::string_view> fields;
    for (size_t at = 0; at < line.size();) {
      const size_t end = std::min(line.find(' ', at), line.size());
      if (end > at) fields.push_back(line.substr(at, end - at));
      at = end + 1;
    }
    const auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || dash - fields.begin() < 6 ||
        dash + 1 == fields.end()) {
      continue;
    }
    std::string point = Unescaped(fields[4]);
    if (!Holds(point, path)) continue;
    // A mount on the path's own device beats one that is not: a mount over a parent hides a
    // longer mount point below it, which mountinfo still lists.
    const bool on_dev =
        dev && fields[2] == std::to_string(major(*dev)) + ":" + std::to_string(minor(*dev));
    if (!best || (on_dev && !best_on_dev) ||
        (on_dev == best_on_dev && point.size() >= best->point.size())) {
      best = Mount{std::move(point), std::string(dash[1])};
      best_on_dev = on_dev;
    }
  }
  return best;
}

Result<Mount> MountOf(const std::string& path) {
  std::error_code error;
  std::filesystem::path at = std::filesystem::absolute(path, error).lexically_normal();
  if (error) return ErrnoStatus("resolve " + path, error.value());
  for (;;) {
    const std::filesystem::path resolved = std::filesystem::canonical(at, error);
    if (!error) {
      struct stat st {};
      if (::stat(resolved.c_str(), &st) != 0)
        return ErrnoStatus("stat " + resolved.string(), errno);
      auto text = ReadSmallFile("/proc/self/mountinfo", 64 << 20);
      if (!text.ok()) return text.status();
      if (auto mount = MountHolding(*text, resolved.string(), st.st_dev)) return *mount;
      return Status(ErrorKind::kPermanent,
                    "no mount in /proc/self/mountinfo holds " + resolved.string());
    }
    if (error != std::errc::no_such_file_or_directory || at == at.parent_path()) {
      return ErrnoStatus("resolve " + at.string(), error.value());
    }
    at = at.parent_path();
  }
}

}  // namespace nbu::fs
