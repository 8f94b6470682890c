// Hints that a watched directory changed, from inotify, so that a scan can run at once instead of
// at the next poll. inotify sees only changes made through this host's kernel (files written or
// renamed here, not by other NFS clients), so the poll stays the signal that finds every file: a
// hint only brings the next scan forward. A lost hint (the kernel's event queue overflowed, a
// directory beyond the watch cap) costs latency, never a file.
#pragma once

#include "util/fs.h"
#include "util/string_set.h"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace nbu::core {

class ChangeHints {
 public:
  // At most this many directories are watched (each watch counts against the user's
  // fs.inotify.max_user_watches, shared with every other process of the user).
  static constexpr size_t kMaxWatches = 8192;
  explicit ChangeHints(size_t max_watches = kMaxWatches);

  // False when inotify could not be set up; error() says why. The poll alone then finds files.
  // error() also says why Wait() failed (it then returns false without a stop), and is read by
  // the thread that waits.
  bool available() const { return fd_.valid(); }
  const std::string& error() const { return error_; }

  // The scan thread's calls around one scan: each directory it lists goes to Watch() before it is
  // listed (a change after the listing then raises a hint), and EndScan() drops the watches of
  // directories this scan did not list.
  void BeginScan();
  void Watch(const std::string& dir);
  void EndScan();

  // Blocks until a watched directory reports a change, or `stop`; reads every event waiting.
  // True on a change; false on `stop` or an error. One thread at a time.
  bool Wait(std::stop_token stop);

  // The files closed after writing or renamed in since the last call, by directory (as passed to
  // Watch). A scan looks at them again even when it would not yet: one it saw before its last
  // bytes then starts its stability clock at its close, not at its next check. At most
  // kMaxChanged names are kept between two calls; the rest wait for that check.
  using Names = StringSet;
  using ChangedFiles = std::unordered_map<std::string, Names>;
  static constexpr size_t kMaxChanged = 65536;
  ChangedFiles TakeChangedFiles();

  struct Stats {
    size_t watches = 0;    // directories watched now
    bool limited = false;  // a directory went unwatched: over the cap or the kernel's limit
  };
  Stats stats() const;

 private:
  struct Watched {
    int wd;
    uint64_t generation;  // the last scan that listed it
  };
  void NoteChanged(int wd, std::string_view name);
  // Drops the watches `wds` under every name (mu_ held).
  void Forget(const std::unordered_set<int>& wds);

  const size_t max_watches_;
  fs::Fd fd_;       // inotify
  fs::Fd stop_fd_;  // eventfd that ends Wait
  std::string error_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Watched> watched_;  // guarded by mu_
  std::unordered_map<int, std::string> dirs_;         // guarded by mu_: watched_ by wd
  ChangedFiles changed_;                              // guarded by mu_
  size_t changed_count_ = 0;                          // guarded by mu_
  std::vector<int> ended_;     // guarded by mu_: watches the kernel ended (directory gone)
  uint64_t generation_ = 0;    // guarded by mu_
  bool scan_limited_ = false;  // guarded by mu_: this scan left a directory unwatched
  bool limited_ = false;       // guarded by mu_: the last complete scan did
  std::string limit_reason_;   // guarded by mu_
};

}  // namespace nbu::core
