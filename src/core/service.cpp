#include "core/service.h"

#include "util/crypto.h"
#include "util/fs.h"
#include "util/log.h"

#include <algorithm>

namespace nbu::core {

using namespace std::chrono_literals;

namespace {

// Each lost race means another replica changed the session; past this many in a row the caller
// is answered with the storage error rather than held up.
constexpr int kSessionSaveAttempts = 8;

std::unique_ptr<ChangeHints> MakeChangeHints(const Config& config) {
  if (!config.change_hints) return nullptr;
  auto hints = std::make_unique<ChangeHints>();
  if (hints->available()) return hints;
  LogWarn("change hints unavailable; the poll alone finds files", {{"error", hints->error()}});
  return nullptr;
}

// What a failed start-up check says of storage. An answer of storage's (one with an error code,
// or any failure but no connection, a timeout or a gateway's bare 5xx: a 400 for an x-ms-version
// that cloud does not take, say) is not "not reachable": the error logged beside it names it.
// A coded server error (500 InternalError) is such an answer, which `degraded` lists as
// storage_unreachable: said so.
const char* StartupTrouble(const Status& s) {
  // A token source failing (refusing us, or answering with no usable token) is kAuth too.
  if (s.kind() == ErrorKind::kAuth) {
    return "storage refuses our credentials, or no token for it could be got";
  }
  if (s.code() == "ContainerBeingDeleted") return "the container is being deleted";
  if (s.kind() == ErrorKind::kUnavailable && !s.code().empty()) {
    return "storage answers the start-up check with a server error";
  }
  const bool answered =
      !s.code().empty() || (s.kind() != ErrorKind::kUnavailable && s.kind() != ErrorKind::kBusy &&
                            s.kind() != ErrorKind::kCancelled);
  return answered ? "storage answers the start-up check with an error"
                  : "storage not reachable yet";
}

// Whether the steady-clock time `at` holds (0: never) is less than a minute before `now`.
bool WithinAMinute(const std::atomic<MonoTime::rep>& at, MonoTime now) {
  const auto t = at.load();
  return t != 0 && now - MonoTime(MonoTime::duration(t)) < 60s;
}

}  // namespace

Service::Service(const Config& config, Clock& clock, azure::BlobClient& blob,
                 telemetry::MetricsRegistry& metrics, const telemetry::Tracer& tracer)
    : config_(config),
      clock_(clock),
      blob_(blob),
      inst_(metrics),
      queue_(static_cast<size_t>(config.max_queue_size)),
      leases_(config, clock),
      sessions_(config.processing_root),
      hints_(MakeChangeHints(config)),
      scanner_(config, clock, queue_, inst_, hints_.get()),
      processor_(FileProcessor::Deps{config, clock, blob, inst_, tracer, inflight_,
                                     [this](const std::string& s, const std::string& rel,
                                            bool held) { scanner_.Forget(s, rel, held); },
                                     &put_blob_crc64_}),
      sweeper_(config, clock, inflight_, leases_, inst_,
               [this](WorkItem item, std::stop_token stop) {
                 return EnqueueClaim(std::move(item), stop);
               }) {
  metrics.AddGauge("queue.capacity", "Capacity of the ready queue", "1",
                   [this] { return static_cast<double>(queue_.capacity()); });
  metrics.AddGauge("files.oldest_pending_age", "Age of the oldest file seen but not yet claimed",
                   "s", [this] { return scanner_.OldestPendingAgeS(); });
  metrics.AddGauge("files.dead_letter", "Files in the dead-letter area", "1",
                   [this] { return static_cast<double>(sweeper_.dead_letters().count); });
  // The degraded states no counter shows (invariant 6): 1 while they last.
  for (const auto& [gauge, trouble, help] :
       {std::tuple{"storage.unreachable", "storage_unreachable",
                   "1 while storage requests fail with no answer (and storage answers no "
                   "other), or with a 408 or a 5xx that is not throttling (and none succeeds)"},
        std::tuple{"storage.refuses_credentials", "storage_refuses_credentials",
                   "1 while storage requests get 401 or 403 (or no token), and none has "
                   "succeeded since"}}) {
    metrics.AddGauge(gauge, help, "1", [this, trouble = std::string(trouble)] {
      const char* now = StorageTrouble();
      return now != nullptr && now == trouble ? 1.0 : 0.0;
    });
  }
  metrics.AddGauge("storage.silent",
                   "1 while a request to storage has moved no byte for a quarter of the stall "
                   "limit (15 s of 60): storage that took it and went silent, shown before the "
                   "request is given up",
                   "1", [this] { return StorageSilent() ? 1.0 : 0.0; });
  metrics.AddGauge(
      "storage.container_missing",
      "1 for a minute after an upload found the container gone and making it again "
      "failed (deleted moments ago, or credentials that may not create it)",
      "1", [this] { return WithinAMinute(inst_.container_missing_at, clock_.Now()) ? 1.0 : 0.0; });
  metrics.AddGauge("volume.failing",
                   "1 while reading claims from the volume fails (ESTALE, EIO...) and no claim "
                   "has been read whole since",
                   "1", [this] { return VolumeFailing() ? 1.0 : 0.0; });
  metrics.AddGauge("lease.write_failing", "1 while this replica cannot write its lease", "1",
                   [this] { return lease_ok_ ? 0.0 : 1.0; });
  metrics.AddGauge("session.unreadable",
                   "1 while the session file cannot be read (starts and stops made through other "
                   "replicas are not seen)",
                   "1", [this] { return session_unreadable_ ? 1.0 : 0.0; });
  metrics.AddGauge("session.lost",
                   "1 after the session file vanished under the active session: nothing is "
                   "watched until a session is started again",
                   "1", [this] { return session_lost_ ? 1.0 : 0.0; });
  metrics.AddGauge("lease.unreadable",
                   "Other replicas whose lease cannot be read (their claims are not taken over)",
                   "1", [this] { return static_cast<double>(leases_.UnreadableLeases()); });
  metrics.AddGauge("replica.id_in_use",
                   "1 while another live process writes this replica's lease (same replica id)",
                   "1", [this] { return leases_.IdInUseElsewhere() ? 1.0 : 0.0; });
}

Service::~Service() {
  if (!stopping_) Shutdown(0s);
}

void Service::Start() {
  started_at_ = clock_.Now();
  started_ = true;
  for (const auto& dir :
       {config_.incoming_dir, config_.processing_root, config_.failed_root, config_.staging_root}) {
    if (Status s = fs::MkdirAll(dir); !s.ok())
      LogWarn("cannot create directory", {{"error", s.ToString()}});
  }
  // The first heartbeat before anything else runs: until our lease is written, a process
  // starting with our id would find it free, and other replicas could judge our first claims by
  // the lease a predecessor left.
  Beat();
  heartbeat_ = std::jthread([this](std::stop_token st) { HeartbeatLoop(st); });
  // Each loop says when it ends: Shutdown cannot join one blocked on a hung volume.
  const auto loop = [this](void (Service::*body)(std::stop_token)) {
    ++loops_running_;
    loops_.emplace_back([this, body](std::stop_token st) {
      (this->*body)(st);
      --loops_running_;
    });
  };
  loop(&Service::StartupLoop);
  loop(&Service::ScanLoop);
  loop(&Service::SweepLoop);
  loop(&Service::OutsideLoop);
  loop(&Service::SilenceLoop);
  if (hints_) loop(&Service::HintLoop);
  for (int i = 0; i < config_.worker_concurrency; ++i) {
    workers_.emplace_back([this](std::stop_token st) { WorkerLoop(st); });
  }
}

bool Service::EnqueueClaim(WorkItem item, std::stop_token stop, bool wait) {
  const std::string claim = item.kind == WorkItem::Kind::kClaim ? item.claim.Path() : "";
  inst_.queue_depth.Add(1);
  bool queued = false;
  if (wait) {
    queued = queue_.Push(std::move(item), stop);
  } else {
    queued = queue_.TryPush(std::move(item));
  }
  if (queued) return true;
  inst_.queue_depth.Add(-1);
  if (!claim.empty()) inflight_.Remove(claim);
  return false;
}

void Service::StartupLoop(std::stop_token stop) {
  for (int attempt = 1; !stop.stop_requested(); ++attempt) {
    Status s = blob_.CreateContainerIfMissing(stop);
    if (s.ok()) s = CheckAccessTier(stop);
    if (s.ok()) {
      const Result<bool> crc64 = ChoosePutBlobCheck(stop);
      if (crc64.ok()) {
        put_blob_crc64_ = *crc64;
        storage_ok_ = true;
        break;
      }
      s = crc64.status();
    }
    if (stop.stop_requested()) return;  // a shutdown ended the check: no trouble of storage's
    LogWarn(StartupTrouble(s), {{"error", s.ToString()}, {"attempt", attempt}});
    // One slot: each try's message holds a new request id.
    inst_.errors.Add(FormatTimestamp(clock_.WallNow()), "", s.ToString(), "start-up");
    clock_.SleepFor(std::min<Duration>(1s * attempt, 30s), stop);
  }
  if (!storage_ok_) return;  // stopped
  const std::vector<ClaimPath> own = sweeper_.RecoverOwnClaims(stop);
  for (const auto& c : own) {
    if (!inflight_.Add(c.Path())) continue;
    WorkItem item{WorkItem::Kind::kClaim, {}, {}, {}, c, true, clock_.Now()};
    if (!EnqueueClaim(std::move(item), stop)) return;
  }
  // Ready once a worker has picked up every claim found here (the queue held only them), not
  // once each is finished: one that cannot finish (staging too small for it, say) must not keep
  // this replica from ever scanning, sweeping or taking over a dead one's claims.
  while (queue_.size() > 0 && !stop.stop_requested()) clock_.SleepFor(20ms, stop);
  if (stop.stop_requested()) return;
  ready_ = true;
  {
    std::lock_guard lock(mu_);
    scan_now_ = true;  // a watch already active is scanned now, not a poll interval on
    wake_scan_.request_stop();
  }
  LogInfo("ready", {{"recovered_claims", own.size()},
                    {"replica", config_.replica_id},
                    {"put_blob_checksum", FileProcessor::PutBlobChecksumName(put_blob_crc64_)}});
}

Status Service::CheckAccessTier(std::stop_token stop) {
  const std::string& tier = config_.azure_access_tier;
  if (tier.empty()) return Status::Ok();
  const std::string probe = ".nbu-probe/tier-" + FastRandomHex(8);
  azure::BlobProperties props;
  props.access_tier = tier;
  Status s = blob_.PutBlob(probe, azure::Body::FromMemory(""), Md5::Of(""), props, stop);
  if (!s.ok()) {
    return Status(s.kind(), "APP_AZURE_ACCESS_TIER=" + tier + ": " + s.message(), s.code());
  }
  if (Status d = blob_.DeleteBlob(probe, stop); !d.ok()) {
    LogWarn("cannot delete the access tier probe blob", {{"error", d.ToString()}});
  }
  return Status::Ok();
}

Result<bool> Service::ChoosePutBlobCheck(std::stop_token stop) {
  if (config_.azure_put_blob_checksum != "auto") return config_.azure_put_blob_checksum == "crc64";
  auto checks = blob_.ChecksCrc64(".nbu-probe/crc64-" + FastRandomHex(8), stop);
  if (checks.ok() && *checks) return true;
  // The start-up's one write (the container may exist already, and a refused create is then
  // let be): a refusal means every upload would be refused too (a SAS without object scope, a
  // role that only reads).
  if (!checks.ok() && checks.status().kind() == ErrorKind::kAuth) {
    return Status(
        ErrorKind::kAuth,
        "a probe blob's write was refused, as every upload would be: " + checks.status().message(),
        checks.status().code());
  }
  if (!checks.ok() && checks.status().kind() == ErrorKind::kCancelled) return checks.status();
  // Storage's trouble (no answer, a 5xx, throttling past every retry, a container being
  // deleted) says nothing of CRC-64: start-up waits and asks again, as for its other checks,
  // rather than settle on MD5 (more CPU per file) for the life of the process. A gateway that
  // fails only this probe for good is told how to skip it.
  if (!checks.ok() && (checks.status().kind() == ErrorKind::kUnavailable ||
                       checks.status().kind() == ErrorKind::kBusy)) {
    return Status(checks.status().kind(),
                  checks.status().message() +
                      " (the CRC-64 probe; where storage works but fails only this probe for good, "
                      "APP_AZURE_PUT_BLOB_CHECKSUM=md5 skips it)",
                  checks.status().code());
  }
  LogWarn(checks.ok() ? "storage does not check x-ms-content-crc64 (an emulator older than "
                        "Azurite 3.37?): files sent in one Put Blob carry an MD5 computed here"
                      : "cannot tell whether storage checks x-ms-content-crc64: files sent in "
                        "one Put Blob carry an MD5 computed here",
          {{"error", checks.ok() ? "" : checks.status().ToString()}});
  return false;
}

void Service::TellNotReadyAtStop(const std::string& session) {
  std::lock_guard lock(mu_);
  if (last_scan_.not_ready == 0) return;
  constexpr std::string_view kWhy =
      "the watch stopped before these files were ready (younger than APP_MIN_FILE_AGE_S, or "
      "changed since first seen): they stay in incoming, not uploaded until the session is "
      "watched again";
  LogWarn(kWhy, {{"session", session},
                 {"count", last_scan_.not_ready},
                 {"example", last_scan_.not_ready_example}});
  inst_.errors.Add(FormatTimestamp(clock_.WallNow()), session + "/" + last_scan_.not_ready_example,
                   std::to_string(last_scan_.not_ready) +
                       (last_scan_.not_ready == 1 ? " file: " : " files: ") + std::string(kWhy));
}

std::optional<SessionState> Service::CurrentSession() const {
  std::lock_guard lock(mu_);
  return session_;
}

void Service::ScanLoop(std::stop_token stop) {
  const Duration interval = FromSeconds(config_.poll_interval_s);
  bool warned = false;
  std::string scanned;                // the session the last scan watched, until it is told stopped
  std::optional<MonoTime> loaded_at;  // when the session file was last read
  while (!stop.stop_requested()) {
    const MonoTime begin = clock_.Now();
    // The session file tells what other replicas started or stopped. It is read once per poll
    // interval, not for every scan that a due file or a change hint brings forward (StartWatch
    // and StopWatch set session_ themselves).
    if (!loaded_at || begin - *loaded_at >= interval) {
      loaded_at = begin;
      const uint64_t writes = [&] {
        std::lock_guard lock(mu_);
        return session_writes_;
      }();
      auto loaded = sessions_.Load();  // not under mu_: a slow volume must not hold up status
      if (loaded.ok()) {
        std::lock_guard lock(mu_);
        if (writes == session_writes_) {  // else it may predate the write
          // Generations only grow: a store that held a session and holds none was removed (by
          // hand, a volume restored). Adopted, as a replica started now would read it, but told.
          // (A stopped session's removal is a clean-up: nothing watched is lost.)
          if (session_ && session_->active && !*loaded && !session_lost_) {
            const std::string why =
                "the session file is gone (its directory removed?): no session is watched until "
                "one is started";
            LogWarn(why, {{"session", session_->name}, {"was_active", session_->active}});
            inst_.errors.Add(FormatTimestamp(clock_.WallNow()), "", why);
            session_lost_ = true;
          }
          if (*loaded) session_lost_ = false;
          session_ = *loaded;
        }
        warned = false;
      } else if (!warned) {
        // A start or stop made through another replica is not seen meanwhile: shown in status.
        const std::string why = "cannot read the session file; acting on the last one read";
        LogWarn(why, {{"error", loaded.status().ToString()}});
        inst_.errors.Add(FormatTimestamp(clock_.WallNow()), "",
                         why + ": " + loaded.status().ToString());
        warned = true;
      }
      // After the recent error: a status that shows the state degraded also shows why.
      session_unreadable_ = !loaded.ok();
    }
    const auto session = [&] {
      std::lock_guard lock(mu_);
      scan_now_ = false;  // what a start, a stop or being ready asked until now is read here
      return session_;
    }();
    if (!scanned.empty() && (!session || !session->active || session->name != scanned)) {
      // One last scan of the stopped session: a file written since the last one (up to a poll
      // interval before, with no change hint on NFS) would else stay in incoming untold. What it
      // finds ready is queued, as a scan under way at the stop queues it; the rest is told.
      ScanSession(scanned, stop);
      TellNotReadyAtStop(scanned);
      scanned.clear();
    }
    if (!session || !session->active) scanner_.Idle();
    if (ready_ && session && session->active) {
      ScanSession(session->name, stop);
      scanned = session->name;
    }
    // Next scan: one poll interval after this one began, or as soon as a pending file comes of
    // age (so a file is queued at its minimum age, not up to a poll interval later), or when a
    // watch starts or stops. Never sooner than 10 ms (or a tenth of the interval) from now.
    const MonoTime now = clock_.Now();
    const Duration min_gap = std::min<Duration>(interval / 10, 10ms);
    MonoTime wake = begin + interval;
    if (const auto due = scanner_.NextDue(); due && *due < wake) wake = *due;
    wake = std::max(wake, now + min_gap);
    // A change hint brings it forward, to no sooner than ten times this scan's length after it
    // began: under a stream of changes, scanning takes at most about a tenth of the time.
    SleepUntilScan(wake, std::max(begin + 10 * (now - begin), now + min_gap), stop);
  }
}

void Service::ScanSession(const std::string& session, std::stop_token stop) {
  const auto stats = scanner_.ScanOnce(session, stop);
  LogDebug("scan", {{"session", session},
                    {"files", stats.files_seen},
                    {"stats", stats.stats},
                    {"queued", stats.queued},
                    {"cpu_ms", stats.cpu_s * 1e3}});
  std::lock_guard lock(mu_);
  if (stats.not_regular > last_scan_.not_regular) {
    LogWarn("entries that are not regular files are not uploaded (symlinks are not followed)",
            {{"session", session},
             {"count", stats.not_regular},
             {"example", stats.not_regular_example}});
  }
  // Each scan looks again, and each time it cannot read them: told when there are more than
  // were told last, else once a minute (a scan every few seconds, or sooner on change hints,
  // would flood the log; so would a fault that comes and goes, or a count that goes up and
  // down, from scan to scan).
  if (uint64_t held_back = 0;
      stats.unreadable > 0 && unreadable_log_.Allow(std::chrono::steady_clock::now(), &held_back,
                                                    stats.unreadable > unreadable_told_)) {
    unreadable_told_ = stats.unreadable;
    LogWarn(
        "files or directories that cannot be read or listed stay in incoming and are not "
        "uploaded",
        {{"session", session},
         {"count", stats.unreadable},
         {"example", stats.unreadable_example},
         {"not_logged_since_last", held_back}});
    inst_.errors.Add(FormatTimestamp(clock_.WallNow()), "",
                     "cannot read " + stats.unreadable_example);
  }
  last_scan_ = stats;
}

void Service::SleepUntilScan(MonoTime wake, MonoTime hinted_wake, std::stop_token stop) {
  while (!stop.stop_requested()) {
    std::stop_source woken;
    {
      std::lock_guard lock(mu_);
      wake_scan_ = woken;
      // A watch started or stopped, or ready, while the loop was awake: its wake ended no sleep.
      if (scan_now_) return;
    }
    // Looked at after `woken` is in place: a hint from here on ends the sleep below. A hint
    // that came during the scan may be about a directory it had already listed.
    if (hinted_.exchange(false)) wake = std::min(wake, hinted_wake);
    const MonoTime now = clock_.Now();
    if (now >= wake) return;
    std::stop_callback forward(stop, [&] { woken.request_stop(); });
    if (clock_.SleepFor(wake - now, woken.get_token())) return;
    if (!hinted_.load()) return;  // a watch started or stopped, or ready: scan now
  }
}

void Service::HintLoop(std::stop_token stop) {
  while (hints_->Wait(stop)) {
    hinted_ = true;
    {
      std::lock_guard lock(mu_);
      wake_scan_.request_stop();
    }
    clock_.SleepFor(5ms, stop);  // the events of the next 5 ms make one hint
  }
  if (!stop.stop_requested()) {
    LogWarn("change hints stopped (waiting for inotify failed); the poll alone finds files",
            {{"error", hints_->error()}});
  }
}

void Service::WorkerLoop(std::stop_token stop) {
  while (auto item = queue_.Pop(stop)) {
    inst_.queue_depth.Add(-1);
    processor_.Process(std::move(*item), stop);
  }
}

void Service::SweepLoop(std::stop_token stop) {
  while (!stop.stop_requested() && !ready_) clock_.SleepFor(50ms, stop);
  while (!stop.stop_requested()) {
    sweeper_.Sweep(stop);
    clock_.SleepFor(FromSeconds(config_.gc_interval_s), stop);
  }
}

bool Service::StorageSilent() const {
  return blob_.LongestSilence() >= std::chrono::nanoseconds(blob_.StallTime()) / 4;
}

void Service::SilenceLoop(std::stop_token stop) {
  bool told = false;
  while (clock_.SleepFor(1s, stop)) {
    if (const bool silent = StorageSilent(); silent != told) {
      told = silent;
      if (silent) {
        LogWarn(
            "storage_silent: a request to storage has moved no byte for a quarter of the stall "
            "limit (storage silent, or slow to answer one); it is given up at the limit and "
            "tried again",
            {{"silent_s", ToSeconds(blob_.LongestSilence())},
             {"stall_limit_s", blob_.StallTime().count()}});
      } else {
        LogInfo("storage_silent over: bytes moved, or the silent try is past", {});
      }
    }
  }
}

void Service::OutsideLoop(std::stop_token stop) {
  while (!stop.stop_requested() && !ready_) clock_.SleepFor(50ms, stop);
  // The watch `session` names (an empty name: none), as the status and the log see it.
  const auto watched = [this] {
    auto session = CurrentSession();
    if (!session || !session->active) session.emplace();
    return *session;
  };
  const auto same = [](const SessionState& a, const SessionState& b) {
    return a.name == b.name && a.started_at == b.started_at;
  };
  SessionState looked;  // the watch of the last look
  MonoTime looked_at{};
  size_t told = 0;  // the highest count told in this watch
  while (!stop.stop_requested()) {
    const SessionState session = watched();
    const bool started = !same(session, looked);
    if (started) told = 0;
    if (!session.name.empty() && (started || clock_.Now() - looked_at >= 60s)) {
      Scanner::Outside outside = scanner_.LookOutside(session.name, stop);
      looked_at = clock_.Now();  // after the look: a slow one is not followed by another at once
      if (stop.stop_requested() || !same(watched(), session)) {
        looked = session;  // stopped, or the watch changed meanwhile: its result is stale
        continue;
      }
      // Told when the count passes the highest told in this watch: one that goes up and down
      // (a stray producer, someone cleaning up) is not news each time.
      if (outside.count > told) {
        told = outside.count;
        const std::string why =
            "files outside the watched session's directory are not uploaded (a session is a "
            "directory of incoming; start a watch of theirs to upload them)";
        LogWarn(
            why,
            {{"session", session.name}, {"count", outside.count}, {"example", outside.example}});
        inst_.errors.Add(FormatTimestamp(clock_.WallNow()), "", why + ": " + outside.example);
      }
      std::lock_guard lock(mu_);
      outside_ = std::move(outside);
      outside_of_ = session;
    }
    looked = session;
    clock_.SleepFor(1s, stop);  // a new watch is looked at within a second
  }
}

void Service::Beat() {
  Status s = leases_.Heartbeat();
  if (!s.ok() && lease_ok_.exchange(false)) {
    LogWarn("cannot write the lease; other replicas may take over our claims",
            {{"error", s.ToString()}});
  } else if (s.ok()) {
    lease_ok_ = true;
  }
}

void Service::HeartbeatLoop(std::stop_token stop) {
  while (clock_.SleepFor(leases_.Interval(), stop)) Beat();
}

bool Service::Shutdown(Duration grace) {
  if (stopping_.exchange(true)) return true;
  LogInfo("shutting down", {{"grace_s", ToSeconds(grace)}, {"in_flight", inflight_.size()}});
  const MonoTime begun = clock_.Now();
  for (auto& t : loops_) t.request_stop();  // the heartbeat goes on while uploads finish
  // Nothing new is taken: the queued items are dropped, and a loop's push fails from here. Their
  // files stay in incoming or claimed: nothing lost. A claim item (recovered, orphaned, taken
  // over, revived) was counted in flight when queued; it is not any more.
  queue_.Close();
  // Nor is an item a worker holds but has not begun: one waiting for a claim's lone run would
  // otherwise hold the shutdown for its grace, and then begin an upload only to be stopped.
  processor_.BeginNoMore();
  const auto dropped = queue_.Clear();
  for (const auto& item : dropped) {
    if (item.kind == WorkItem::Kind::kClaim) inflight_.Remove(item.claim.Path());
  }
  inst_.queue_depth.Add(-static_cast<double>(dropped.size()));
  // The loops and the files in flight get the grace together. A scan, sweep or look blocked in a
  // call to a hung volume (a hard mount whose server is gone) may never return: it is left to the
  // process exit, as a worker still blocked after its stop is.
  const auto settled = [&] { return loops_running_ == 0 && inflight_.size() == 0; };
  while (!settled() && clock_.Now() < begun + grace) clock_.SleepFor(20ms, {});
  if (!settled()) {
    if (inflight_.size() > 0) {
      LogWarn("grace period over; unfinished files are left for recovery",
              {{"in_flight", inflight_.size()}});
    }
    // Stopped workers abort their requests (within about a second) and hand their claims' runs
    // back (see ClaimPath::runs).
    for (auto& w : workers_) w.request_stop();
    const MonoTime deadline = clock_.Now() + std::chrono::seconds(3);
    while (!settled() && clock_.Now() < deadline) clock_.SleepFor(20ms, {});
  }
  if (!settled()) {
    if (loops_running_ > 0) {
      LogWarn("a scan, sweep or look is still blocked on the volume; left to the process exit",
              {{"in_flight", inflight_.size()}});
    }
    heartbeat_.request_stop();
    return false;
  }
  loops_.clear();    // joins: each has ended
  workers_.clear();  // joins
  heartbeat_ = {};   // stops and joins: nothing of ours is in flight any more
  leases_.MarkStopped();
  return true;
}

Service::WatchError Service::UpdateSession(
    const std::function<WatchError(const SessionRead&, SessionState*)>& decide, SessionState* next,
    std::string* error) {
  for (int attempt = 1;; ++attempt) {
    uint64_t generation = 0;
    const SessionRead loaded = sessions_.Load(&generation);
    if (const WatchError refused = decide(loaded, next); refused != WatchError::kNone) {
      return refused;
    }
    Status st = sessions_.Save(*next, generation);
    if (st.kind() == ErrorKind::kConflict && attempt < kSessionSaveAttempts) continue;
    if (!st.ok()) {
      *error = st.ToString();
      return WatchError::kStorage;
    }
    return WatchError::kNone;
  }
}

Service::WatchError Service::StartWatch(const std::string& name, SessionState* out,
                                        std::string* error) {
  std::lock_guard watch(watch_mu_);  // orders this process only; replicas race on the volume
  SessionState s;
  const WatchError result = UpdateSession(
      [&](const SessionRead& loaded, SessionState* next) {
        if (!loaded.ok() && loaded.status().kind() != ErrorKind::kPermanent) {
          *error = loaded.status().ToString();
          return WatchError::kStorage;
        }
        if (!loaded.ok()) {
          // A damaged session file must not lock the operator out: the new session replaces it.
          LogWarn("session file unreadable; replacing it", {{"error", loaded.status().ToString()}});
        } else if (*loaded && (*loaded)->active) {
          *out = **loaded;
          return WatchError::kAlreadyActive;
        }
        *next = SessionState{name, FormatTimestamp(clock_.WallNow()), true, ""};
        return WatchError::kNone;
      },
      &s, error);
  if (result != WatchError::kNone) return result;
  if (Status st = fs::MkdirBelow(config_.incoming_dir, fs::Join(config_.incoming_dir, name));
      !st.ok()) {
    LogWarn("cannot create the session directory", {{"error", st.ToString()}});
  }
  {
    std::lock_guard lock(mu_);
    session_ = s;
    ++session_writes_;
    session_lost_ = false;
    scan_now_ = true;
    wake_scan_.request_stop();  // scan now rather than at the next poll
  }
  *out = s;
  LogInfo("watch started", {{"session", name}});
  return WatchError::kNone;
}

Service::WatchError Service::StopWatch(SessionState* out, std::string* error) {
  std::lock_guard watch(watch_mu_);
  const std::optional<SessionState> known = CurrentSession();
  SessionState s;
  // A lost race decides again on the winner's state, so a session that another replica stopped
  // is not stopped twice, and one it started meanwhile is the one stopped, not erased.
  const WatchError result = UpdateSession(
      [&](const SessionRead& loaded, SessionState* next) {
        if (!loaded.ok() && loaded.status().kind() != ErrorKind::kPermanent) {
          *error = loaded.status().ToString();
          return WatchError::kStorage;
        }
        if (!loaded.ok()) {
          // A damaged session file must not keep the operator from stopping: a stopped session
          // replaces it, under the name this replica last read.
          LogWarn("session file unreadable; replacing it", {{"error", loaded.status().ToString()}});
          *next = known.value_or(SessionState{"unknown", "", false, ""});
        } else if (!*loaded || !(*loaded)->active) {
          return WatchError::kNotActive;
        } else {
          *next = **loaded;
        }
        next->active = false;
        next->stopped_at = FormatTimestamp(clock_.WallNow());
        return WatchError::kNone;
      },
      &s, error);
  if (result != WatchError::kNone) return result;
  {
    std::lock_guard lock(mu_);
    session_ = s;
    ++session_writes_;
    session_lost_ = false;
    scan_now_ = true;
    wake_scan_.request_stop();  // the stopped session's last scan now, not at the next poll
  }
  *out = s;
  LogInfo("watch stopped", {{"session", s.name}});
  return WatchError::kNone;
}

Service::RetryOutcome Service::RetryFailed() {
  RetryOutcome out;
  // A second walk beside the first (a client's retry after its timeout) would only race it for
  // the same files and double the load on the volume.
  const std::unique_lock one(retry_mu_, std::try_to_lock);
  if (!one.owns_lock()) {
    out.busy = true;
    return out;
  }
  for (auto& c : processor_.ReviveDeadLetters(&out.errors, &out.errors_unlisted)) {
    if (!inflight_.Add(c.Path())) continue;
    WorkItem item{WorkItem::Kind::kClaim, {}, {}, {}, c, true, clock_.Now()};
    if (EnqueueClaim(std::move(item), {}, /*wait=*/false)) {
      ++out.queued;
    } else {
      ++out.left;
    }
  }
  return out;
}

nlohmann::json Service::StatusJson() const {
  const auto session = CurrentSession();
  const bool watching = session && session->active;
  std::string state = !ready_ ? "starting" : watching ? "watching" : "idle";
  if (stopping_) state = "stopping";
  nlohmann::json s;
  s["state"] = state;
  s["ready"] = ready();
  s["replica"] = config_.replica_id;
  s["session"] = session ? nlohmann::json{{"name", session->name},
                                          {"started_at", session->started_at},
                                          {"active", session->active}}
                         : nlohmann::json(nullptr);
  s["session_name"] = session ? nlohmann::json(session->name) : nlohmann::json(nullptr);
  auto v = [](const telemetry::Counter& c) { return static_cast<uint64_t>(c.Value()); };
  auto sum = [](const telemetry::Counter& c) {  // over its series, whatever their attributes
    uint64_t total = 0;
    for (const auto& [attrs, value] : c.Series()) total += static_cast<uint64_t>(value);
    return total;
  };
  const auto dl = sweeper_.dead_letters();
  s["counters"] = {{"discovered", v(inst_.files_discovered)},
                   {"queued", queue_.size()},
                   {"in_progress", inflight_.size()},
                   {"uploaded", v(inst_.files_processed)},
                   {"failed", v(inst_.files_failed)},
                   {"recovered", v(inst_.files_recovered)},
                   {"skipped_existing", v(inst_.files_skipped)},
                   {"superseded", v(inst_.files_superseded)},
                   {"bytes_uploaded", v(inst_.bytes_uploaded)},
                   {"claim_conflicts", v(inst_.claim_conflicts)},
                   {"takeovers", v(inst_.takeovers)},
                   {"retries", sum(inst_.retries)},
                   {"throttled", v(inst_.throttled)},
                   {"checksum_mismatches", sum(inst_.checksum_mismatches)}};
  // Flat copies of the main counters for scripts.
  for (const char* k : {"discovered", "queued", "in_progress", "uploaded", "failed", "recovered",
                        "bytes_uploaded"}) {
    s[k] = s["counters"][k];
  }
  {
    std::lock_guard lock(mu_);
    // Only what was found beside the watch now active: none with no watch, and none for a new
    // watch until its first look is done.
    const bool current = session_ && session_->active && session_->name == outside_of_.name &&
                         session_->started_at == outside_of_.started_at;
    const Scanner::Outside& outside = current ? outside_ : Scanner::Outside{};
    s["outside_session"] = {
        {"entries", outside.count}, {"example", outside.example}, {"unchecked", outside.unchecked}};
    s["last_scan"] = {{"files", last_scan_.files_seen},
                      {"stats", last_scan_.stats},
                      {"queued", last_scan_.queued},
                      {"not_regular", last_scan_.not_regular},
                      {"unreadable", last_scan_.unreadable},
                      {"ignored", last_scan_.ignored},
                      {"ignored_example", last_scan_.ignored_example},
                      {"not_ready", last_scan_.not_ready},
                      {"not_ready_example", last_scan_.not_ready_example},
                      {"wall_ms", last_scan_.wall_s * 1e3},
                      {"cpu_ms", last_scan_.cpu_s * 1e3}};
  }
  if (hints_) {
    const auto h = hints_->stats();
    s["change_hints"] = {{"enabled", true}, {"watched_dirs", h.watches}, {"limited", h.limited}};
  } else {
    s["change_hints"] = {{"enabled", false}};
  }
  // What storage checks a file sent in one Put Blob against, once the start-up check has chosen.
  if (storage_ok_) s["put_blob_checksum"] = FileProcessor::PutBlobChecksumName(put_blob_crc64_);
  s["queue_depth"] = queue_.size();
  s["queue_capacity"] = queue_.capacity();
  s["oldest_pending_age_s"] = scanner_.OldestPendingAgeS();
  const auto w = inst_.recent.Summarize(clock_.Now());
  s["last_minute"] = {{"files_per_s", w.files_per_s},
                      {"mb_per_s", w.mb_per_s},
                      {"latency_s", {{"p50", w.p50_s}, {"p95", w.p95_s}, {"p99", w.p99_s}}},
                      {"samples", w.samples}};
  s["dead_letter"] = {{"count", dl.count}, {"files", dl.sample}};
  nlohmann::json others = nlohmann::json::object();
  for (const auto& [owner, o] : sweeper_.other_replicas()) {
    others[owner] = {{"claims", o.claims},
                     {"silent_s", o.silent ? nlohmann::json(ToSeconds(*o.silent)) : nullptr}};
  }
  s["other_replicas"] = std::move(others);
  nlohmann::json errs = nlohmann::json::array();
  for (const auto& e : inst_.errors.Snapshot()) {
    errs.push_back({{"time", e.time}, {"file", e.file}, {"error", e.error}, {"count", e.count}});
  }
  s["recent_errors"] = errs;
  nlohmann::json degraded = nlohmann::json::array();
  if (const char* trouble = StorageTrouble()) degraded.push_back(trouble);
  if (StorageSilent()) degraded.push_back("storage_silent");
  if (VolumeFailing()) degraded.push_back("volume_failing");
  if (!lease_ok_) degraded.push_back("lease_write_failing");
  if (session_unreadable_) degraded.push_back("session_unreadable");
  if (session_lost_) degraded.push_back("session_lost");
  if (leases_.UnreadableLeases() > 0) degraded.push_back("lease_unreadable");
  if (leases_.IdInUseElsewhere()) degraded.push_back("replica_id_in_use");
  for (const auto& [at, name] : {std::pair{&inst_.staging_full_at, "staging_full"},
                                 std::pair{&inst_.staging_failing_at, "staging_failing"},
                                 std::pair{&inst_.throttled_at, "storage_throttling"},
                                 std::pair{&inst_.container_missing_at, "container_missing"}}) {
    if (WithinAMinute(*at, clock_.Now())) degraded.push_back(name);
  }
  if (dl.count > 0) degraded.push_back("dead_lettered_files");
  if (queue_.HoldsPushes()) degraded.push_back("queue_full");
  s["degraded"] = degraded;
  s["uptime_s"] = started_ ? ToSeconds(clock_.Now() - started_at_) : 0.0;
  return s;
}

}  // namespace nbu::core
