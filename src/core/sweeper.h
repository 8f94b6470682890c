// Recovery and garbage collection over the layout (see layout.h): at start-up it finds this
// replica's unfinished claims and clears staging; every GC interval it removes completion
// markers past retention, prunes empty directories, re-queues this replica's orphaned claims
// (e.g. a claim whose rename reported ENOENT but succeeded) and takes over the claims of dead
// replicas (a rename to this replica's name: exactly one survivor wins).
#pragma once

#include "core/config.h"
#include "core/instruments.h"
#include "core/lease.h"
#include "core/work_item.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/log.h"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <vector>

namespace nbu::core {

class Sweeper {
 public:
  // `enqueue` queues a claim (blocking while the queue is full); false when stopping, and then it
  // has taken the claim out of the in-flight set again.
  using Enqueue = std::function<bool(WorkItem, std::stop_token)>;
  Sweeper(const Config& config, Clock& clock, InFlight& inflight, LeaseBook& leases,
          Instruments& inst, Enqueue enqueue);

  // Start-up: empties staging (copies there are never trusted after a restart) and returns
  // every claim this replica owns, oldest first. Stopped: nothing (a long walk of a large
  // .processing tree must not eat the shutdown's grace).
  std::vector<ClaimPath> RecoverOwnClaims(std::stop_token stop = {});
  // One GC / takeover pass. Sweep thread only.
  void Sweep(std::stop_token stop);

  struct DeadLetters {
    size_t count = 0;
    std::vector<std::string> sample;  // first relative paths
  };
  DeadLetters dead_letters() const;
  // Claims of other replicas that the last sweep left with their owner (alive, or a takeover
  // that failed), by owner: how many, and how long the owner's lease has been silent as this
  // replica counts it (nullopt while it cannot be read). They are taken over once that reaches
  // the lease timeout.
  struct OtherReplica {
    size_t claims = 0;
    std::optional<Duration> silent;
  };
  std::map<std::string, OtherReplica> other_replicas() const;

 private:
  // Calls `on_file` for each file below root/rel. A directory that cannot be listed, or an entry
  // of unknown type that cannot be stat'ed (other than gone meanwhile), is skipped and named in
  // unlisted_.
  void Walk(const std::string& root, const std::string& rel, bool prune_dirs,
            const std::function<void(const std::string& rel)>& on_file, std::stop_token stop);
  void OnProcessingEntry(const std::string& rel, std::stop_token stop);
  // A completion marker whose mtime equals its ctime had a write after its completion rename
  // (which moves only the ctime): a producer that kept the file open and wrote on after a pause
  // longer than the minimum age. Those bytes are not in storage, and collecting the marker would
  // delete them. Once it holds still from one sweep to the next, it becomes a fresh claim of this
  // replica (new nonce, same blob), queued; until then it is neither claimed nor collected, even
  // when its times are set after the write (which moves the ctime past the mtime). A write and
  // such a setting of times both between two sweeps leave the times as the rename did: caught
  // by the ctime its worker noted after the rename (InFlight::SettledMarker), not where that
  // note is not at hand (after a restart, a dead replica's markers).
  // `what` names the claim in the log (the first sweep's, that held the marker back).
  void OnWrittenMarker(const ClaimPath& done, const std::string& full, const fs::FileStat& st,
                       std::stop_token stop,
                       const char* what =
                           "a completed file was written to after its upload: "
                           "uploading it again");
  // Renames the entry at `full` to the claim `to` of this replica and queues it (`what` names
  // the move in the log, `from` the entry's owner). ENOENT: another replica's sweep moved it first,
  // quietly.
  bool ClaimAs(const std::string& full, const ClaimPath& to, const std::string& from,
               const char* what, std::stop_token stop);
  // Whether a rename moves a file's ctime on the processing volume, which the written-marker
  // test needs (a server that does not would have every marker look written to): probed with a
  // file of our own. Unknown (nullopt) while the probe cannot be made: such markers wait.
  std::optional<bool> RenameMovesCtime();
  // The file server's clock now, which set the markers' ctimes (this host's may be skewed from
  // it): the ctime of a file of our own made now. Once per sweep; nullopt when it cannot be made.
  std::optional<int64_t> ServerNow();
  // A probe of the processing root that could not be made: `what` it holds back, said at most
  // every 10 minutes (nothing else shows that markers wait).
  void ProbeFailed(const char* what, const Status& s);

  const Config& config_;
  Clock& clock_;
  InFlight& inflight_;
  LeaseBook& leases_;
  Instruments& inst_;
  Enqueue enqueue_;
  std::set<std::string> orphan_candidates_;   // own claims not in flight at the last sweep
  std::set<std::string> orphans_now_;         // being collected in this sweep
  std::set<std::string> owners_with_claims_;  // collected in this sweep
  std::map<std::string, size_t> others_now_;  // in this sweep: claims left with other replicas
  std::string unlisted_;                      // this sweep's first listing or stat failure
  std::optional<bool> rename_moves_ctime_;    // once probed
  bool probe_failed_in_sweep_ = false;        // the probe could not be made in this sweep
  bool server_now_looked_ = false;            // ServerNow was called in this sweep
  std::optional<int64_t> server_now_;         // its answer
  // Written-to markers seen in the last sweep, and in this one.
  struct WrittenSeen {
    uint64_t size;
    int64_t mtime_ns;
    const char* what;  // OnWrittenMarker's
  };
  std::map<std::string, WrittenSeen> written_candidates_;
  std::map<std::string, WrittenSeen> written_now_;
  LogLimiter unlisted_log_{std::chrono::minutes(1)};
  LogLimiter claim_as_failure_log_{std::chrono::minutes(1)};
  LogLimiter probe_log_{std::chrono::minutes(10)};
  mutable std::mutex mu_;
  DeadLetters dead_letters_;                            // guarded by mu_
  std::map<std::string, OtherReplica> other_replicas_;  // guarded by mu_
};

}  // namespace nbu::core
