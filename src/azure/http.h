// HTTP transport on libcurl: keep-alive connections pooled across requests and threads, bodies
// streamed from a file range (never loaded whole) or from memory.
#pragma once

#include "util/rate_limiter.h"
#include "util/status.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace nbu::azure {

// Case-insensitive header map (names stored lower-case).
using HeaderMap = std::map<std::string, std::string>;

struct HttpRequest {
  std::string method = "GET";  // GET, PUT, HEAD, DELETE, POST
  std::string url;             // fully encoded URL, sent exactly as given (PATH_AS_IS)
  std::vector<std::pair<std::string, std::string>> headers;  // sent as given, in order
  // Body, one of: `body` (owned), `body_view` (borrowed: kept alive by the caller until Send
  // returns; used when `body` is empty), or `body_fd` >= 0 with [body_offset,
  // body_offset+body_length).
  std::string body;
  std::string_view body_view;
  int body_fd = -1;
  uint64_t body_offset = 0;
  uint64_t body_length = 0;
  std::chrono::milliseconds timeout{30000};  // whole-request timeout
  std::chrono::milliseconds connect_timeout{10000};
  size_t max_response_body = 0;  // 0: HttpTransportOptions::max_response_body
  // A stop request aborts the transfer within about a second (kCancelled): a shutdown does not
  // wait for a request that storage is slow to answer.
  std::stop_token stop;

  std::string_view MemoryBody() const { return body.empty() ? body_view : std::string_view(body); }
  uint64_t BodySize() const { return body_fd >= 0 ? body_length : MemoryBody().size(); }
  void SetHeader(const std::string& name, const std::string& value);  // replaces same name
  const std::string* FindHeader(const std::string& name) const;       // case-insensitive
};

struct HttpResponse {
  long status = 0;
  HeaderMap headers;  // lower-case names
  std::string body;   // capped at the request's max_response_body
  const std::string* Header(const std::string& lower_name) const;
};

struct HttpTransportOptions {
  std::string ca_file;  // empty: system store (and SSL_CERT_FILE, as libcurl does)
  size_t max_response_body = 4 << 20;
  size_t max_idle_handles = 64;
  // A transfer moving fewer than stall_bytes_per_s for stall_time is given up as stalled (a
  // connection that died without a reset), long before a large body's total timeout.
  std::chrono::seconds stall_time{60};
  long stall_bytes_per_s = 1024;
  // Request bodies are sent no faster than this shares out among every request of the
  // transport (APP_UPLOAD_CAP_MBPS); none: as fast as they go.
  std::shared_ptr<RateLimiter> send_limit = nullptr;
};

// Whether `path` can be HttpTransportOptions::ca_file: a readable file of PEM certificates, which
// curl loads as OpenSSL's X509_STORE_load_file does. With anything else (a directory, a DER
// certificate, an empty file) curl refuses every request (error 77); the message says why.
Status CheckCaBundle(const std::string& path);

struct TransferProgress;  // one request in flight (http.cpp)

// Thread-safe. Connection errors and timeouts come back as ErrorKind::kUnavailable with the
// curl error text; any HTTP status (including 4xx/5xx) is a successful Send.
class HttpTransport {
 public:
  explicit HttpTransport(HttpTransportOptions options = {});
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  Result<HttpResponse> Send(const HttpRequest& request);
  // How long the quietest request now in flight has gone without a byte sent or received (a
  // response header counts) since its start: storage that took a request and then went silent
  // shows here long before the stall check (stall_time) gives the request up. A request given
  // up after such a silence (a quarter of stall_time or more) keeps counting until storage sends
  // a byte of any answer, for at most a stall time after: its retry would start from 0, and the
  // retry's body moving proves nothing (the kernel takes it with no one at the other end). 0
  // with none.
  std::chrono::nanoseconds LongestSilence() const;
  std::chrono::seconds stall_time() const { return options_.stall_time; }

 private:
  struct Pool;
  HttpTransportOptions options_;
  std::unique_ptr<Pool> pool_;
  mutable std::mutex transfers_mu_;
  std::unordered_set<TransferProgress*> transfers_;  // in flight; guarded by transfers_mu_
  std::atomic<int64_t> given_up_silent_{0};  // steady ns the given-up silence began; 0: none
  int64_t given_up_at_ = 0;  // steady ns of the last such give-up; guarded by transfers_mu_
};

// Call once at process start, before threads (curl_global_init).
void GlobalHttpInit();

// `text` (curl's error message) with the user info of every URL or `user:password@host` in it
// replaced by "REDACTED": libcurl quotes the proxy it was given (HTTPS_PROXY=http://user:pw@...)
// in some errors, and these messages reach logs and the status API.
std::string WithoutUserInfo(std::string_view text);

}  // namespace nbu::azure
