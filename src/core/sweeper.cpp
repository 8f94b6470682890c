#include "core/sweeper.h"

#include "util/fs.h"
#include "util/log.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <thread>

namespace nbu::core {

Sweeper::Sweeper(const Config& config, Clock& clock, InFlight& inflight, LeaseBook& leases,
                 Instruments& inst, Enqueue enqueue)
    : config_(config),
      clock_(clock),
      inflight_(inflight),
      leases_(leases),
      inst_(inst),
      enqueue_(std::move(enqueue)) {}

void Sweeper::Walk(const std::string& root, const std::string& rel, bool prune_dirs,
                   const std::function<void(const std::string&)>& on_file, std::stop_token stop) {
  // One entry at a time, not the directory listed whole: a flat session kept for a long
  // retention holds millions of markers. An entry `on_file` renames or removes may come again
  // under its new name, or not at all, as readdir has it; a sweep takes either. Subdirectories
  // are walked once this one is closed: one directory open at a time, however deep the tree.
  std::vector<std::string> subdirs;
  const Status listed = fs::ForEachEntry(fs::Join(root, rel), [&](const fs::DirEntry& e) {
    if (stop.stop_requested()) return false;
    const std::string child = rel.empty() ? e.name : rel + "/" + e.name;
    bool is_dir = e.type == DT_DIR;
    if (e.type == DT_UNKNOWN) {
      auto st = fs::Stat(fs::Join(root, child));
      if (!st.ok()) {
        // Unseen, as a directory that cannot be listed: the walk is partial.
        if (st.status().kind() != ErrorKind::kNotFound && unlisted_.empty()) {
          unlisted_ = st.status().ToString();
        }
        return true;
      }
      is_dir = st->is_dir;
    }
    if (is_dir) {
      // Only the date trees are ours to walk at the top level (_replicas etc. are not).
      if (!rel.empty() || IsDateDir(e.name)) subdirs.push_back(child);
    } else if (!rel.empty()) {
      on_file(child);
    }
    return true;
  });
  if (!listed.ok() && listed.kind() != ErrorKind::kNotFound && unlisted_.empty()) {
    unlisted_ = listed.ToString();
  }
  for (const std::string& child : subdirs) {
    if (stop.stop_requested()) return;
    Walk(root, child, prune_dirs, on_file, stop);
    if (prune_dirs) ::rmdir(fs::Join(root, child).c_str());  // fails harmlessly unless empty
  }
}

std::vector<ClaimPath> Sweeper::RecoverOwnClaims(std::stop_token stop) {
  if (stop.stop_requested()) return {};
  // Staging is local to this replica and rebuilt from the claims: clear it. Only the date
  // directories it makes: anything else there (a root set to a shared directory) is not ours.
  if (auto entries = fs::ListDir(config_.staging_root); entries.ok()) {
    for (const auto& e : *entries) {
      if (!IsDateDir(e.name)) continue;
      if (Status s = fs::RemoveTree(fs::Join(config_.staging_root, e.name)); !s.ok()) {
        LogWarn("could not clear staging", {{"error", s.ToString()}});
      }
    }
  }
  std::vector<ClaimPath> own;
  Walk(
      config_.processing_root, "", /*prune_dirs=*/false,
      [&](const std::string& rel) {
        auto c = ParseClaimPath(rel);
        if (c && c->state == ClaimState::kClaimed && c->owner == config_.replica_id) {
          own.push_back(*c);
        }
      },
      stop);
  if (stop.stop_requested()) return {};
  std::sort(own.begin(), own.end(),
            [](const ClaimPath& a, const ClaimPath& b) { return a.Path() < b.Path(); });
  return own;
}

void Sweeper::OnProcessingEntry(const std::string& rel, std::stop_token stop) {
  auto c = ParseClaimPath(rel);
  if (!c) return;  // not ours (e.g. a temp file): never delete what we cannot parse
  const std::string full = fs::Join(config_.processing_root, rel);
  if (c->state == ClaimState::kDone) {
    // Not judged this time: what the last sweep saw of it (written to after its completion)
    // stands, or a late write whose times were set since would be forgotten, and collected.
    const auto keep_last_sighting = [&] {
      if (const auto before = written_candidates_.find(full); before != written_candidates_.end()) {
        written_now_.insert(*before);
      }
    };
    // A worker of ours has yet to look at it after its completion rename.
    if (inflight_.MarkerHeld(c->Path())) return;
    // Another live replica's marker is that replica's to collect: its worker looks at the marker
    // right after the completion rename (a write just before the rename is in it), and holds it
    // from its own sweeps only. A dead replica's are anyone's. One judged dead before and not
    // now (its lease unreadable for a while, then read as changed) may be judged dead again.
    if (c->owner != config_.replica_id && !leases_.IsDead(c->owner)) {
      keep_last_sighting();
      return;
    }
    // Ours by name, but while another live process has our id it may be that process's, held
    // there until its worker has looked (which this process's InFlight cannot tell): left alone
    // until that process is gone, as our claims are.
    if (c->owner == config_.replica_id && leases_.IdInUseElsewhere()) {
      keep_last_sighting();
      return;
    }
    auto st = fs::Stat(full);
    if (!st.ok()) {
      // Not looked at this time (a passing error). Not found: collected by another replica's
      // sweep meanwhile.
      if (st.status().kind() != ErrorKind::kNotFound) keep_last_sighting();
      return;
    }
    // Seen written to by the last sweep: still so, whatever its times now. A producer that sets
    // the times or mode through its descriptor after its last write (cp -p, tar, install -p)
    // moves the ctime past the mtime. So does any change since its worker found it unchanged
    // after the completion rename, when that look is at hand (this process's own markers). A
    // file with other names (hard links), now or at that look, has its ctime moved by their
    // renames and unlinks too: for it only a write (an mtime other than at that look) counts, or
    // two such files would claim each other again for ever. (Other than, not past: an mtime the
    // producer set in the future would be past every look.)
    const std::optional<InFlight::SettledNote> settled = inflight_.SettledMarker(c->Path());
    const bool linked = settled && (settled->linked || st->nlink > 1);
    if (written_candidates_.contains(full) ||
        (settled &&
         (linked ? st->mtime_ns != settled->mtime_ns : st->ctime_ns > settled->ctime_ns))) {
      OnWrittenMarker(*c, full, *st, stop);
      return;
    }
    if (st->mtime_ns == st->ctime_ns) {
      const std::optional<bool> telling = RenameMovesCtime();
      // Cannot tell yet: kept, not collected. No count of it is lost: a candidate exists only
      // once the probe has answered, and its answer is kept for good.
      if (!telling) return;
      if (*telling) {
        OnWrittenMarker(*c, full, *st, stop);
        return;
      }
    }
    // No look of a worker here at hand (an earlier process of ours, a dead replica): that worker
    // may have died between its last check of the claim and its look after the completion
    // rename, and a write in between is then in the marker with its ctime (the rename's) past
    // its mtime, as for any marker. But a file is claimed once it held still for
    // APP_MIN_FILE_AGE_S, so its completion rename comes at least that long after its last
    // write: a marker completed sooner after its mtime is claimed again, and its upload finds
    // whether storage holds these bytes (a HEAD and a read, nothing sent if so). Two seconds at
    // least, for servers that keep whole seconds. As much the other way: a writer's clock ahead
    // of the server's (NFSv4.2 delegated timestamps, a time copied with the bytes) or the
    // server's stepped back may leave the mtime a little past the ctime. Not one whose mtime is
    // far past it: a producer set the time ahead (touch -d), and it would be claimed again at
    // every restart until that time came.
    const auto soon = static_cast<int64_t>(std::max(config_.min_file_age_s, 2.0) * 1e9);
    if (!settled && st->ctime_ns - st->mtime_ns > -soon && st->ctime_ns - st->mtime_ns < soon) {
      const std::optional<bool> telling = RenameMovesCtime();
      if (!telling) return;  // kept, as above
      if (*telling) {
        OnWrittenMarker(*c, full, *st, stop,
                        "a completed file may have been written to just before its completion, "
                        "unseen by a worker that stopped: claimed again, to be checked against its "
                        "blob and uploaded again if need be");
        return;
      }
    }
    // Kept for the retention after its completion, on the clock that set its ctime: the file
    // server's. Measured on this host's, a skew between the two would shorten it (a producer's
    // late write then lost with the marker) or stretch it. Kept while that clock cannot be read.
    std::optional<int64_t> server_now;
    if (config_.completed_retention_s > 0) server_now = ServerNow();
    if (config_.completed_retention_s <= 0 ||
        (server_now &&
         static_cast<double>(*server_now - st->ctime_ns) / 1e9 >= config_.completed_retention_s)) {
      // Asked of the file server before the bytes go: the look above may be this client's cached
      // attributes (NFS, up to acregmax), which another client's late write has not reached.
      // Changed since, or not to be looked at now: kept, for the next sweep to judge.
      const auto fresh = fs::StatFresh(full);
      const bool gone = !fresh.ok() && fresh.status().kind() == ErrorKind::kNotFound;
      if (!gone && !(fresh.ok() && *fresh == *st && fresh->ctime_ns == st->ctime_ns)) return;
      if (gone || ::unlink(full.c_str()) == 0 || errno == ENOENT) {
        inflight_.ForgetSettledMarker(c->Path());
      }
    }
    return;
  }
  owners_with_claims_.insert(c->owner);
  // Seen by this sweep: what the last one saw of it is not carried past a partial walk.
  const bool candidate = orphan_candidates_.erase(c->Path()) > 0;
  if (inflight_.Contains(c->Path())) return;
  if (c->owner == config_.replica_id) {
    // Ours but not in flight: seen twice in a row means no worker holds it. Unless another
    // live process has our id: then it may be that process's, in flight there.
    if (leases_.IdInUseElsewhere()) return;
    orphans_now_.insert(c->Path());
    if (!candidate) return;
    if (!inflight_.Add(c->Path())) return;
    LogWarn("re-queuing an orphaned claim", {{"blob", c->BlobName()}});
    WorkItem item{WorkItem::Kind::kClaim, {}, {}, {}, *c, true, clock_.Now()};
    (void)enqueue_(std::move(item), stop);
    return;
  }
  if (leases_.IsDead(c->owner) && ClaimAs(full, c->WithOwner(config_.replica_id), c->owner,
                                          "took over a claim of a dead replica", stop)) {
    inst_.takeovers.Add();
    return;
  }
  ++others_now_[c->owner];
}

bool Sweeper::ClaimAs(const std::string& full, const ClaimPath& to, const std::string& from,
                      const char* what, std::stop_token stop) {
  if (!inflight_.Add(to.Path())) return false;
  Status s = fs::RenameEntry(full, fs::Join(config_.processing_root, to.Path()));
  if (!s.ok()) {
    inflight_.Remove(to.Path());
    // Once a minute: it is tried again at every sweep, for each claim of a dead replica.
    if (uint64_t held_back = 0;
        s.kind() != ErrorKind::kNotFound &&
        claim_as_failure_log_.Allow(std::chrono::steady_clock::now(), &held_back)) {
      LogWarn(
          std::string(what) + ": failed",
          {{"blob", to.BlobName()}, {"error", s.ToString()}, {"not_logged_since_last", held_back}});
    }
    return false;
  }
  LogWarn(what, {{"blob", to.BlobName()}, {"claim", to.Path()}, {"from", from}});
  WorkItem item{WorkItem::Kind::kClaim, {}, {}, {}, to, true, clock_.Now()};
  (void)enqueue_(std::move(item), stop);
  return true;
}

void Sweeper::OnWrittenMarker(const ClaimPath& done, const std::string& full,
                              const fs::FileStat& st, std::stop_token stop, const char* what) {
  const auto before = written_candidates_.find(full);
  const bool held_still = before != written_candidates_.end() && before->second.size == st.size &&
                          before->second.mtime_ns == st.mtime_ns;
  // Named in the log for what the sweep that held it back saw, unless it was written since.
  if (held_still) what = before->second.what;
  written_now_[full] = {st.size, st.mtime_ns, what};
  if (!held_still) return;  // still written
  if (ClaimAs(full, done.Renewed(config_.replica_id), done.owner, what, stop)) {
    inflight_.ForgetSettledMarker(done.Path());
  }
}

std::optional<int64_t> Sweeper::ServerNow() {
  if (server_now_looked_) return server_now_;
  server_now_looked_ = true;
  server_now_.reset();
  // Made anew each time (one a crash left is removed first): a file's ctime is set when it is
  // made, by the server that holds it.
  const std::string probe = fs::Join(config_.processing_root, "_clock-probe-" + config_.replica_id);
  (void)::unlink(probe.c_str());
  Status failed;
  if (auto fd = fs::CreateExclusive(probe); !fd.ok()) {
    failed = fd.status();
  } else if (auto st = fs::FStatFresh(fd->get()); !st.ok()) {
    failed = st.status();
  } else {
    server_now_ = st->ctime_ns;
  }
  (void)::unlink(probe.c_str());
  if (!failed.ok()) {
    ProbeFailed(
        "completion markers past APP_COMPLETED_RETENTION_S are kept: the file server's "
        "clock cannot be read (a probe file in the processing root)",
        failed);
  }
  return server_now_;
}

void Sweeper::ProbeFailed(const char* what, const Status& s) {
  if (uint64_t held_back = 0; probe_log_.Allow(std::chrono::steady_clock::now(), &held_back)) {
    LogWarn(what, {{"dir", config_.processing_root},
                   {"error", s.ToString()},
                   {"not_logged_since_last", held_back}});
  }
}

std::optional<bool> Sweeper::RenameMovesCtime() {
  if (rename_moves_ctime_) return rename_moves_ctime_;
  // Failed in this sweep already: once per sweep, not once per marker (it can sleep a second).
  if (probe_failed_in_sweep_) return std::nullopt;
  probe_failed_in_sweep_ = true;  // until it returns an answer below
  const std::string probe = "_ctime-probe-" + config_.replica_id;
  const std::string a = fs::Join(config_.processing_root, probe);
  const std::string b = a + ".renamed";
  // Temp files of the probe's write left by a process of ours killed mid-write: only this
  // replica writes this name, and only this thread of it.
  if (auto entries = fs::ListDir(config_.processing_root); entries.ok()) {
    for (const auto& e : *entries) {
      if (fs::AtomicWriteTarget(e.name) == probe) {
        (void)fs::Unlink(fs::Join(config_.processing_root, e.name));
      }
    }
  }
  struct Cleanup {
    const std::string& a;
    const std::string& b;
    ~Cleanup() {
      ::unlink(a.c_str());
      ::unlink(b.c_str());
    }
  } cleanup{a, b};
  const auto fail = [this](const Status& s) {
    ProbeFailed(
        "completion markers that may have been written to after their upload are kept, "
        "neither uploaded again nor collected: whether a rename moves a file's change "
        "time cannot be probed (a probe file in the processing root)",
        s);
    return std::nullopt;
  };
  if (Status w = fs::AtomicWriteFile(a, "probe"); !w.ok()) return fail(w);
  auto before = fs::Stat(a);
  if (!before.ok()) return fail(before.status());
  // The rename must come a timestamp tick after the file's last change to show: a jiffy on a
  // local file system, up to a second on some file servers. Real time, not the injected clock:
  // it is the file system's clock that has to move.
  const std::string* from = &a;
  const std::string* to = &b;
  for (const auto wait : {std::chrono::milliseconds(20), std::chrono::milliseconds(1100)}) {
    std::this_thread::sleep_for(wait);
    if (::rename(from->c_str(), to->c_str()) != 0) {
      return fail(ErrnoStatus("rename " + *from, errno));
    }
    auto after = fs::Stat(*to);
    if (!after.ok()) return fail(after.status());
    if (after->ctime_ns > before->ctime_ns) {
      rename_moves_ctime_ = true;
      probe_failed_in_sweep_ = false;
      return rename_moves_ctime_;
    }
    std::swap(from, to);
  }
  rename_moves_ctime_ = false;
  probe_failed_in_sweep_ = false;
  LogWarn(
      "a rename does not move a file's change time on this volume: a write into a file "
      "after its upload cannot be told, and its completion marker is collected as it is",
      {{"dir", config_.processing_root}});
  return rename_moves_ctime_;
}

void Sweeper::Sweep(std::stop_token stop) {
  leases_.Observe();
  orphans_now_.clear();
  written_now_.clear();
  probe_failed_in_sweep_ = false;
  server_now_looked_ = false;
  owners_with_claims_.clear();
  others_now_.clear();
  unlisted_.clear();
  Walk(
      config_.processing_root, "", /*prune_dirs=*/true,
      [&](const std::string& rel) { OnProcessingEntry(rel, stop); }, stop);
  if (stop.stop_requested()) return;
  // Part of the tree unseen: an orphaned claim or a written-to marker there keeps what the last
  // sweep saw of it, so that a listing failure does not start its count again. Seen so by the
  // next sweep that lists it, it has been so for longer than a sweep: a claim no worker took
  // meanwhile (only the sweeps queue our orphans, and a worker's run renames its claim), a
  // marker that held still. A claim this sweep saw in flight is no candidate any more.
  if (!unlisted_.empty()) {
    orphans_now_.merge(orphan_candidates_);
    written_now_.merge(written_candidates_);
  }
  orphan_candidates_.swap(orphans_now_);
  written_candidates_.swap(written_now_);
  // Part of the tree unseen: a replica whose claims are there may look as if it owned none,
  // and its lease must stay until they are seen.
  if (unlisted_.empty()) leases_.Prune(owners_with_claims_);
  Walk(
      config_.staging_root, "", /*prune_dirs=*/true, [](const std::string&) {}, stop);

  DeadLetters dl;
  Walk(
      config_.failed_root, "", /*prune_dirs=*/false,
      [&](const std::string& rel) {
        auto f = ParseFailedPath(rel);
        if (!f || f->is_reason) return;
        ++dl.count;
        if (dl.sample.size() < 20)
          dl.sample.push_back(f->date + "/" + f->session + "/" + f->RelPath());
      },
      stop);
  if (!unlisted_.empty()) {
    // Claims there are neither taken over nor re-queued, markers not collected, dead letters
    // not counted, until the listing works again.
    // Once a minute, like the warning: a sweep every few seconds would push every other error
    // out of the last 20.
    if (uint64_t held_back = 0; unlisted_log_.Allow(std::chrono::steady_clock::now(), &held_back)) {
      inst_.errors.Add(FormatTimestamp(clock_.WallNow()), "",
                       "the sweep could not list a directory or stat an entry: " + unlisted_);
      LogWarn("the sweep could not list a directory or stat an entry; what is there waits",
              {{"error", unlisted_}, {"not_logged_since_last", held_back}});
    }
  }
  std::map<std::string, OtherReplica> others;
  for (const auto& [owner, claims] : others_now_) others[owner] = {claims, leases_.Silence(owner)};
  std::lock_guard lock(mu_);
  dead_letters_ = std::move(dl);
  other_replicas_ = std::move(others);
}

Sweeper::DeadLetters Sweeper::dead_letters() const {
  std::lock_guard lock(mu_);
  return dead_letters_;
}

std::map<std::string, Sweeper::OtherReplica> Sweeper::other_replicas() const {
  std::lock_guard lock(mu_);
  return other_replicas_;
}

}  // namespace nbu::core
