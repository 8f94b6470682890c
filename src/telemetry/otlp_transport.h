// The one network call of the exporter: POST an OTLP/HTTP JSON body, on libcurl, with short
// timeouts and a cancel flag so shutdown never waits on a slow collector.
#pragma once

#include "telemetry/otlp_config.h"
#include "util/status.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

namespace nbu::telemetry {

struct OtlpRequest {
  std::string url;
  const KeyValues* headers = nullptr;  // extra headers (API keys: never logged)
  std::string body;                    // JSON
  std::chrono::milliseconds timeout{10000};
};

// Failures: kTransient for connection errors, timeouts and HTTP 429/502/503/504 (the OTLP
// retryable set); kPermanent for any other non-2xx answer; kCancelled when `cancel` was set.
// Messages hold the redacted URL and HTTP status, never header values.
class OtlpTransport {
 public:
  virtual ~OtlpTransport() = default;
  virtual Status Post(const OtlpRequest& request, const std::atomic<bool>& cancel) = 0;
};

// libcurl easy handle reused across calls (keep-alive). Not thread-safe: one caller at a time
// (the exporter's thread). Sets CURLOPT_NOSIGNAL; follows no redirects.
std::unique_ptr<OtlpTransport> NewCurlOtlpTransport();

// Whether an HTTP status is worth retrying under the OTLP/HTTP spec.
bool IsRetryableOtlpStatus(long http_status);

}  // namespace nbu::telemetry
