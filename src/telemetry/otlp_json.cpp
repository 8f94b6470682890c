#include "telemetry/otlp_json.h"

#include <charconv>
#include <cmath>

namespace nbu::telemetry {
namespace {

using nlohmann::json;

constexpr int kStatusCodeError = 2;        // STATUS_CODE_ERROR
constexpr int kTemporalityCumulative = 2;  // AGGREGATION_TEMPORALITY_CUMULATIVE

json EncodeDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

SpanAttributes ToSpanAttributes(const Attributes& attrs) {
  SpanAttributes out;
  for (const auto& [k, v] : attrs) out.emplace_back(k, v);
  return out;
}

json EncodeResource(const OtlpResource& r) {
  return {{"attributes", EncodeAttributes(r.attributes)}};
}

json EncodeScope(const OtlpResource& r) {
  json scope = {{"name", r.scope_name}};
  if (!r.scope_version.empty()) scope["version"] = r.scope_version;
  return scope;
}

json EncodeSpan(const SpanData& s) {
  json span = {{"traceId", s.context.trace_id},
               {"spanId", s.context.span_id},
               {"name", s.name},
               {"kind", static_cast<int>(s.kind)},
               {"startTimeUnixNano", UnixNanos(s.start)},
               {"endTimeUnixNano", UnixNanos(s.end)},
               {"attributes", EncodeAttributes(s.attributes)}};
  if (!s.parent_span_id.empty()) span["parentSpanId"] = s.parent_span_id;
  json events = json::array();
  for (const SpanEvent& e : s.events) {
    events.push_back({{"timeUnixNano", UnixNanos(e.time)},
                      {"name", e.name},
                      {"attributes", EncodeAttributes(e.attributes)}});
  }
  if (!events.empty()) span["events"] = std::move(events);
  if (s.dropped_events > 0) span["droppedEventsCount"] = s.dropped_events;
  if (s.error) span["status"] = {{"code", kStatusCodeError}, {"message", s.status_message}};
  return span;
}

json MetricHeader(const InstrumentInfo& info) {
  return {{"name", info.name}, {"description", info.description}, {"unit", info.unit}};
}

json SumMetric(const Counter& c, const std::string& start, const std::string& now, size_t* points) {
  json data_points = json::array();
  for (const auto& [attrs, value] : c.Series()) {
    data_points.push_back({{"attributes", EncodeAttributes(ToSpanAttributes(attrs))},
                           {"startTimeUnixNano", start},
                           {"timeUnixNano", now},
                           {"asDouble", EncodeDouble(value)}});
  }
  if (data_points.empty()) return nullptr;
  *points += data_points.size();
  json m = MetricHeader(c.info());
  m["sum"] = {{"dataPoints", std::move(data_points)},
              {"aggregationTemporality", kTemporalityCumulative},
              {"isMonotonic", c.info().kind == InstrumentKind::kCounter}};
  return m;
}

json HistogramDataPoint(const Attributes& attrs, const HistogramPoint& p, const std::string& start,
                        const std::string& now) {
  json counts = json::array();
  for (uint64_t n : p.counts) counts.push_back(std::to_string(n));
  json bounds = json::array();
  for (double b : p.bounds) bounds.push_back(EncodeDouble(b));
  json point = {{"attributes", EncodeAttributes(ToSpanAttributes(attrs))},
                {"startTimeUnixNano", start},
                {"timeUnixNano", now},
                {"count", std::to_string(p.count)},
                {"sum", EncodeDouble(p.sum)},
                {"bucketCounts", std::move(counts)},
                {"explicitBounds", std::move(bounds)}};
  if (p.count > 0) {
    point["min"] = EncodeDouble(p.min);
    point["max"] = EncodeDouble(p.max);
  }
  return point;
}

json HistogramMetric(const Histogram& h, const std::string& start, const std::string& now,
                     size_t* points) {
  json data_points = json::array();
  for (const auto& [attrs, p] : h.Series()) {
    data_points.push_back(HistogramDataPoint(attrs, p, start, now));
  }
  if (data_points.empty()) return nullptr;
  *points += data_points.size();
  json m = MetricHeader(h.info());
  m["histogram"] = {{"dataPoints", std::move(data_points)},
                    {"aggregationTemporality", kTemporalityCumulative}};
  return m;
}

json GaugeMetric(const Gauge& g, const std::string& now, size_t* points) {
  double value = 0;
  try {
    value = g.read();
  } catch (...) {
    return nullptr;  // a broken callback loses its own point, not the export
  }
  ++*points;
  json m = MetricHeader(g.info);
  m["gauge"] = {
      {"dataPoints", json::array({{{"timeUnixNano", now}, {"asDouble", EncodeDouble(value)}}})}};
  return m;
}

}  // namespace

std::string UnixNanos(WallTime t) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return std::to_string(ns < 0 ? 0 : ns);
}

