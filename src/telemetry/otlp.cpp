#include "telemetry/otlp.h"

#include "util/crypto.h"
#include "util/log.h"
#include "util/utf8.h"

#include <algorithm>

namespace nbu::telemetry {
namespace {

using std::chrono::milliseconds;

const char* SignalName(bool spans) { return spans ? "spans" : "metrics"; }

milliseconds Remaining(MonoTime now, MonoTime deadline) {
  return std::chrono::duration_cast<milliseconds>(deadline - now);
}

}  // namespace

OtlpResource MakeOtlpResource(const TelemetryConfig& config) {
  // OTLP wants each key once. What the operator sets in OTEL_RESOURCE_ATTRIBUTES overrides what
  // is set here (as OpenTelemetry SDKs let it override detected attributes), the last of a key
  // given twice winning, except service.name: OTEL_SERVICE_NAME and the config decide it.
  OtlpResource r;
  r.attributes.emplace_back("service.name", config.service_name);
  if (!config.service_version.empty()) {
    r.attributes.emplace_back("service.version", config.service_version);
    // The instrumentation scope is this code, whatever the operator calls the service.
    r.scope_version = config.service_version;
  }
  if (!config.service_instance_id.empty()) {
    r.attributes.emplace_back("service.instance.id", config.service_instance_id);
  }
  r.attributes.emplace_back("telemetry.sdk.name", std::string("nbu-telemetry"));
  r.attributes.emplace_back("telemetry.sdk.language", std::string("cpp"));
  for (const auto& attribute : config.resource_attributes) {
    const std::string& key = attribute.first;
    if (key == "service.name") continue;
    const auto same = std::find_if(r.attributes.begin(), r.attributes.end(),
                                   [&key](const auto& kv) { return kv.first == key; });
    if (same != r.attributes.end()) {
      same->second = attribute.second;
    } else {
      r.attributes.push_back(attribute);
    }
  }
  return r;
}

OtlpExporter::OtlpExporter(TelemetryConfig config, Clock& clock, const MetricsRegistry* metrics,
                           std::unique_ptr<OtlpTransport> transport,
                           const ExporterCounters& counters)
    : config_(std::move(config)),
      clock_(clock),
      metrics_(metrics),
      transport_(transport ? std::move(transport) : NewCurlOtlpTransport()),
      counters_(counters),
      resource_(MakeOtlpResource(config_)),
      start_wall_(clock.WallNow()),
      next_span_export_(clock.Now() + config_.span_schedule_delay),
      next_metrics_export_(clock.Now() + config_.metric_export_interval) {}

OtlpExporter::~OtlpExporter() {
  try {
    Shutdown(clock_.Now());
  } catch (...) {  // a destructor must not throw; telemetry is never worth a crash
  }
}

bool OtlpExporter::Enqueue(SpanData&& span) {
  const char* reason = nullptr;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !config_.exports_traces()) {
      reason = stopping_ ? "shutdown" : "disabled";
    } else if (queue_.size() >= config_.max_queue_size) {
      reason = "queue_full";
    } else {
      queue_.push_back(std::move(span));
      if (queue_.size() == config_.max_export_batch_size) wake_.request_stop();
      return true;
    }
  }
  if (std::string_view(reason) == "queue_full")
    ++spans_dropped_queue_full_;
  else
    ++spans_dropped_export_;
  if (counters_.dropped != nullptr)
    counters_.dropped->Add(1, {{"signal", "spans"}, {"reason", reason}});
  return false;
}

SpanSink OtlpExporter::Sink() {
  return [this](SpanData&& span) { Enqueue(std::move(span)); };
}

void OtlpExporter::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { WorkerLoop(); });
}

void OtlpExporter::Shutdown(MonoTime deadline) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    shutdown_deadline_ = deadline;
    wake_.request_stop();
  }
  if (!thread_.joinable()) {
    Drain(deadline);
    return;
  }
  // The worker drains on its own; give it until the deadline, then cancel what is in flight.
  std::stop_source never;
  while (!worker_done_ && clock_.Now() < deadline) {
    clock_.SleepFor(milliseconds(10), never.get_token());
  }
  cancel_ = true;
  thread_.join();
}

void OtlpExporter::WorkerLoop() {
  MonoTime deadline{};
  while (true) {
    const MonoTime next = RunOnce();
    std::stop_token token;
    {
      std::lock_guard lock(mu_);
      if (stopping_) {
        deadline = shutdown_deadline_;
        break;
      }
      // A full batch is waiting and nothing is pending retry: go again at once.
      if (queue_.size() >= config_.max_export_batch_size && !span_batch_.active) continue;
      wake_ = std::stop_source();
      token = wake_.get_token();
    }
    const MonoTime now = clock_.Now();
    if (next > now) clock_.SleepFor(next - now, token);
  }
  Drain(deadline);
  worker_done_ = true;
}

