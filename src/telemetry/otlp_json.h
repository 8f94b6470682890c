// OTLP protobuf-JSON encoding of spans and metrics (ExportTraceServiceRequest,
// ExportMetricsServiceRequest), as OTLP/HTTP receivers expect with Content-Type application/json:
// hex trace/span ids, 64-bit integers as decimal strings, enums as integers.
#pragma once

#include "telemetry/metrics.h"
#include "telemetry/tracing.h"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace nbu::telemetry {

// Resource and instrumentation scope shared by every export of this process.
struct OtlpResource {
  SpanAttributes attributes;  // service.name first, then the rest
  std::string scope_name = "nfs-blob-uploader";
  std::string scope_version;
};

// OTLP AnyValue: {"stringValue": ...}, {"intValue": "42"}, {"doubleValue": 1.5} ("NaN",
// "Infinity", "-Infinity" for non-finite values), {"boolValue": true}.
nlohmann::json EncodeAnyValue(const AttributeValue& value);
nlohmann::json EncodeAttributes(const SpanAttributes& attributes);

// {"resourceSpans":[{"resource":..., "scopeSpans":[{"scope":..., "spans":[...]}]}]}.
nlohmann::json EncodeTraces(const std::vector<SpanData>& spans, const OtlpResource& resource);

// {"resourceMetrics":[...]}: counters as cumulative sums (monotonic unless up-down), histograms
// as cumulative explicit-bucket histograms, gauges read now. Instruments without series are
// left out; `*data_points` (if not null) receives the number of data points encoded. Gauge
// callbacks run on the calling thread; one that throws is skipped.
nlohmann::json EncodeMetrics(const MetricsRegistry& registry, const OtlpResource& resource,
                             WallTime start, WallTime now, size_t* data_points = nullptr);

// Nanoseconds since the Unix epoch as a decimal string (fixed64 in proto-JSON).
std::string UnixNanos(WallTime t);

// What a 2xx answer's partialSuccess says: items the collector refused, and its message (which
// it may also send alone, as a warning).
struct OtlpPartialSuccess {
  uint64_t rejected = 0;
  std::string error_message;
};

// Reads `rejected_field` ("rejectedSpans", "rejectedDataPoints", "rejectedLogRecords": int64 as
// a string or a number) and errorMessage from `body`. An empty or non-JSON body, or one without
// partialSuccess, is full success: all zero.
OtlpPartialSuccess ParsePartialSuccess(std::string_view body, const char* rejected_field);

}  // namespace nbu::telemetry
