// Replica liveness read from the volume: each replica rewrites <processing>/_replicas/<id>.lease
// with an increasing sequence number; another replica counts it dead when the file's content has
// not changed for the lease timeout, measured on the observer's own monotonic clock (so clock
// skew between hosts and the NFS server does not matter).
#pragma once

#include "core/config.h"
#include "util/clock.h"
#include "util/status.h"

#include <map>
#include <mutex>
#include <set>
#include <string>

namespace nbu::core {

class LeaseBook {
 public:
  LeaseBook(const Config& config, Clock& clock) : config_(config), clock_(clock) {}

  // Writes this replica's lease (atomically). Thread-safe.
  Status Heartbeat();
  // Reads every lease and records when each last changed. Sweep thread only.
  void Observe();
  // True when `owner` has shown no heartbeat for the lease timeout (a replica whose lease file
  // never appeared counts from the first time it was asked about). Never true for this replica.
  // Judged on a read of the lease made now (at most one a second per owner), not on the last
  // Observe: a sweep can run long (it waits while the queue is full), and a read that failed
  // then says nothing. A read that fails now, other than for a missing file, counts as a sign
  // of life: a takeover needs proof of silence. Sweep thread only.
  bool IsDead(const std::string& owner);
  // Removes lease files of replicas dead for 10 lease timeouts that own nothing any more.
  void Prune(const std::set<std::string>& owners_with_claims);
  std::string Dir() const;

 private:
  struct Seen {
    std::string content;
    MonoTime changed;
    MonoTime read;  // the last read of the file, failed or not
  };
  // Records a read of `owner`'s lease made at `now`.
  void Record(const std::string& owner, const Result<std::string>& content, MonoTime now);
  std::string PathOf(const std::string& owner) const;
  const Config& config_;
  Clock& clock_;
  std::mutex mu_;
  uint64_t seq_ = 0;                  // guarded by mu_
  std::map<std::string, Seen> seen_;  // sweep thread only
};

}  // namespace nbu::core