json EncodeAnyValue(const AttributeValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) return {{"stringValue", *s}};
  if (const auto* i = std::get_if<int64_t>(&value)) return {{"intValue", std::to_string(*i)}};
  if (const auto* d = std::get_if<double>(&value)) return {{"doubleValue", EncodeDouble(*d)}};
  return {{"boolValue", std::get<bool>(value)}};
}

json EncodeAttributes(const SpanAttributes& attributes) {
  json out = json::array();
  for (const auto& [key, value] : attributes) {
    out.push_back({{"key", key}, {"value", EncodeAnyValue(value)}});
  }
  return out;
}

json EncodeTraces(const std::vector<SpanData>& spans, const OtlpResource& resource) {
  json encoded = json::array();
  for (const SpanData& s : spans) encoded.push_back(EncodeSpan(s));
  json scope_spans =
      json::array({{{"scope", EncodeScope(resource)}, {"spans", std::move(encoded)}}});
  return {{"resourceSpans", json::array({{{"resource", EncodeResource(resource)},
                                          {"scopeSpans", std::move(scope_spans)}}})}};
}

json EncodeMetrics(const MetricsRegistry& registry, const OtlpResource& resource, WallTime start,
                   WallTime now, size_t* data_points) {
  size_t points = 0;
  const std::string start_ns = UnixNanos(start);
  const std::string now_ns = UnixNanos(now);
  json metrics = json::array();
  auto add = [&metrics](json m) {
    if (!m.is_null()) metrics.push_back(std::move(m));
  };
  for (const Counter* c : registry.Counters()) add(SumMetric(*c, start_ns, now_ns, &points));
  for (const Histogram* h : registry.Histograms())
    add(HistogramMetric(*h, start_ns, now_ns, &points));
  for (const Gauge& g : registry.Gauges()) add(GaugeMetric(g, now_ns, &points));
  if (data_points != nullptr) *data_points = points;
  json scope_metrics =
      json::array({{{"scope", EncodeScope(resource)}, {"metrics", std::move(metrics)}}});
  return {{"resourceMetrics", json::array({{{"resource", EncodeResource(resource)},
                                            {"scopeMetrics", std::move(scope_metrics)}}})}};
}

OtlpPartialSuccess ParsePartialSuccess(std::string_view body, const char* rejected_field) {
  OtlpPartialSuccess out;
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("partialSuccess")) return out;
  const json& ps = j.at("partialSuccess");
  if (!ps.is_object()) return out;
  if (ps.contains(rejected_field)) {
    const json& r = ps.at(rejected_field);
    if (r.is_number_unsigned()) {
      out.rejected = r.get<uint64_t>();
    } else if (r.is_string()) {
      const std::string& s = r.get_ref<const std::string&>();
      uint64_t n = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
      if (ec == std::errc() && end == s.data() + s.size()) out.rejected = n;
    }
  }
  if (ps.contains("errorMessage") && ps.at("errorMessage").is_string()) {
    out.error_message = ps.at("errorMessage").get<std::string>();
  }
  return out;
}

}  // namespace nbu::telemetry
