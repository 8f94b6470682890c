// What flows through the queue: a ready producer file to claim, or an existing claim to finish.
#pragma once

#include "core/layout.h"
#include "util/clock.h"
#include "util/fs.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

namespace nbu::core {

struct WorkItem {
  enum class Kind { kFresh, kClaim };
  Kind kind = Kind::kFresh;
  // kFresh: the producer's file <incoming>/<session>/<rel>, as confirmed by open+fstat.
  std::string session;
  std::string rel;
  fs::FileStat observed;
  // kClaim: a claim owned by this replica (recovery, takeover, dead-letter retry).
  ClaimPath claim;
  // kClaim: HEAD the blob first and skip the upload when it already holds these bytes.
  bool check_existing = false;
  MonoTime ready_at{};
};

// Claims this replica is working on right now (so the sweeper does not queue them twice).
class InFlight {
 public:
  bool Add(const std::string& claim_path) {
    std::lock_guard lock(mu_);
    return paths_.insert(claim_path).second;
  }
  void Remove(const std::string& claim_path) {
    std::lock_guard lock(mu_);
    paths_.erase(claim_path);
  }
  bool Contains(const std::string& claim_path) const {
    std::lock_guard lock(mu_);
    return paths_.count(claim_path) != 0;
  }
  size_t size() const {
    std::lock_guard lock(mu_);
    return paths_.size();
  }
  // Completion markers a worker has yet to look at after its completion rename (not counted
  // in size(): the claim they come from is).
  void HoldMarker(const std::string& marker_path) {
    std::lock_guard lock(mu_);
    markers_.insert(marker_path);
  }
  void ReleaseMarker(const std::string& marker_path) {
    std::lock_guard lock(mu_);
    markers_.erase(marker_path);
  }
  bool MarkerHeld(const std::string& marker_path) const {
    std::lock_guard lock(mu_);
    return markers_.count(marker_path) != 0;
  }
  // The ctime of a marker its worker found unchanged when it looked: any later change of it (a
  // write, times or mode set) came after the upload, though its mtime may not show it; and
  // whether the file had other names then (hard links: their renames and unlinks move the
  // ctime too), with its mtime then. Kept until the sweeper collects or claims the marker again;
  // past kMaxSettled, not kept (the sweeper then judges by the mtime alone, as it does after a
  // restart).
  static constexpr size_t kMaxSettled = 100000;  // 21 MB of notes for 93-byte paths (measured)
  struct SettledNote {
    int64_t ctime_ns = 0;
    bool linked = false;
    int64_t mtime_ns = 0;  // the file's, which a write moves (for a linked one)
    bool operator==(const SettledNote&) const = default;
  };
  // False when not kept: kMaxSettled markers are noted already.
  bool NoteSettledMarker(const std::string& marker_path, SettledNote note) {
    std::lock_guard lock(mu_);
    if (settled_.size() >= kMaxSettled && !settled_.contains(marker_path)) return false;
    settled_[marker_path] = note;
    return true;
  }
  std::optional<SettledNote> SettledMarker(const std::string& marker_path) const {
    std::lock_guard lock(mu_);
    const auto it = settled_.find(marker_path);
    return it == settled_.end() ? std::nullopt : std::optional<SettledNote>(it->second);
  }
  void ForgetSettledMarker(const std::string& marker_path) {
    std::lock_guard lock(mu_);
    settled_.erase(marker_path);
  }

 private:
  mutable std::mutex mu_;
  std::set<std::string> paths_;                 // guarded by mu_
  std::set<std::string> markers_;               // guarded by mu_
  std::map<std::string, SettledNote> settled_;  // guarded by mu_
};

}  // namespace nbu::core
