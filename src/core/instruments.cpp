#include "core/instruments.h"

#include <algorithm>
#include <cmath>

namespace nbu::core {

namespace {
// Stores `value` unless `at` already holds a later one (tries end out of order across threads).
void StoreLater(std::atomic<int64_t>& at, int64_t value) {
  int64_t seen = at.load(std::memory_order_relaxed);
  while (seen < value && !at.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}
}  // namespace

// failed_ packs a failed try's outcome into its low 3 bits.
static_assert(static_cast<int>(azure::TryOutcome::kUnreachable) <= 7 &&
              static_cast<int>(azure::TryOutcome::kRefused) <= 7 &&
              static_cast<int>(azure::TryOutcome::kServerError) <= 7);

void StorageHealth::Record(azure::TryOutcome outcome, MonoTime now) {
  const int64_t ns = now.time_since_epoch().count() + 1;  // 0 stays "never"
  if (outcome == azure::TryOutcome::kSucceeded) StoreLater(succeeded_, ns);
  if (outcome == azure::TryOutcome::kSucceeded || outcome == azure::TryOutcome::kAnswered) {
    StoreLater(answered_, ns);
  } else {
    StoreLater(failed_, (ns << 3) | static_cast<int64_t>(outcome));
  }
}

const char* StorageHealth::Trouble(MonoTime now, Duration hold) const {
  const int64_t failed = failed_.load(std::memory_order_relaxed);
  if (failed == 0) return nullptr;
  const MonoTime failed_at{MonoTime::duration((failed >> 3) - 1)};
  const auto outcome = static_cast<azure::TryOutcome>(failed & 7);
  const bool refused = outcome == azure::TryOutcome::kRefused;
  // Storage that answers proves it is reachable; only one that does what we ask proves that it
  // takes our credentials (a SAS that may read but not write gets 404s and 403s), or that it
  // works where it answered with a server error (a gateway's 507 to every write, while a file's
  // HEAD before its upload is answered 404).
  const int64_t answered = (outcome == azure::TryOutcome::kUnreachable ? answered_ : succeeded_)
                               .load(std::memory_order_relaxed);
  if (answered != 0) {
    const MonoTime answered_at{MonoTime::duration(answered - 1)};
    if (answered_at >= failed_at || failed_at - answered_at < kAnsweredRecently) return nullptr;
  }
  if (now - failed_at > hold) return nullptr;
  return refused ? "storage_refuses_credentials" : "storage_unreachable";
}

void VolumeHealth::Failed(MonoTime now) { StoreLater(failed_, now.time_since_epoch().count() + 1); }

void VolumeHealth::Read(MonoTime now) { StoreLater(read_, now.time_since_epoch().count() + 1); }

bool VolumeHealth::Failing(MonoTime now, Duration hold) const {
  const int64_t failed = failed_.load(std::memory_order_relaxed);
  if (failed == 0 || failed <= read_.load(std::memory_order_relaxed)) return false;
  return now - MonoTime(MonoTime::duration(failed - 1)) <= hold;
}

void RecentWindow::Add(MonoTime now, uint64_t bytes, double latency_s) {
  std::lock_guard lock(mu_);
  samples_.push_back({now, bytes, latency_s});
  while (samples_.size() > max_samples_) samples_.pop_front();
  Trim(now);
}

void RecentWindow::Trim(MonoTime now) const {
  while (!samples_.empty() && now - samples_.front().t > span_) samples_.pop_front();
}

RecentWindow::Summary RecentWindow::Summarize(MonoTime now) const {
  Summary s;
  uint64_t bytes = 0;
  std::vector<double> lat;
  double covered = 0;
  {
    // Only the copy under the lock: workers record every file here while status is polled.
    std::lock_guard lock(mu_);
    Trim(now);
    s.samples = samples_.size();
    if (samples_.empty()) return s;
    lat.reserve(samples_.size());
    for (const auto& x : samples_) {
      bytes += x.bytes;
      lat.push_back(x.latency_s);
    }
    // A full buffer may cover less than the span: divide by what it covers.
    covered = samples_.size() == max_samples_ ? std::max(ToSeconds(now - samples_.front().t), 1e-3)
                                              : ToSeconds(span_);
  }
  s.files_per_s = static_cast<double>(s.samples) / covered;
  s.mb_per_s = static_cast<double>(bytes) / 1e6 / covered;
  // Each percentile by selection, not a full sort.
  auto pct = [&](double p) {
    const auto idx = std::min(
        static_cast<size_t>(std::lround(p * static_cast<double>(lat.size() - 1))), lat.size() - 1);
    std::nth_element(lat.begin(), lat.begin() + static_cast<std::ptrdiff_t>(idx), lat.end());
    return lat[idx];
  };
  s.p50_s = pct(0.50);
  s.p95_s = pct(0.95);
  s.p99_s = pct(0.99);
  return s;
}

void RecentErrors::Add(std::string when, std::string file, std::string error, std::string cause) {
  std::lock_guard lock(mu_);
  uint64_t count = 1;
  const auto same = std::find_if(items_.begin(), items_.end(), [&](const RecentError& e) {
    if (!cause.empty() || !e.cause.empty()) return e.cause == cause;
    return e.file == file && (!file.empty() || e.error == error);
  });
  if (same != items_.end()) {
    count += same->count;
    items_.erase(same);
  }
  items_.push_back({std::move(when), std::move(file), std::move(error), count, std::move(cause)});
  while (items_.size() > 20) items_.pop_front();
}

std::vector<RecentError> RecentErrors::Snapshot() const {
  std::lock_guard lock(mu_);
  return {items_.begin(), items_.end()};
}

namespace {
std::vector<double> SecondsBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
}
std::vector<double> SizeBuckets() {
  return {0,        1024,     16384,     65536,      262144,       1048576,      4194304,
          16777216, 67108864, 268435456, 1073741824, 4294967296.0, 17179869184.0};
}
}  // namespace

Instruments::Instruments(telemetry::MetricsRegistry& r)
    : files_discovered(r.AddCounter("files.discovered", "Files found ready in incoming", "1")),
      files_processed(r.AddCounter("files.processed", "Files uploaded and committed", "1")),
      files_failed(
          r.AddCounter("files.failed", "Files given up on and moved to the dead-letter area", "1")),
      attempt_failures(
          r.AddCounter("file.attempts.failed", "Processing attempts that failed, by reason", "1")),
      files_recovered(r.AddCounter(
          "files.recovered",
          "Claims finished that were picked up again (a restart, a takeover, a "
          "rewrite after completion, a retried dead letter), not claimed from incoming",
          "1")),
      files_skipped(
          r.AddCounter("files.skipped", "Recovered files whose blob was already committed", "1")),
      files_superseded(r.AddCounter(
          "files.superseded",
          "Versions of a file not uploaded because the blob holds a newer one (dead-lettered)",
          "1")),
      bytes_uploaded(r.AddCounter("bytes.uploaded", "Bytes committed to blob storage", "By")),
      claim_conflicts(r.AddCounter("claim.conflicts", "Claims lost to another replica", "1")),
      takeovers(r.AddCounter("claims.taken_over", "Claims taken over from dead replicas", "1")),
      retries(r.AddCounter("http.retries", "HTTP requests retried, by reason", "1")),
      throttled(r.AddCounter("http.throttled",
                             "Throttling answers (429, 503, 500 OperationTimedOut) from storage",
                             "1")),
      checksum_mismatches(r.AddCounter(
          "http.checksum_mismatches",
          "Bodies storage found not matching their checksum (each attempt is repeated), by op",
          "1")),
      api_turned_away(r.AddCounter("api.connections.turned_away",
                                   "API connections answered 503: too many waiting", "1")),
      blocks_uploaded(r.AddCounter("blocks.uploaded", "Blocks staged with Put Block", "1")),
      blocks_resumed(r.AddCounter("blocks.resumed", "Blocks already staged before a restart", "1")),
      queue_depth(r.AddCounter("queue.depth", "Ready files waiting for a worker", "1", true)),
      files_in_progress(r.AddCounter("files.in_progress", "Files being processed", "1", true)),
      upload_duration(
          r.AddHistogram("upload.duration", "Time to upload one file", "s", SecondsBuckets())),
      file_size(r.AddHistogram("file.size", "Size of uploaded files", "By", SizeBuckets())),
      ready_to_commit(r.AddHistogram("file.ready_to_commit", "From ready to blob committed", "s",
                                     SecondsBuckets())) {
  // Export every counter without labels from the start (at 0), so dashboards and alerts see the
  // series before the first event. Those counted by reason appear with their first reason.
  for (telemetry::Counter* c :
       {&files_discovered, &files_processed, &files_failed, &files_recovered, &files_skipped,
        &files_superseded, &bytes_uploaded, &claim_conflicts, &takeovers, &throttled,
        &api_turned_away, &blocks_uploaded, &blocks_resumed, &queue_depth, &files_in_progress}) {
    c->Add(0);
  }
  // Counted by op only: a series without it would sit at 0 beside the labelled ones for good.
  for (const char* op : azure::kChecksummedOps) checksum_mismatches.Add(0, {{"op", op}});
}

}  // namespace nbu::core