MonoTime OtlpExporter::RunOnce() {
  const milliseconds timeout = config_.export_timeout;
  if (config_.exports_traces()) {
    const MonoTime now = clock_.Now();
    if (!span_batch_.active &&
        (now >= next_span_export_ || queue_size() >= config_.max_export_batch_size)) {
      TakeSpanBatch();
      next_span_export_ = now + config_.span_schedule_delay;
    }
    if (span_batch_.active && clock_.Now() >= span_batch_.next_attempt) {
      Attempt(span_batch_, Signal::kSpans, timeout, false);
    }
  }
  if (config_.exports_metrics() && metrics_ != nullptr) {
    const MonoTime now = clock_.Now();
    if (now >= next_metrics_export_) {
      SnapshotMetrics();
      next_metrics_export_ = now + config_.metric_export_interval;
    }
    if (metric_batch_.active && clock_.Now() >= metric_batch_.next_attempt) {
      Attempt(metric_batch_, Signal::kMetrics, timeout, false);
    }
  }
  ReportDrops();
  MonoTime next = MonoTime::max();
  if (config_.exports_traces()) {
    next = std::min(next, span_batch_.active ? span_batch_.next_attempt : next_span_export_);
  }
  if (config_.exports_metrics() && metrics_ != nullptr) {
    next = std::min(next_metrics_export_, next);
    if (metric_batch_.active) next = std::min(next, metric_batch_.next_attempt);
  }
  return next;
}

void OtlpExporter::Drain(MonoTime deadline) {
  auto time_left = [&] { return !cancel_ && clock_.Now() < deadline; };
  // A Retry-After that ends before the deadline is waited out. One that ends later can be
  // neither waited out nor honoured by a send: what is left of that signal is dropped.
  auto may_send = [&](Signal signal) {
    const MonoTime until = throttled_until_[signal == Signal::kSpans ? 0 : 1];
    if (until >= deadline) return false;
    const MonoTime now = clock_.Now();
    if (until > now) clock_.SleepFor(until - now, std::stop_token());
    return time_left();
  };
  if (config_.exports_traces()) {
    while (time_left() && (span_batch_.active || TakeSpanBatch()) && may_send(Signal::kSpans)) {
      const milliseconds timeout =
          std::min(config_.export_timeout, Remaining(clock_.Now(), deadline));
      Attempt(span_batch_, Signal::kSpans, std::max(timeout, milliseconds(1)), true);
    }
    std::deque<SpanData> rest;
    {
      std::lock_guard lock(mu_);
      rest.swap(queue_);
    }
    size_t lost = rest.size();
    if (span_batch_.active) lost += span_batch_.items;
    span_batch_ = Pending{};
    if (lost > 0) CountDropped(Signal::kSpans, lost, "shutdown");
  }
  if (config_.exports_metrics() && metrics_ != nullptr) {
    const bool send = time_left() && may_send(Signal::kMetrics);
    SnapshotMetrics();  // supersedes any pending one
    if (send) {
      const milliseconds timeout =
          std::min(config_.export_timeout, Remaining(clock_.Now(), deadline));
      Attempt(metric_batch_, Signal::kMetrics, std::max(timeout, milliseconds(1)), true);
    } else if (metric_batch_.active) {  // the last window's points go unsent: counted as such
      CountDropped(Signal::kMetrics, metric_batch_.items, "shutdown");
      metric_batch_ = Pending{};
    }
  }
  ReportDrops(/*final=*/true);
}

