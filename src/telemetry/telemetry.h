// The telemetry facade the service holds: one MetricsRegistry, one Tracer and (when configured)
// the OTLP exporter thread, built from the parsed OTEL_* configuration.
#pragma once

#include "telemetry/metrics.h"
#include "telemetry/otlp.h"
#include "telemetry/otlp_config.h"
#include "telemetry/tracing.h"
#include "util/clock.h"

#include <memory>

namespace nbu::telemetry {

class Telemetry {
 public:
  // Builds the registry and tracer. When the config exports traces or metrics, an exporter is
  // created (not started) and the tracer's spans go to its bounded queue; otherwise spans still
  // get ids (for log correlation) but go nowhere. Registers the exporter's own instruments:
  // otel.exporter.dropped {signal, reason}, otel.exporter.exported {signal},
  // otel.exporter.failures {signal} and the gauge otel.exporter.queue.size.
  // `clock` must outlive this object. A null `transport` means libcurl (tests inject fakes).
  Telemetry(TelemetryConfig config, Clock& clock,
            std::unique_ptr<OtlpTransport> transport = nullptr);
  // Calls Shutdown(now) if Shutdown was not called: stops the thread without flushing.
  ~Telemetry();
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;

  // Starts the exporter thread (no-op without export). Call once, after registering instruments
  // is not required: instruments added later are exported too.
  void Start();
  // Flushes queued spans and a last metrics snapshot until `deadline` (on the clock given to
  // the constructor), then stops. Idempotent; never blocks past the deadline by more than one
  // libcurl progress tick.
  void Shutdown(MonoTime deadline);

  MetricsRegistry& metrics() { return metrics_; }
  const MetricsRegistry& metrics() const { return metrics_; }
  Tracer& tracer() { return *tracer_; }
  const TelemetryConfig& config() const { return config_; }
  bool exporting() const { return exporter_ != nullptr; }
  // Null when not exporting.
  OtlpExporter* exporter() { return exporter_.get(); }

 private:
  const TelemetryConfig config_;
  MetricsRegistry metrics_;
  std::unique_ptr<OtlpExporter> exporter_;
  std::unique_ptr<Tracer> tracer_;
};

}  // namespace nbu::telemetry
