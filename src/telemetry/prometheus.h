// Prometheus text exposition (format 0.0.4) of a MetricsRegistry, for the /metrics endpoint.
#pragma once

#include "telemetry/metrics.h"

#include <string>

namespace nbu::telemetry {

// Content-Type to serve RenderPrometheus output with.
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// Renders every instrument: counters as `counter` (`_total` suffix), up-down counters and gauges
// as `gauge`, histograms as cumulative `_bucket{le=...}` (ending in `+Inf`), `_sum` and `_count`.
// Names follow the OpenTelemetry-to-Prometheus mapping (see PrometheusName). An instrument whose
// Prometheus name repeats an earlier one is skipped (a scrape must not carry two TYPE lines);
// a gauge callback that throws is skipped. Thread-safe; reads a consistent copy of each series.
std::string RenderPrometheus(const MetricsRegistry& registry);

// "upload.duration" + unit "s" -> "upload_duration_seconds"; counters additionally end in
// "_total". Characters outside [a-zA-Z0-9_:] become '_'; a leading digit gets a '_' prefix.
std::string PrometheusName(const InstrumentInfo& info);

// Formats a sample value as Prometheus does: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string FormatPrometheusValue(double value);

}  // namespace nbu::telemetry
