// Test support: an HTTP/1.1 proxy on 127.0.0.1 that sits between a client and a real server
// (Azurite) and injects faults per request: an error status (with or without Retry-After), a
// dropped connection (before or after forwarding), a delay, or one bit of the body flipped on
// the way, or a header dropped from the answer. Requests are otherwise forwarded byte for byte, so
// signatures stay valid. One request per client connection (it answers with "Connection: close"),
// which keeps the proxy small and is legal HTTP.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace nbu::test {

struct ProxyRequest {
  std::string method;
  std::string target;  // raw request target, e.g. /devstoreaccount1/c/blob?comp=block&blockid=..
  size_t index = 0;    // 0-based count of requests seen by the proxy
};

struct FaultAction {
  enum class Kind {
    kForward,
    kStatus,
    kDropBefore,
    kDropAfter,
    kDelay,
    kFlipBodyBit,
    kDropResponseHeader
  };
  Kind kind = Kind::kForward;
  int status = 0;           // kStatus
  std::string error_code;   // kStatus: x-ms-error-code
  std::string retry_after;  // kStatus: Retry-After header value, if any
  int delay_ms = 0;         // kDelay: wait, then forward
  std::string header;       // kDropResponseHeader: its name, any case
  static FaultAction Forward() { return {}; }
  static FaultAction Status(int s, std::string code, std::string retry_after = "") {
    return {Kind::kStatus, s, std::move(code), std::move(retry_after), 0, {}};
  }
  static FaultAction DropBefore() { return {Kind::kDropBefore, 0, {}, {}, 0, {}}; }
  static FaultAction DropAfter() { return {Kind::kDropAfter, 0, {}, {}, 0, {}}; }
  static FaultAction Delay(int ms) { return {Kind::kDelay, 0, {}, {}, ms, {}}; }
  // The lowest bit of the body's middle byte, then forwarded (headers untouched).
  static FaultAction FlipBodyBit() { return {Kind::kFlipBodyBit, 0, {}, {}, 0, {}}; }
  // Forwarded, and the answer passed back without the header `name` (a proxy that strips it).
  static FaultAction DropResponseHeader(std::string name) {
    return {Kind::kDropResponseHeader, 0, {}, {}, 0, std::move(name)};
  }
};

class FaultProxy {
 public:
  using Plan = std::function<FaultAction(const ProxyRequest&)>;
  explicit FaultProxy(int upstream_port, Plan plan = nullptr);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  void SetPlan(Plan plan);
  // Requests seen whose target contains `needle` (and method, if given).
  size_t Count(const std::string& needle, const std::string& method = "") const;
  size_t faults() const { return faults_.load(); }
  void ResetCounts();
  // Connections accepted whose handling (reading, any delay, forwarding, answering) has not ended.
  size_t active() const;
  // Waits until none is active and none waits to be accepted: every request a client sent before
  // this was called (and before it went away) has reached the server or been dropped. False if
  // that did not happen within `timeout`.
  bool WaitIdle(std::chrono::milliseconds timeout) const;

 private:
  void AcceptLoop();
  void Handle(int client);
  int upstream_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> index_{0};
  std::atomic<size_t> faults_{0};
  mutable std::mutex mu_;
  Plan plan_;                          // guarded by mu_
  std::vector<ProxyRequest> seen_;     // guarded by mu_
  std::vector<std::thread> handlers_;  // guarded by mu_
  size_t active_ = 0;                  // guarded by mu_
  mutable std::condition_variable idle_;
  std::thread acceptor_;
};

}  // namespace nbu::test
