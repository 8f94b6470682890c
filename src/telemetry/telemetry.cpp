#include "telemetry/telemetry.h"

#include "util/log.h"

namespace nbu::telemetry {

Telemetry::Telemetry(TelemetryConfig config, Clock& clock, std::unique_ptr<OtlpTransport> transport)
    : config_(std::move(config)) {
  ExporterCounters counters;
  counters.dropped = &metrics_.AddCounter(
      "otel.exporter.dropped",
      "Telemetry items (spans, metric data points) dropped by the exporter", "1");
  counters.exported = &metrics_.AddCounter("otel.exporter.exported",
                                           "Telemetry items accepted by the OTLP collector", "1");
  counters.failures =
      &metrics_.AddCounter("otel.exporter.failures", "Failed OTLP export attempts", "1");
  if (config_.exports_traces() || config_.exports_metrics()) {
    exporter_ =
        std::make_unique<OtlpExporter>(config_, clock, &metrics_, std::move(transport), counters);
    OtlpExporter* exporter = exporter_.get();
    metrics_.AddGauge("otel.exporter.queue.size", "Spans waiting in the export queue", "1",
                      [exporter] { return static_cast<double>(exporter->queue_size()); });
  }
  SpanSink sink;
  if (config_.exports_traces()) sink = exporter_->Sink();
  tracer_ = std::make_unique<Tracer>(clock, std::move(sink));
  LogInfo(
      "telemetry configured",
      {{"traces_endpoint", config_.exports_traces() ? EndpointForLog(config_.traces_url) : ""},
       {"metrics_endpoint", config_.exports_metrics() ? EndpointForLog(config_.metrics_url) : ""},
       {"service_name", config_.service_name},
       {"sdk_disabled", config_.sdk_disabled},
       {"header_count", config_.headers.size()}});
}

// Members go in reverse order: the tracer (whose sink points at the exporter), then the exporter
// (stopping its thread), then the registry the exporter reads.
Telemetry::~Telemetry() = default;

void Telemetry::Start() {
  if (exporter_) exporter_->Start();
}

void Telemetry::Shutdown(MonoTime deadline) {
  if (exporter_) exporter_->Shutdown(deadline);
}

}  // namespace nbu::telemetry
