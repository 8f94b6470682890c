// A stand-in OTLP/HTTP collector for tests: cpp-httplib on 127.0.0.1 (port 0) that accepts
// POST /v1/traces and /v1/metrics with Content-Type application/json, validates the body
// against the OTLP protobuf-JSON schema (unknown fields, wrong types, bad ids are rejected
// with 400 and recorded as errors) and records what arrived.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace nbu::telemetry::test {

using AnyValues = std::map<std::string, nlohmann::json>;  // key -> {"stringValue": ...} etc.

struct ReceivedSpan {
  AnyValues resource;
  std::string scope_name;
  std::string trace_id, span_id, parent_span_id, name;
  int kind = 0;
  uint64_t start_ns = 0, end_ns = 0;
  AnyValues attributes;
  std::vector<std::pair<std::string, AnyValues>> events;
  int status_code = 0;
  std::string status_message;
};

struct ReceivedPoint {
  AnyValues attributes;
  double value = 0;                     // sum/gauge
  uint64_t count = 0;                   // histogram
  double sum = 0;                       // histogram
  std::vector<uint64_t> bucket_counts;  // histogram
  std::vector<double> bounds;           // histogram
};

struct ReceivedMetric {
  AnyValues resource;
  std::string name, description, unit;
  std::string type;  // "sum", "histogram", "gauge"
  bool is_monotonic = false;
  int temporality = 0;
  std::vector<ReceivedPoint> points;
};

class OtlpReceiver {
 public:
  OtlpReceiver();  // listening on return
  ~OtlpReceiver();
  OtlpReceiver(const OtlpReceiver&) = delete;
  OtlpReceiver& operator=(const OtlpReceiver&) = delete;

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Each request waits this long (interruptibly) before answering.
  void SetDelay(std::chrono::milliseconds d);
  // Answer every valid request with this HTTP status, extra headers (e.g. Retry-After, Date)
  // and JSON body (e.g. a partialSuccess), after recording it; 200, none and "{}" by default.
  void SetAnswer(int status, std::map<std::string, std::string> headers = {},
                 std::string body = "{}");

  std::vector<ReceivedSpan> Spans() const;
  std::vector<ReceivedMetric> Metrics() const;  // every metric of every request, in order
  std::vector<std::string> Errors() const;      // schema or protocol violations
  std::map<std::string, std::string> LastHeaders() const;
  int Requests() const;

 private:
  struct Answer {
    int status = 200;
    std::map<std::string, std::string> headers;
    std::string body = "{}";
  };
  Answer Handle(const std::string& signal, const std::string& content_type,
                const std::string& body);

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::chrono::milliseconds delay_{0};
  Answer answer_;
  int requests_ = 0;
  std::vector<ReceivedSpan> spans_;
  std::vector<ReceivedMetric> metrics_;
  std::vector<std::string> errors_;
  std::map<std::string, std::string> last_headers_;
};

}  // namespace nbu::telemetry::test
