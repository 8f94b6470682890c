#include "core/change_hints.h"

#include "util/log.h"
#include "util/status.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_set>
#include <utility>

namespace nbu::core {
namespace {

// A file closed after writing or renamed in, or a new entry (a new subdirectory needs a scan to
// be watched itself; a new file is not a change until its close, see Wait). Directories only,
// not through symlinks; files already unlinked are not reported.
constexpr uint32_t kMask =
    IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;

}  // namespace

ChangeHints::ChangeHints(size_t max_watches) : max_watches_(max_watches) {
  fs::Fd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd.valid()) {
    error_ = ErrnoStatus("inotify_init1", errno).ToString();
    return;
  }
  fs::Fd stop_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop_fd.valid()) {
    error_ = ErrnoStatus("eventfd", errno).ToString();
    return;
  }
  fd_ = std::move(fd);
  stop_fd_ = std::move(stop_fd);
}

void ChangeHints::BeginScan() {
  std::lock_guard lock(mu_);
  ++generation_;
  scan_limited_ = false;
  if (ended_.empty()) return;
  const std::unordered_set<int> gone(ended_.begin(), ended_.end());
  Forget(gone);
  ended_.clear();
}

void ChangeHints::Watch(const std::string& dir) {
  if (!available()) return;
  std::lock_guard lock(mu_);
  if (auto it = watched_.find(dir); it != watched_.end()) {
    it->second.generation = generation_;
    return;
  }
  if (watched_.size() >= max_watches_) {
    scan_limited_ = true;
    limit_reason_ = "at most " + std::to_string(max_watches_) + " directories are watched";
    return;
  }
  const int wd = ::inotify_add_watch(fd_.get(), dir.c_str(), kMask);
  if (wd < 0) {
    // ENOSPC: the user's fs.inotify.max_user_watches is used up. ENOENT and the like: the
    // directory went away; the scan finds out too.
    if (errno == ENOSPC || errno == ENOMEM) {
      scan_limited_ = true;
      limit_reason_ = ErrnoStatus("inotify_add_watch", errno).ToString();
    }
    return;
  }
  watched_.insert_or_assign(dir, Watched{wd, generation_});
  dirs_.insert_or_assign(wd, dir);
}

void ChangeHints::EndScan() {
  std::lock_guard lock(mu_);
  std::unordered_set<int> dropped;
  for (const auto& [dir, w] : watched_) {
    if (w.generation == generation_) continue;
    ::inotify_rm_watch(fd_.get(), w.wd);
    dropped.insert(w.wd);
  }
  // A directory renamed within the tree was listed under its new name with the same watch
  // (inotify watches the inode): removing the old name's removed that one too. Every name of a
  // dropped watch goes, and the next scan watches the listed ones again.
  if (!dropped.empty()) Forget(dropped);
  if (scan_limited_ && !limited_) {
    LogInfo("some directories are found by the poll alone (no change hints for them)",
            {{"reason", limit_reason_}, {"watched", watched_.size()}});
  }
  limited_ = scan_limited_;
}

bool ChangeHints::Wait(std::stop_token stop) {
  if (!available()) return false;
  std::stop_callback wake(stop, [this] {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
  });
  alignas(inotify_event) char buf[16 << 10];
  while (true) {
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      error_ = ErrnoStatus("poll", errno).ToString();
      return false;
    }
    if (stop.stop_requested()) {
      uint64_t count = 0;  // reset the eventfd for the next Wait
      [[maybe_unused]] const ssize_t n = ::read(stop_fd_.get(), &count, sizeof count);
      return false;
    }
    bool changed = false;
    while (true) {
      const ssize_t got = ::read(fd_.get(), buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;  // EAGAIN: every waiting event read
      for (size_t off = 0; off + sizeof(inotify_event) <= static_cast<size_t>(got);) {
        inotify_event ev{};
        std::memcpy(&ev, buf + off, sizeof ev);
        const char* const name = buf + off + sizeof ev;  // ev.len bytes, NUL-padded
        off += sizeof ev + ev.len;
        const bool is_dir = (ev.mask & IN_ISDIR) != 0;
        if ((ev.mask & IN_IGNORED) != 0) {
          std::lock_guard lock(mu_);
          ended_.push_back(ev.wd);
        } else if ((ev.mask & IN_CREATE) != 0 && !is_dir) {
          // A new file is not a change yet: a scan now would see it before its bytes. Its close
          // or its rename into place is.
        } else {
          changed = true;  // a file closed or renamed in, a new directory, or IN_Q_OVERFLOW
          if (!is_dir && ev.len > 0)
            NoteChanged(ev.wd, std::string_view(name, ::strnlen(name, ev.len)));
        }
      }
    }
    if (changed) return true;
  }
}

void ChangeHints::NoteChanged(int wd, std::string_view name) {
  std::lock_guard lock(mu_);
  const auto dir = dirs_.find(wd);
  if (dir == dirs_.end() || changed_count_ >= kMaxChanged) return;
  if (changed_[dir->second].emplace(name).second) ++changed_count_;
}

ChangeHints::ChangedFiles ChangeHints::TakeChangedFiles() {
  std::lock_guard lock(mu_);
  changed_count_ = 0;
  return std::exchange(changed_, {});
}

void ChangeHints::Forget(const std::unordered_set<int>& wds) {
  std::erase_if(watched_, [&](const auto& kv) { return wds.contains(kv.second.wd); });
  for (int wd : wds) dirs_.erase(wd);
}

ChangeHints::Stats ChangeHints::stats() const {
  std::lock_guard lock(mu_);
  return Stats{watched_.size(), limited_};
}

}  // namespace nbu::core
