#include "otlp_receiver.h"

#include <httplib.h>

#include <regex>
#include <set>
#include <stdexcept>

namespace nbu::telemetry::test {
namespace {

using nlohmann::json;

struct SchemaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Check(bool ok, const std::string& what) {
  if (!ok) throw SchemaError(what);
}

// Every key of `obj` must be in `allowed` (protobuf-JSON: unknown fields are an error here).
const json& Obj(const json& obj, std::initializer_list<const char*> allowed,
                const std::string& where) {
  Check(obj.is_object(), where + " is not an object");
  std::set<std::string> ok(allowed.begin(), allowed.end());
  for (const auto& [k, v] : obj.items()) Check(ok.count(k) > 0, where + ": unknown field " + k);
  return obj;
}

const json& Arr(const json& obj, const char* key, const std::string& where) {
  static const json kEmpty = json::array();
  if (!obj.contains(key)) return kEmpty;
  Check(obj.at(key).is_array(), where + "." + key + " is not an array");
  return obj.at(key);
}

std::string Str(const json& obj, const char* key, const std::string& where) {
  if (!obj.contains(key)) return "";
  Check(obj.at(key).is_string(), where + "." + key + " is not a string");
  return obj.at(key).get<std::string>();
}

// fixed64/uint64 in proto-JSON: a decimal string (numbers are accepted by proto3 too, but the
// exporter promises strings).
uint64_t U64(const json& obj, const char* key, const std::string& where) {
  const std::string s = Str(obj, key, where);
  Check(std::regex_match(s, std::regex("[0-9]+")), where + "." + key + " is not a uint64 string");
  return std::stoull(s);
}

void Hex(const std::string& s, size_t len, const std::string& what) {
  Check(s.size() == len && std::regex_match(s, std::regex("[0-9a-f]+")), what + " is not hex");
}

double Number(const json& v, const std::string& where) {
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    Check(s == "NaN" || s == "Infinity" || s == "-Infinity", where + " bad double string");
    return s == "NaN" ? NAN : (s == "Infinity" ? INFINITY : -INFINITY);
  }
  Check(v.is_number(), where + " is not a number");
  return v.get<double>();
}

AnyValues Attributes(const json& parent, const std::string& where) {
  AnyValues out;
  for (const json& kv : Arr(parent, "attributes", where)) {
    Obj(kv, {"key", "value"}, where + ".attribute");
    const std::string key = Str(kv, "key", where);
    const json& v = Obj(kv.at("value"), {"stringValue", "intValue", "doubleValue", "boolValue"},
                        where + "." + key);
    Check(v.size() == 1, where + "." + key + " must have exactly one value");
    if (v.contains("intValue")) {
      Check(std::regex_match(Str(v, "intValue", key), std::regex("-?[0-9]+")), key + " intValue");
    }
    if (v.contains("stringValue")) Str(v, "stringValue", key);
    if (v.contains("boolValue")) Check(v.at("boolValue").is_boolean(), key + " boolValue");
    if (v.contains("doubleValue")) Number(v.at("doubleValue"), key);
    Check(out.emplace(key, v).second, where + ": duplicate attribute " + key);
  }
  return out;
}

AnyValues Resource(const json& rs) {
  return Attributes(Obj(rs.at("resource"), {"attributes", "droppedAttributesCount"}, "resource"),
                    "resource");
}

std::vector<ReceivedSpan> ParseTraces(const json& body) {
  std::vector<ReceivedSpan> out;
  Obj(body, {"resourceSpans"}, "request");
  for (const json& rs : Arr(body, "resourceSpans", "request")) {
    Obj(rs, {"resource", "scopeSpans", "schemaUrl"}, "resourceSpans");
    const AnyValues resource = Resource(rs);
    for (const json& ss : Arr(rs, "scopeSpans", "resourceSpans")) {
      Obj(ss, {"scope", "spans", "schemaUrl"}, "scopeSpans");
      const std::string scope =
          Str(Obj(ss.at("scope"), {"name", "version"}, "scope"), "name", "scope");
      for (const json& s : Arr(ss, "spans", "scopeSpans")) {
        Obj(s,
            {"traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano",
             "endTimeUnixNano", "attributes", "events", "status", "traceState", "links",
             "droppedAttributesCount", "droppedEventsCount", "droppedLinksCount", "flags"},
            "span");
        ReceivedSpan r;
        r.resource = resource;
        r.scope_name = scope;
        r.trace_id = Str(s, "traceId", "span");
        r.span_id = Str(s, "spanId", "span");
        r.parent_span_id = Str(s, "parentSpanId", "span");
        Hex(r.trace_id, 32, "traceId");
        Hex(r.span_id, 16, "spanId");
        if (!r.parent_span_id.empty()) Hex(r.parent_span_id, 16, "parentSpanId");
        r.name = Str(s, "name", "span");
        Check(s.at("kind").is_number_integer(), "kind is not an integer enum");
        r.kind = s.at("kind").get<int>();
        Check(r.kind >= 0 && r.kind <= 5, "kind out of range");
        r.start_ns = U64(s, "startTimeUnixNano", "span");
        r.end_ns = U64(s, "endTimeUnixNano", "span");
        Check(r.start_ns <= r.end_ns, "span ends before it starts");
        r.attributes = Attributes(s, "span");
        for (const json& e : Arr(s, "events", "span")) {
          Obj(e, {"timeUnixNano", "name", "attributes", "droppedAttributesCount"}, "event");
          U64(e, "timeUnixNano", "event");
          r.events.emplace_back(Str(e, "name", "event"), Attributes(e, "event"));
        }
        if (s.contains("status")) {
          const json& st = Obj(s.at("status"), {"code", "message"}, "status");
          Check(st.at("code").is_number_integer(), "status.code is not an integer enum");
          r.status_code = st.at("code").get<int>();
          r.status_message = Str(st, "message", "status");
        }
        out.push_back(std::move(r));
      }
    }
  }
  return out;
}

ReceivedPoint ParsePoint(const json& p, const std::string& type) {
  ReceivedPoint r;
  if (type == "histogram") {
    Obj(p,
        {"attributes", "startTimeUnixNano", "timeUnixNano", "count", "sum", "bucketCounts",
         "explicitBounds", "min", "max", "flags", "exemplars"},
        "histogram point");
    r.count = U64(p, "count", "point");
    r.sum = Number(p.at("sum"), "sum");
    for (const json& c : Arr(p, "bucketCounts", "point")) {
      Check(c.is_string(), "bucketCounts must be uint64 strings");
      r.bucket_counts.push_back(std::stoull(c.get<std::string>()));
    }
    for (const json& b : Arr(p, "explicitBounds", "point")) r.bounds.push_back(Number(b, "bound"));
    Check(r.bucket_counts.size() == r.bounds.size() + 1, "bucketCounts != explicitBounds + 1");
    uint64_t total = 0;
    for (uint64_t c : r.bucket_counts) total += c;
    Check(total == r.count, "bucket counts do not add up to count");
  } else {
    Obj(p,
        {"attributes", "startTimeUnixNano", "timeUnixNano", "asDouble", "asInt", "flags",
         "exemplars"},
        type + " point");
    Check(p.contains("asDouble") != p.contains("asInt"), "exactly one of asDouble/asInt");
    r.value = p.contains("asDouble") ? Number(p.at("asDouble"), "asDouble")
                                     : static_cast<double>(std::stoll(Str(p, "asInt", "point")));
  }
  if (p.contains("startTimeUnixNano")) U64(p, "startTimeUnixNano", "point");
  U64(p, "timeUnixNano", "point");
  r.attributes = Attributes(p, "point");
  return r;
}

std::vector<ReceivedMetric> ParseMetrics(const json& body) {
  std::vector<ReceivedMetric> out;
  Obj(body, {"resourceMetrics"}, "request");
  for (const json& rm : Arr(body, "resourceMetrics", "request")) {
    Obj(rm, {"resource", "scopeMetrics", "schemaUrl"}, "resourceMetrics");
    const AnyValues resource = Resource(rm);
    for (const json& sm : Arr(rm, "scopeMetrics", "resourceMetrics")) {
      Obj(sm, {"scope", "metrics", "schemaUrl"}, "scopeMetrics");
      for (const json& m : Arr(sm, "metrics", "scopeMetrics")) {
        Obj(m, {"name", "description", "unit", "sum", "histogram", "gauge", "metadata"}, "metric");
        ReceivedMetric r;
        r.resource = resource;
        r.name = Str(m, "name", "metric");
        r.description = Str(m, "description", "metric");
        r.unit = Str(m, "unit", "metric");
        for (const char* type : {"sum", "histogram", "gauge"}) {
          if (!m.contains(type)) continue;
          Check(r.type.empty(), r.name + ": more than one data kind");
          r.type = type;
          const json& d =
              Obj(m.at(type), {"dataPoints", "aggregationTemporality", "isMonotonic"}, type);
          if (r.type != "gauge") {
            Check(d.at("aggregationTemporality").is_number_integer(), "temporality enum");
            r.temporality = d.at("aggregationTemporality").get<int>();
          }
          if (d.contains("isMonotonic")) {
            Check(r.type == "sum" && d.at("isMonotonic").is_boolean(), "isMonotonic");
            r.is_monotonic = d.at("isMonotonic").get<bool>();
          }
          for (const json& p : Arr(d, "dataPoints", type)) r.points.push_back(ParsePoint(p, type));
        }
        Check(!r.type.empty(), r.name + ": no data");
        out.push_back(std::move(r));
      }
    }
  }
  return out;
}

}  // namespace

