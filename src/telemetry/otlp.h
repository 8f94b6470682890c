// OTLP/HTTP JSON exporter: a bounded span queue that never blocks the caller, and one background
// thread that batches spans every schedule delay and exports metrics every export interval,
// retrying failed exports a bounded number of times before dropping (and counting) them. A
// collector's Retry-After holds back that signal's sends (up to kMaxRetryAfter); items a 2xx
// answer's partialSuccess rejects are dropped, not retried.
#pragma once

#include "telemetry/metrics.h"
#include "telemetry/otlp_config.h"
#include "telemetry/otlp_json.h"
#include "telemetry/otlp_transport.h"
#include "telemetry/tracing.h"
#include "util/clock.h"
#include "util/log.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <stop_token>
#include <thread>

namespace nbu::telemetry {

// Instruments the exporter reports into (all optional). Attributes used:
// dropped: {signal=spans|metrics, reason=queue_full|export_failed|rejected|shutdown|disabled};
// items (spans or metric data points); rejected = refused by the collector in a partialSuccess.
// exported: {signal}; items. failures: {signal}; failed export attempts.
struct ExporterCounters {
  Counter* dropped = nullptr;
  Counter* exported = nullptr;
  Counter* failures = nullptr;
};

// Cumulative counts since construction; read with stats(), any thread.
struct ExporterStats {
  uint64_t spans_exported = 0;
  uint64_t spans_dropped_queue_full = 0;
  uint64_t spans_dropped_export = 0;  // export failed (retries exhausted, rejected, shutdown)
  uint64_t metric_points_exported = 0;
  uint64_t metric_points_dropped = 0;
  uint64_t export_failures = 0;  // failed attempts, both signals
};

// The longest Retry-After honoured: a larger (or bogus) one must not park a signal for hours.
constexpr std::chrono::seconds kMaxRetryAfter{60};

class OtlpExporter {
 public:
  // `metrics` may be null (no metrics export); it must outlive the exporter, as must `clock`.
  // A null `transport` means libcurl.
  OtlpExporter(TelemetryConfig config, Clock& clock, const MetricsRegistry* metrics,
               std::unique_ptr<OtlpTransport> transport = nullptr,
               const ExporterCounters& counters = {});
  // Shuts down with a deadline of "now" if Shutdown was not called: nothing is flushed.
  ~OtlpExporter();
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Queues a finished span. Never blocks on I/O (one short lock). Returns false and counts a
  // drop when the queue is full, trace export is off, or Shutdown has begun. Thread-safe.
  bool Enqueue(SpanData&& span);
  // A SpanSink for Tracer that calls Enqueue; valid while the exporter lives.
  SpanSink Sink();

  // Starts the background thread. Call at most once.
  void Start();
  // Stops the thread: exports what is queued plus one last metrics snapshot, one attempt each,
  // as long as `deadline` (on this exporter's clock) allows; at the deadline any request in
  // flight is cancelled and the rest is dropped and counted. A collector's Retry-After that ends
  // before the deadline is waited out; one that does not drops the signal's rest at once.
  // Idempotent; thread-safe. Without Start(), the flush runs on the calling thread.
  void Shutdown(MonoTime deadline);

  // Does the work that is due now on the calling thread: takes a span batch when the schedule
  // delay passed or a full batch waits, snapshots metrics when the interval passed, and makes
  // due (re)tries. Returns when it next has work. Used by the background thread; unit tests on
  // a SimulatedClock call it instead of Start(). Never call concurrently with itself.
  MonoTime RunOnce();

  ExporterStats stats() const;
  size_t queue_size() const;

 private:
  enum class Signal { kSpans, kMetrics };
  struct Pending {
    bool active = false;
    std::string body;
    size_t items = 0;
    int attempts = 0;
    MonoTime next_attempt{};
  };

  void WorkerLoop();
  void Drain(MonoTime deadline);
  bool TakeSpanBatch();
  void SnapshotMetrics();
  // One POST of `p`; on failure schedules a retry or drops. `final` = no retry (shutdown).
  void Attempt(Pending& p, Signal signal, std::chrono::milliseconds timeout, bool final);
  void CountDropped(Signal signal, size_t items, const char* reason);
  void CountExported(Signal signal, size_t items, const OtlpResult& result);
  // Logs the spans dropped for a full queue since the last line: once a minute, and at the end.
  void ReportDrops(bool final = false);
  Duration Backoff(int attempts) const;

  const TelemetryConfig config_;
  Clock& clock_;
  const MetricsRegistry* const metrics_;
  const std::unique_ptr<OtlpTransport> transport_;
  const ExporterCounters counters_;
  const OtlpResource resource_;
  const WallTime start_wall_;
  std::atomic<bool> cancel_{false};  // aborts an in-flight request at the shutdown deadline

  mutable std::mutex mu_;
  std::deque<SpanData> queue_;    // guarded by mu_
  bool stopping_ = false;         // guarded by mu_
  MonoTime shutdown_deadline_{};  // guarded by mu_
  std::stop_source wake_;         // guarded by mu_; wakes the worker's sleep early
  std::thread thread_;
  std::atomic<bool> worker_done_{false};

  std::atomic<uint64_t> spans_exported_{0}, spans_dropped_queue_full_{0}, spans_dropped_export_{0},
      metric_points_exported_{0}, metric_points_dropped_{0}, export_failures_{0};

  // Worker state: touched only by RunOnce/Drain (one thread at a time).
  Pending span_batch_;
  Pending metric_batch_;
  MonoTime next_span_export_;
  MonoTime next_metrics_export_;
  bool failing_[2] = {false, false};
  MonoTime throttled_until_[2] = {};  // per signal: the end of the collector's last Retry-After
  uint64_t reported_queue_drops_ = 0;
  LogLimiter partial_success_log_{std::chrono::minutes(1)};
  LogLimiter drops_log_{std::chrono::minutes(1)};
};

// The resource every export carries: service.name, service.version (if set), telemetry.sdk.*,
// then OTEL_RESOURCE_ATTRIBUTES.
OtlpResource MakeOtlpResource(const TelemetryConfig& config);

}  // namespace nbu::telemetry
