// The one network call of the exporter: POST an OTLP/HTTP JSON body, on libcurl, with short
// timeouts and a cancel flag so shutdown never waits on a slow collector.
#pragma once

#include "telemetry/otlp_config.h"
#include "util/status.h"

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace nbu::telemetry {

struct OtlpRequest {
  std::string url;
  const KeyValues* headers = nullptr;  // extra headers (API keys: never logged)
  std::string body;                    // JSON
  std::chrono::milliseconds timeout{10000};
};

// Enough for a partialSuccess with a long errorMessage; the rest of a body is not read.
constexpr size_t kMaxOtlpResponseBody = size_t{64} * 1024;

// Failures: kTransient for connection errors, timeouts and HTTP 429/502/503/504 (the OTLP
// retryable set); kPermanent for any other non-2xx answer; kCancelled when `cancel` was set.
// Messages hold the redacted URL and HTTP status and, except for 401 and 403, the first 200
// bytes of the answer's body with every header value (and every word of 8+ characters of one)
// replaced by "<redacted>" first: never header values.
struct OtlpResult {
  Status status;
  // 429 and 503 only: the wait the collector asked for (Retry-After), from when it answered.
  std::optional<std::chrono::seconds> retry_after;
  // 2xx only: the first kMaxOtlpResponseBody bytes of the body, which may hold partialSuccess.
  std::string body;
};

class OtlpTransport {
 public:
  virtual ~OtlpTransport() = default;
  virtual OtlpResult Post(const OtlpRequest& request, const std::atomic<bool>& cancel) = 0;
};

// libcurl easy handle reused across calls (keep-alive). Not thread-safe: one caller at a time
// (the exporter's thread). Sets CURLOPT_NOSIGNAL; follows no redirects.
std::unique_ptr<OtlpTransport> NewCurlOtlpTransport();

// `text` with every occurrence of each header value, and of each word of 8+ characters of one (the
// key of "Bearer <key>"), of each query value of `url` of 8+ characters (a gateway's key, as
// sent and decoded), and of the password of its user info (likewise, at any length; a user name
// without one at 8+) and the Basic credential curl makes of that, replaced by "<redacted>": a
// collector or gateway may quote what it
// refused, the headers it was sent, or the URL. Scrub before shortening: a cut through a value
// could leave it unrecognised.
std::string WithoutSecrets(const std::string& text, const KeyValues* headers, std::string_view url);

// Whether an HTTP status is worth retrying under the OTLP/HTTP spec.
bool IsRetryableOtlpStatus(long http_status);

// A Retry-After value, delta-seconds ("120") or an HTTP-date, as a wait from `now` (the time of
// the answer); a date in the past is 0. Nullopt when it is neither.
std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value, std::time_t now);

}  // namespace nbu::telemetry
