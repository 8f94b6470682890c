// The service's metrics (OpenTelemetry names from the seed) and the rolling windows that
// /v1/status reports (throughput over the last minute, ready-to-commit latency percentiles).
#pragma once

#include "azure/blob_client.h"
#include "telemetry/metrics.h"
#include "util/clock.h"

#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace nbu::core {

// Bounded record of recent completions: memory is fixed whatever the load.
class RecentWindow {
 public:
  explicit RecentWindow(Duration span = std::chrono::seconds(60), size_t max_samples = 4096)
      : span_(span), max_samples_(max_samples) {}
  void Add(MonoTime now, uint64_t bytes, double latency_s);
  struct Summary {
    double files_per_s = 0;
    double mb_per_s = 0;
    double p50_s = 0, p95_s = 0, p99_s = 0;
    size_t samples = 0;
  };
  Summary Summarize(MonoTime now) const;

 private:
  struct Sample {
    MonoTime t;
    uint64_t bytes;
    double latency_s;
  };
  void Trim(MonoTime now) const;
  Duration span_;
  size_t max_samples_;
  mutable std::mutex mu_;
  mutable std::deque<Sample> samples_;  // guarded by mu_
};

// Recent errors for status: the last 20, newest last, messages already free of secrets. A file's
// errors are one entry (its latest error, with its time and how many there were), as are the
// repeats of one error of no file with the same text (not those whose texts differ, by a timing
// in curl's message for one): each moves to the end when it comes again, so that one file
// refused at every retry cannot push every other error out. So are the errors given one `cause`
// (the latest file and text shown): one that comes for many files, such as a volume refusing
// every claim, or with a new request id at every try, such as the start-up check, takes one slot.
struct RecentError {
  std::string time;  // the latest occurrence
  std::string file;  // empty for an error of no one file
  std::string error;
  uint64_t count = 1;  // occurrences while it stayed among the last 20
  std::string cause;   // not shown
};
class RecentErrors {
 public:
  void Add(std::string when, std::string file, std::string error, std::string cause = {});
  std::vector<RecentError> Snapshot() const;

 private:
  mutable std::mutex mu_;
  std::deque<RecentError> items_;  // guarded by mu_
};

// How storage met this replica's request tries, for the status and its gauges.
class StorageHealth {
 public:
  // A try within this long of an answer does not make storage look unreachable or refusing:
  // storage is up for the others (one file's failure is that file's, see FileProcessor).
  static constexpr Duration kAnsweredRecently = std::chrono::seconds(10);

  void Record(azure::TryOutcome outcome, MonoTime now);
  // "storage_unreachable" or "storage_refuses_credentials" when the latest failed try was so
  // (a server error is unreachable), no try was answered since (for a refusal or a server
  // error: none succeeded), none for kAnsweredRecently before it either, and it is not older than
  // `hold` (no try since: nothing is waiting on storage); else null.
  const char* Trouble(MonoTime now, Duration hold) const;

 private:
  // Steady-clock times in ns, plus 1 (0: never). `failed_`: the latest failed try's, shifted
  // left by 3 and or'ed with its outcome. Each only moves forward.
  std::atomic<int64_t> answered_{0};
  std::atomic<int64_t> succeeded_{0};
  std::atomic<int64_t> failed_{0};
};

// How reads of claims from the volume went, for the status's volume_failing.
class VolumeHealth {
 public:
  // An attempt could not open, stat or read its claim, and as far as is known not for the
  // claim's own trouble (FileProcessor::Process).
  void Failed(MonoTime now);
  // A claim was read whole.
  void Read(MonoTime now);
  // True while the latest failure is later than the latest whole read, and not older than
  // `hold` (no attempt failed since: nothing is waiting on the volume).
  bool Failing(MonoTime now, Duration hold) const;

 private:
  // Steady-clock times in ns, plus 1 (0: never). Each only moves forward.
  std::atomic<int64_t> failed_{0};
  std::atomic<int64_t> read_{0};
};

struct Instruments {
  explicit Instruments(telemetry::MetricsRegistry& registry);

  telemetry::Counter& files_discovered;
  telemetry::Counter& files_processed;
  telemetry::Counter& files_failed;      // files given up on (dead-lettered)
  telemetry::Counter& attempt_failures;  // attempts that failed, by reason
  telemetry::Counter& files_recovered;
  telemetry::Counter& files_skipped;     // recovered files whose blob was already complete
  telemetry::Counter& files_superseded;  // older versions not uploaded over a newer blob
  telemetry::Counter& bytes_uploaded;
  telemetry::Counter& claim_conflicts;
  telemetry::Counter& takeovers;
  telemetry::Counter& retries;              // HTTP retries, by reason
  telemetry::Counter& throttled;            // 429/503 answers
  telemetry::Counter& checksum_mismatches;  // bodies storage found not matching their checksum
  telemetry::Counter& api_turned_away;      // API connections answered 503 unread (too many)
  telemetry::Counter& blocks_uploaded;
  telemetry::Counter& blocks_resumed;     // blocks found already staged after a restart
  telemetry::Counter& queue_depth;        // up-down
  telemetry::Counter& files_in_progress;  // up-down
  telemetry::Histogram& upload_duration;  // seconds
  telemetry::Histogram& file_size;        // bytes
  telemetry::Histogram& ready_to_commit;  // seconds from ready to committed

  RecentWindow recent;
  RecentErrors errors;
  // When staging last ran out of space or quota (a steady-clock time since epoch; 0: never).
  std::atomic<MonoTime::rep> staging_full_at{0};
  std::atomic<MonoTime::rep> staging_failing_at{0};  // another staging error (read-only, EIO...)
  // Storage's last throttling answer (429, 503, 500 OperationTimedOut).
  std::atomic<MonoTime::rep> throttled_at{0};
  // When an upload last found the container gone, and making it again failed.
  std::atomic<MonoTime::rep> container_missing_at{0};
  StorageHealth storage;
  VolumeHealth volume;
};

}  // namespace nbu::core