bool OtlpExporter::TakeSpanBatch() {
  std::vector<SpanData> batch;
  {
    std::lock_guard lock(mu_);
    const size_t n = std::min(queue_.size(), config_.max_export_batch_size);
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  if (batch.empty()) return false;
  span_batch_ =
      Pending{true, DumpJson(EncodeTraces(batch, resource_)), batch.size(), 0, throttled_until_[0]};
  return true;
}

void OtlpExporter::SnapshotMetrics() {
  // Sums and histograms are cumulative, so a newer snapshot carries everything an unsent older
  // one did: the older one is superseded, not lost.
  size_t points = 0;
  std::string body =
      DumpJson(EncodeMetrics(*metrics_, resource_, start_wall_, clock_.WallNow(), &points));
  metric_batch_ = Pending{points > 0, std::move(body), points, 0, throttled_until_[1]};
}

void OtlpExporter::Attempt(Pending& p, Signal signal, milliseconds timeout, bool final) {
  const bool spans = signal == Signal::kSpans;
  OtlpRequest request{
      spans ? config_.traces_url : config_.metrics_url, &config_.headers, {}, timeout};
  request.body.swap(p.body);
  const OtlpResult result = transport_->Post(request, cancel_);
  p.body.swap(request.body);
  const Status& st = result.status;
  bool& failing = failing_[spans ? 0 : 1];
  if (result.retry_after) {
    // Capped in seconds: the longest Retry-After (2^40 s) overflows as nanoseconds. Also holds
    // back the next batch, should this one run out of attempts.
    throttled_until_[spans ? 0 : 1] = clock_.Now() + std::min(*result.retry_after, kMaxRetryAfter);
  }
  if (st.ok()) {
    CountExported(signal, p.items, result);
    if (failing) LogInfo("otlp export recovered", {{"signal", SignalName(spans)}});
    failing = false;
    p = Pending{};
    return;
  }
  if (st.kind() == ErrorKind::kCancelled && cancel_) {
    // Cut off by the shutdown deadline, not failed by the collector: what it carried is what
    // the deadline drops, counted as such, without a failure or a warning about the collector.
    CountDropped(signal, p.items, "shutdown");
    p = Pending{};
    return;
  }
  ++export_failures_;
  if (counters_.failures != nullptr) counters_.failures->Add(1, {{"signal", SignalName(spans)}});
  if (!failing) {
    // Warn once per outage; the status carries the redacted URL, never header values.
    LogWarn("otlp export failing", {{"signal", SignalName(spans)}, {"error", st.ToString()}});
  }
  failing = true;
  ++p.attempts;
  if (!final && st.kind() == ErrorKind::kTransient && p.attempts < config_.max_export_attempts) {
    p.next_attempt = std::max(clock_.Now() + Backoff(p.attempts), throttled_until_[spans ? 0 : 1]);
    return;
  }
  CountDropped(signal, p.items, "export_failed");
  p = Pending{};
}

void OtlpExporter::CountDropped(Signal signal, size_t items, const char* reason) {
  const bool spans = signal == Signal::kSpans;
  (spans ? spans_dropped_export_ : metric_points_dropped_) += items;
  if (counters_.dropped != nullptr) {
    counters_.dropped->Add(static_cast<double>(items),
                           {{"signal", SignalName(spans)}, {"reason", reason}});
  }
}

void OtlpExporter::CountExported(Signal signal, size_t items, const OtlpResult& result) {
  const bool spans = signal == Signal::kSpans;
  const OtlpPartialSuccess partial =
      ParsePartialSuccess(result.body, spans ? "rejectedSpans" : "rejectedDataPoints");
  // Rejected items were seen and refused: sending them again would be refused again.
  const size_t rejected = static_cast<size_t>(std::min<uint64_t>(partial.rejected, items));
  (spans ? spans_exported_ : metric_points_exported_) += items - rejected;
  if (counters_.exported != nullptr) {
    counters_.exported->Add(static_cast<double>(items - rejected), {{"signal", SignalName(spans)}});
  }
  if (rejected > 0) CountDropped(signal, rejected, "rejected");
  if (rejected == 0 && partial.error_message.empty()) return;
  if (uint64_t held_back = 0; partial_success_log_.Allow(clock_.Now(), &held_back)) {
    // The message is the collector's text, which may quote our header values (API keys) and be
    // long: scrubbed of them as a failed answer's body is, then cut short.
    LogWarn("otlp collector answered with a partial success",
            {{"signal", SignalName(spans)},
             {"rejected", rejected},
             {"items", items},
             {"error", WithoutSecrets(partial.error_message, &config_.headers,
                                      spans ? config_.traces_url : config_.metrics_url)
                           .substr(0, 200)},
             {"not_logged_since_last", held_back}});
  }
}

void OtlpExporter::ReportDrops(bool final) {
  const uint64_t dropped = spans_dropped_queue_full_.load();
  if (dropped == reported_queue_drops_) return;
  if (uint64_t held_back = 0;
      !drops_log_.Allow(std::chrono::steady_clock::now(), &held_back, final)) {
    return;
  }
  LogWarn("otlp span queue full; spans dropped",
          {{"dropped", dropped - reported_queue_drops_}, {"queue_size", config_.max_queue_size}});
  reported_queue_drops_ = dropped;
}

Duration OtlpExporter::Backoff(int attempts) const {
  const double base = std::chrono::duration<double>(config_.retry_base_delay).count();
  const double cap = std::chrono::duration<double>(config_.retry_max_delay).count();
  double delay = std::min(cap, base * static_cast<double>(1ULL << std::min(attempts - 1, 20)));
  if (config_.retry_jitter > 0) {
    const double unit = FastRandom01();
    delay *= 1.0 + config_.retry_jitter * (2.0 * unit - 1.0);
  }
  return FromSeconds(delay);
}

ExporterStats OtlpExporter::stats() const {
  return {spans_exported_.load(),        spans_dropped_queue_full_.load(),
          spans_dropped_export_.load(),  metric_points_exported_.load(),
          metric_points_dropped_.load(), export_failures_.load()};
}

size_t OtlpExporter::queue_size() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

}  // namespace nbu::telemetry
