// Replica liveness read from the volume: each replica rewrites <processing>/_replicas/<id>.lease
// with an increasing sequence number; another replica counts it dead when the file's content has
// not changed for the lease timeout, measured on the observer's own monotonic clock (so clock
// skew between hosts and the NFS server does not matter).
//
// Two live processes with one replica id would each take the other's claims for orphans of its
// own (a cloned VM on the host-name default, a copied Compose service). Each process signs its
// lease with a random instance id: start-up refuses an id whose lease another instance is still
// writing, and a heartbeat that finds another instance's write since its own reports it.
#pragma once

#include "core/config.h"
#include "util/clock.h"
#include "util/status.h"

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <utility>

namespace nbu::core {

struct LeaseText;  // lease.cpp

// Where a pid names one process: this boot of this machine (its boot id) and this process's pid
// namespace. A lease records it, and only a lease of the same pid space can be told a dead
// predecessor's by its pid; empty when it cannot be read.
std::string PidSpace();

class LeaseBook {
 public:
  LeaseBook(const Config& config, Clock& clock);

  // Before the first Heartbeat: whether another live process holds this replica id. A lease of
  // another instance that is not marked stopped, and not left by a process of this pid space
  // (PidSpace) that is gone, is watched for 1.5 heartbeat intervals; an error line when it changed
  // meanwhile to anything but a stop (naming the holder's host and pid), else nothing.
  std::optional<std::string> CheckIdFree(std::stop_token stop);
  // Writes this replica's lease (atomically), after reading it: a write by another instance
  // since our last one means the id is in use twice (IdInUseElsewhere). Thread-safe.
  Status Heartbeat();
  // Whether a heartbeat in the last lease timeout found another instance's write. Thread-safe.
  bool IdInUseElsewhere() const;
  // The last write, at a clean shutdown of a process that wrote a lease: the lease says it
  // stopped, so that a restart with this id need not wait to see whether it is alive.
  // Thread-safe.
  void MarkStopped();
  // Reads every lease and records when each last changed, and removes the temp files that lease
  // writes left behind. Sweep thread only.
  void Observe();
  // True when `owner` has shown no heartbeat for the lease timeout (a replica whose lease file
  // never appeared counts from the first time it was asked about). Never true for this replica.
  // Judged on a read of the lease made now (at most one a second per owner), not on the last
  // Observe: a sweep can run long (it waits while the queue is full), and a read that failed
  // then says nothing. A takeover needs proof of silence: false while the last read failed
  // (other than for a missing file). A failed read is no sign of life either: silence counts
  // across it, so reads that fail now and then only put a takeover off to the next good read.
  // Silence counts only while this replica could write its own lease (Credited): after an
  // outage of the volume (a server rebooting, a write refused for ENOSPC) every lease is stale,
  // and the first replica back must not take the others' claims before they could write
  // theirs. Sweep thread only.
  bool IsDead(const std::string& owner);
  // How long `owner`'s lease has been silent as IsDead counts it, as of its last read; nullopt
  // when that read failed, or none was made. Sweep thread only.
  std::optional<Duration> Silence(const std::string& owner) const;
  // How many other replicas' leases could not be read for a lease timeout or more (warned once
  // each): their claims are not taken over meanwhile. Thread-safe.
  int UnreadableLeases() const { return unreadable_leases_.load(); }
  // Removes lease files of replicas dead for 10 lease timeouts that own nothing any more (that
  // time credited as for IsDead).
  void Prune(const std::set<std::string>& owners_with_claims);
  std::string Dir() const;
  // Between heartbeats (the service's loop beats at it): a quarter of the lease timeout. The
  // count of silence (SilenceSince) takes it for what a gap of ours should be.
  Duration Interval() const;

 private:
  struct Seen {
    std::string content;
    bool known;        // whether content is what the file last held (see Record)
    MonoTime changed;  // in credited time (Credited)
    MonoTime read;     // the last read of the file, failed or not
    // Since when every read failed (other than for a missing file), and whether a warning said
    // so: such a replica is not judged dead, so its claims are not taken over meanwhile.
    std::optional<MonoTime> unreadable_since;
    bool unreadable_told = false;
  };
  // Records a read of `owner`'s lease made at `now`.
  void Record(const std::string& owner, const Result<std::string>& content, MonoTime now);
  std::string PathOf(const std::string& owner) const;
  // Removes `name`, a temp file of a lease write of `owner`'s left behind (see
  // fs::AtomicWriteFile), first listed at `first_seen`, unless a write may still rename it: one
  // listed for less than a lease timeout (a write takes milliseconds; a replica held dead may
  // have just restarted), one of ours in progress, or any of a replica that is not dead. Sweep
  // thread only.
  void RemoveTempIfLeft(const std::string& name, const std::string& owner, MonoTime first_seen);
  Status Write(bool stopped);  // mu_ held
  // This replica's lease as another instance last wrote it; nothing when the last write is
  // ours, or the file cannot be read or parsed. mu_ held.
  std::optional<LeaseText> AnothersLease() const;
  // Now on a clock that stands still while this replica's own heartbeats are late: the steady
  // clock less, for each gap between successful heartbeats (from this object's creation for the
  // first), what the gap took beyond one heartbeat interval, the gap now open included. A late
  // or failed heartbeat now and then only slows it down, where restarting the count would stop
  // takeovers for good. CreditedAt: the same at `now`, credit_mu_ held.
  MonoTime Credited() const;
  MonoTime CreditedAt(MonoTime now) const;
  // How long a lease last changed at `changed` (credited time) has been silent as this replica
  // could have seen it. After a gap of ours longer than half the lease timeout (an outage of the
  // volume that may have held the other replica up too), a lease not yet silent for a lease
  // timeout when the gap began counts from the gap's end: that replica, alive as far as we
  // knew, gets a whole lease timeout to write again, as its client may reconnect later than
  // ours. A lease already silent that long (a replica gone) keeps its count, so gaps now and
  // then only put a dead replica's takeover off by at most about one lease timeout.
  Duration SilenceSince(MonoTime changed) const;
  const Config& config_;
  Clock& clock_;
  const std::string instance_;  // random, per process
  std::mutex mu_;
  uint64_t seq_ = 0;      // guarded by mu_
  bool written_ = false;  // guarded by mu_: this process has written a lease
  // When a heartbeat last found another instance's write (steady-clock ticks + 1; 0: never).
  // Atomic: status reads it while a heartbeat may be stuck in the volume's I/O under mu_.
  std::atomic<int64_t> id_in_use_seen_{0};
  // This replica's own heartbeats, for Credited and SilenceSince: the last successful one's time
  // (this object's creation before the first), what the gaps between them took beyond one
  // interval, and the last gaps longer than half the lease timeout (each one's start and end in
  // credited time; of older ones, only leases silent for long could qualify, whose count may as
  // well go on). Their own mutex: a heartbeat holds mu_ through the volume's I/O, which the
  // sweep must not wait for; one lock, so that no reader sees a gap's end without its excess.
  static constexpr size_t kLongGapsKept = 16;
  mutable std::mutex credit_mu_;
  MonoTime own_write_last_;                              // guarded by credit_mu_
  Duration own_write_excess_{0};                         // guarded by credit_mu_
  std::deque<std::pair<MonoTime, MonoTime>> long_gaps_;  // guarded by credit_mu_
  std::map<std::string, Seen> seen_;                     // sweep thread only
  std::map<std::string, MonoTime> temps_;  // temp files in the last listing, first listed; sweep
  std::atomic<int> unreadable_leases_{0};  // of seen_, those told unreadable
};

}  // namespace nbu::core
