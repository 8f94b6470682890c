// Telemetry configuration from the standard OTEL_* environment variables, validated up front so
// the service can refuse to start (exit code 2) with one error line per invalid variable.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nbu::telemetry {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct TelemetryConfig {
  bool sdk_disabled = false;  // OTEL_SDK_DISABLED=true: no export at all
  std::string traces_url;     // full URL; empty = spans are not exported
  std::string metrics_url;    // full URL; empty = metrics are not exported
  KeyValues headers;          // OTEL_EXPORTER_OTLP_HEADERS; secrets: never log values
  std::string service_name = "nfs-blob-uploader";
  std::string service_version;      // set by the caller (not from the environment)
  std::string service_instance_id;  // set by the caller (the replica id)
  // OTEL_RESOURCE_ATTRIBUTES, without service.name, in the order given (duplicates kept here;
  // MakeOtlpResource makes the keys unique). They override service.version,
  // service.instance.id and the other attributes set here.
  KeyValues resource_attributes;
  std::chrono::milliseconds metric_export_interval{60000};  // OTEL_METRIC_EXPORT_INTERVAL
  std::chrono::milliseconds span_schedule_delay{5000};      // OTEL_BSP_SCHEDULE_DELAY
  size_t max_queue_size = 2048;                             // OTEL_BSP_MAX_QUEUE_SIZE
  size_t max_export_batch_size = 512;                       // OTEL_BSP_MAX_EXPORT_BATCH_SIZE
  std::chrono::milliseconds export_timeout{10000};          // OTEL_EXPORTER_OTLP_TIMEOUT
  // Retries of one failed export (connection error, timeout, 429/502/503/504) before the batch
  // is dropped and counted; the delay doubles from base to max, with +-jitter fraction.
  int max_export_attempts = 3;
  std::chrono::milliseconds retry_base_delay{1000};
  std::chrono::milliseconds retry_max_delay{5000};
  double retry_jitter = 0.2;

  bool exports_traces() const { return !sdk_disabled && !traces_url.empty(); }
  bool exports_metrics() const { return !sdk_disabled && !metrics_url.empty(); }
};

struct TelemetryConfigResult {
  TelemetryConfig config;
  std::vector<std::string> errors;    // one line per invalid variable; never holds header values
  std::vector<std::string> warnings;  // accepted but questionable (e.g. OTEL_SDK_DISABLED=yes)
};

// Returns the value of an environment variable, or nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// Parses and validates every OTEL_* variable this service understands. An unset or empty
// OTEL_EXPORTER_OTLP_ENDPOINT (and no signal-specific endpoint) means no export and no error.
// The base endpoint gets "/v1/traces" and "/v1/metrics" appended; the signal-specific
// OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT are used as-is. Pure; thread-safe.
TelemetryConfigResult ParseTelemetryConfig(const EnvLookup& env);

// ParseTelemetryConfig over the process environment (getenv). Call at start-up, before threads.
TelemetryConfigResult TelemetryConfigFromEnvironment();

// Parses "k=v,k2=v2" (W3C baggage-like, as OTEL_EXPORTER_OTLP_HEADERS and
// OTEL_RESOURCE_ATTRIBUTES): keys and values trimmed, values percent-decoded. On failure returns
// nullopt and adds to *errors a line per bad entry, each naming the entry's index but never
// echoing a value.
std::optional<KeyValues> ParseKeyValueList(const std::string& text,
                                           std::vector<std::string>* errors);

// Percent-decodes `text`; nullopt on a malformed escape.
std::optional<std::string> PercentDecode(const std::string& text);

// "https://user:secret@host:4318/v1/traces?key=abc" -> "https://host:4318/v1/traces": for logs.
std::string EndpointForLog(const std::string& url);

}  // namespace nbu::telemetry
