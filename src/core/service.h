// The service: wires the scanner, the bounded queue, the worker pool, the sweeper and the lease
// heartbeat together, runs start-up recovery, and answers the API's questions. Thread-safe.
#pragma once

#include "azure/blob_client.h"
#include "core/change_hints.h"
#include "core/config.h"
#include "core/file_processor.h"
#include "core/instruments.h"
#include "core/lease.h"
#include "core/scanner.h"
#include "core/session_store.h"
#include "core/sweeper.h"
#include "core/work_queue.h"
#include "telemetry/metrics.h"
#include "telemetry/tracing.h"
#include "util/log.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace nbu::core {

class Service {
 public:
  Service(const Config& config, Clock& clock, azure::BlobClient& blob,
          telemetry::MetricsRegistry& metrics, const telemetry::Tracer& tracer);
  ~Service();

  // Before Start: an error line when another live process uses this replica id (see
  // LeaseBook::CheckIdFree; can wait 1.5 heartbeat intervals).
  std::optional<std::string> CheckReplicaIdFree(std::stop_token stop) {
    return leases_.CheckIdFree(stop);
  }
  // Starts every thread. Start-up (container check, recovery) runs in the background; ready()
  // turns true when it has finished.
  void Start();
  // Graceful stop: no more discovery, and the queued items are dropped (their files stay in
  // incoming or claimed); in-flight files and the loops get `grace`, then the workers are
  // stopped; what is left stays claimed for recovery. Returns false when a worker, or a scan or
  // sweep (blocked on a hung volume), was still running 3 s after that (its thread is not
  // joined: the caller ends the process).
  bool Shutdown(Duration grace);

  // Ready once started and recovered, until a shutdown begins.
  bool ready() const { return ready_.load() && !stopping_.load(); }
  bool stopping() const { return stopping_.load(); }
  // True once Start ran: before, nothing may change the volume (see CheckReplicaIdFree).
  bool started() const { return started_.load(); }

  enum class WatchError { kNone, kAlreadyActive, kNotActive, kStorage };
  // Starts watching <incoming>/<name> (the name is already validated). Persisted on the volume.
  WatchError StartWatch(const std::string& name, SessionState* out, std::string* error);
  WatchError StopWatch(SessionState* out, std::string* error);
  // Moves dead-lettered files back into the pipeline as claims of this replica. It never waits
  // for room: a claim the queue has no room for now is left to the sweeper, which queues this
  // replica's claims that no worker holds within two sweeps. One retry at a time: another asked
  // for meanwhile does nothing (`busy`).
  struct RetryOutcome {
    size_t queued = 0;
    size_t left = 0;                  // to the sweeper
    std::vector<std::string> errors;  // the first FileProcessor::kMaxListedErrors
    size_t errors_unlisted = 0;       // past those
    bool busy = false;
  };
  RetryOutcome RetryFailed();
  nlohmann::json StatusJson() const;

  Instruments& instruments() { return inst_; }

  // Tests: the scanner's fault hook (Scanner::SetFailForTest), set before Start.
  void SetScanHookForTest(Scanner::FailForTest hook) { scanner_.SetFailForTest(std::move(hook)); }