OtlpReceiver::OtlpReceiver() : server_(std::make_unique<httplib::Server>()) {
  for (const std::string signal : {"traces", "metrics"}) {
    server_->Post("/v1/" + signal,
                  [this, signal](const httplib::Request& req, httplib::Response& res) {
                    {
                      std::lock_guard lock(mu_);
                      last_headers_.clear();
                      for (const auto& [k, v] : req.headers) last_headers_[k] = v;
                    }
                    const Answer a = Handle(signal, req.get_header_value("Content-Type"), req.body);
                    res.status = a.status;
                    for (const auto& [k, v] : a.headers) res.set_header(k, v);
                    res.set_content(a.body, "application/json");
                  });
  }
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("receiver: bind failed");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // A listen that fails at once is never seen running: give up rather than spin forever.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!server_->is_running() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server_->is_running()) {
    // The thread may yet start listening, so the server it uses is left alive (leaked).
    server_->stop();
    thread_.detach();
    [[maybe_unused]] httplib::Server* leaked = server_.release();
    throw std::runtime_error("receiver: not listening after 30 s");
  }
}

OtlpReceiver::~OtlpReceiver() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  server_->stop();
  thread_.join();
}

OtlpReceiver::Answer OtlpReceiver::Handle(const std::string& signal,
                                          const std::string& content_type,
                                          const std::string& body) {
  std::unique_lock lock(mu_);
  ++requests_;
  cv_.wait_for(lock, delay_, [this] { return stopping_; });
  if (content_type != "application/json") {
    errors_.push_back("Content-Type was \"" + content_type + "\"");
    return {415, {}, "{}"};
  }
  try {
    const json j = json::parse(body);
    if (signal == "traces") {
      auto spans = ParseTraces(j);
      spans_.insert(spans_.end(), spans.begin(), spans.end());
    } else {
      auto metrics = ParseMetrics(j);
      metrics_.insert(metrics_.end(), metrics.begin(), metrics.end());
    }
    return answer_;
  } catch (const std::exception& e) {
    errors_.push_back(signal + ": " + e.what());
    return {400, {}, "{}"};
  }
}

void OtlpReceiver::SetDelay(std::chrono::milliseconds d) {
  std::lock_guard lock(mu_);
  delay_ = d;
}

void OtlpReceiver::SetAnswer(int status, std::map<std::string, std::string> headers,
                             std::string body) {
  std::lock_guard lock(mu_);
  answer_ = {status, std::move(headers), std::move(body)};
}

std::vector<ReceivedSpan> OtlpReceiver::Spans() const {
  std::lock_guard lock(mu_);
  return spans_;
}

std::vector<ReceivedMetric> OtlpReceiver::Metrics() const {
  std::lock_guard lock(mu_);
  return metrics_;
}

std::vector<std::string> OtlpReceiver::Errors() const {
  std::lock_guard lock(mu_);
  return errors_;
}

std::map<std::string, std::string> OtlpReceiver::LastHeaders() const {
  std::lock_guard lock(mu_);
  return last_headers_;
}

int OtlpReceiver::Requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

}  // namespace nbu::telemetry::test
