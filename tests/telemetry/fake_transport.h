// Test double for OtlpTransport: records requests, answers from a script, can hold requests.
#pragma once

#include "telemetry/otlp_transport.h"

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

namespace nbu::telemetry::test {

struct RecordedRequest {
  std::string url;
  KeyValues headers;
  nlohmann::json body;
  std::chrono::milliseconds timeout;
};

// Shared between the test and the transport (the exporter owns the transport object).
struct FakeCollector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<RecordedRequest> requests;  // guarded by mu
  std::deque<OtlpResult> script;          // answers in order; empty = OK
  bool hold = false;                      // while true, Post waits (until cancelled)
  int in_flight = 0;

  std::vector<RecordedRequest> Requests() {
    std::lock_guard lock(mu);
    return requests;
  }
  void Release() {
    std::lock_guard lock(mu);
    hold = false;
    cv.notify_all();
  }
};

// A script entry: a status, with a Retry-After or (for a 2xx) a body.
inline OtlpResult Answer(Status status, std::optional<std::chrono::seconds> retry_after = {},
                         std::string body = {}) {
  return {std::move(status), retry_after, std::move(body)};
}

class FakeTransport final : public OtlpTransport {
 public:
  explicit FakeTransport(FakeCollector* c) : c_(c) {}
  OtlpResult Post(const OtlpRequest& r, const std::atomic<bool>& cancel) override {
    std::unique_lock lock(c_->mu);
    c_->requests.push_back(
        {r.url, r.headers ? *r.headers : KeyValues{}, nlohmann::json::parse(r.body), r.timeout});
    ++c_->in_flight;
    c_->cv.notify_all();
    while (c_->hold && !cancel) c_->cv.wait_for(lock, std::chrono::milliseconds(5));
    --c_->in_flight;
    if (cancel) return Answer({ErrorKind::kCancelled, "cancelled"});
    if (c_->script.empty()) return Answer(Status::Ok());
    OtlpResult a = c_->script.front();
    c_->script.pop_front();
    return a;
  }

 private:
  FakeCollector* c_;
};

}  // namespace nbu::telemetry::test