 private:
  void StartupLoop(std::stop_token stop);
  // With APP_AZURE_ACCESS_TIER set, one empty blob written with it (and deleted): an account
  // that refuses the tier (premium block blob: 400 UnsupportedHeader; GPv1:
  // BlobAccessTierNotSupportedForAccountType) would refuse every upload, and a 400 dead-letters
  // the file. Start-up waits instead, naming the variable, until storage takes it (an account
  // upgraded in place) or the setting is changed.
  Status CheckAccessTier(std::stop_token stop);
  // Before any upload: whether files sent in one Put Blob carry a CRC-64 for storage to check
  // (APP_AZURE_PUT_BLOB_CHECKSUM; auto asks storage whether it checks one) or an MD5. With
  // auto, that question's write refused (401, 403) fails the start-up check.
  Result<bool> ChoosePutBlobCheck(std::stop_token stop);
  // Reads the session, lets `decide` turn what it read into the state to publish in *next (or
  // refuse: any other result than kNone, returned as it is), and publishes that as a
  // compare-and-swap on the generation read (session_store.h): when another replica changed the
  // session in between, `decide` runs again on what that one wrote.
  using SessionRead = Result<std::optional<SessionState>>;
  WatchError UpdateSession(
      const std::function<WatchError(const SessionRead&, SessionState*)>& decide,
      SessionState* next, std::string* error);
  void ScanLoop(std::stop_token stop);
  // One scan of `session`'s directory, its trouble told and its stats kept as the last scan's.
  void ScanSession(const std::string& session, std::stop_token stop);
  void WorkerLoop(std::stop_token stop);
  void SweepLoop(std::stop_token stop);
  // The look beside the watched session has a thread of its own: on a slow volume, its up to
  // 20,000 entries of calls must hold up neither the scans nor the sweeps (takeovers).
  void OutsideLoop(std::stop_token stop);
  void Beat();  // one lease write, its trouble shown as lease_write_failing
  void HeartbeatLoop(std::stop_token stop);
  void HintLoop(std::stop_token stop);
  // Sleeps until `wake`, or until a watch starts or stops, or, once a change is hinted, until
  // `hinted_wake` when that is sooner.
  void SleepUntilScan(MonoTime wake, MonoTime hinted_wake, std::stop_token stop);
  // Queues an item, waiting for room unless `wait` is false. A claim item is counted in flight
  // before it is queued: one that cannot be queued is not counted any more.
  bool EnqueueClaim(WorkItem item, std::stop_token stop, bool wait = true);
  std::optional<SessionState> CurrentSession() const;
  // A request to storage has moved no byte for a quarter of the stall limit (15 s of 60): the
  // status and a gauge say so while it lasts, long before the request is given up.
  bool StorageSilent() const;
  // Tells storage_silent's start and end, once a second: a thread of its own, since a silent
  // storage holds up the workers, and so the scan loop on a full queue.
  void SilenceLoop(std::stop_token stop);
  // The watch of `session` stopped (or another started), and its directory was scanned once
  // more: the files that scan saw and had not queued stay in incoming, which a warning and the
  // recent errors say.
  void TellNotReadyAtStop(const std::string& session);
  // What storage's answers to this replica say is wrong with it (see StorageHealth), held
  // past the longest pause between the tries of a file that waits on storage: a request's retry
  // delay and a file's backoff (each at most APP_AZURE_RETRY_MAX_S) and a stalled transfer's
  // minute. Null when nothing is.
  const char* StorageTrouble() const {
    return inst_.storage.Trouble(clock_.Now(), FromSeconds(2 * config_.azure_retry_max_s + 60));
  }
  // Whether the volume fails to read claims (see VolumeHealth), held as long: a file waits on
  // it with the same backoff.
  bool VolumeFailing() const {
    return inst_.volume.Failing(clock_.Now(), FromSeconds(2 * config_.azure_retry_max_s + 60));
  }

  const Config& config_;
  Clock& clock_;
  azure::BlobClient& blob_;
  Instruments inst_;
  BoundedQueue<WorkItem> queue_;
  InFlight inflight_;
  LeaseBook leases_;
  SessionStore sessions_;
  std::unique_ptr<ChangeHints> hints_;  // null when off or unavailable
  Scanner scanner_;
  FileProcessor processor_;
  Sweeper sweeper_;

  std::atomic<bool> ready_{false};
  std::atomic<bool> started_{false};
  std::atomic<bool> storage_ok_{false};
  std::atomic<bool> put_blob_crc64_{false};  // see ChoosePutBlobCheck
  std::atomic<bool> lease_ok_{true};
  // The scan loop's last read of the session file failed: it acts on what it read before.
  std::atomic<bool> session_unreadable_{false};
  // The session file vanished under a session this replica had read (see ScanLoop), until a
  // session is read or written again.
  std::atomic<bool> session_lost_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> hinted_{false};  // a change hint arrived since the scan loop last looked
  MonoTime started_at_{};
  mutable std::mutex mu_;
  // Serialises StartWatch and StopWatch, held across their session-file I/O (which mu_ must not
  // be: status takes mu_, and a hung NFS server would hold it up).
  std::mutex watch_mu_;
  std::mutex retry_mu_;                  // held by the one retry under way
  std::optional<SessionState> session_;  // guarded by mu_ (cache of the session file)
  // Guarded by mu_: bumped by each StartWatch and StopWatch, so the scan loop does not cache a
  // read of the session file that began before one of them wrote it.
  uint64_t session_writes_ = 0;
  std::stop_source wake_scan_;  // guarded by mu_; ends the scan loop's current sleep
  // Guarded by mu_: since the scan loop last read the session, a watch started or stopped, or the
  // replica became ready (a watch active since before then can be scanned now). A wake sent
  // while the loop is awake ends no sleep; this makes its next sleep end at once.
  bool scan_now_ = false;
  Scanner::Stats last_scan_;  // guarded by mu_
  LogLimiter unreadable_log_{std::chrono::minutes(1)};
  // How many unreadable entries the last warning counted. Scan thread only.
  size_t unreadable_told_ = 0;
  // What incoming holds beside the watched session's directory (Scanner::LookOutside), looked
  // at by OutsideLoop when a watch starts and once a minute while it lasts.
  Scanner::Outside outside_;  // guarded by mu_
  SessionState outside_of_;   // guarded by mu_: the watch outside_ was found beside
  std::vector<std::jthread> workers_;
  std::vector<std::jthread> loops_;
  std::atomic<int> loops_running_{0};  // loops_ whose body has not returned
  // Stopped last: while a shutdown's grace lets uploads finish, other replicas must not find
  // the lease silent and take their claims over.
  std::jthread heartbeat_;
};

}  // namespace nbu::core
