// OTLP protobuf-JSON encoding of spans and metrics.
#include "telemetry/otlp_json.h"

#include <gtest/gtest.h>

#include <cmath>

namespace nbu::telemetry {
namespace {

using nlohmann::json;

const WallTime kT0 = WallTime(std::chrono::seconds(1'700'000'000));

TEST(OtlpJsonTest, AnyValues) {
  EXPECT_EQ(EncodeAnyValue(std::string("x")), json({{"stringValue", "x"}}));
  EXPECT_EQ(EncodeAnyValue(int64_t{-9007199254740993}), json({{"intValue", "-9007199254740993"}}));
  EXPECT_EQ(EncodeAnyValue(1.5), json({{"doubleValue", 1.5}}));
  EXPECT_EQ(EncodeAnyValue(INFINITY), json({{"doubleValue", "Infinity"}}));
  EXPECT_EQ(EncodeAnyValue(true), json({{"boolValue", true}}));
}

TEST(OtlpJsonTest, SpanFields) {
  SpanData s;
  s.context = {std::string(32, 'a'), std::string(16, 'b')};
  s.parent_span_id = std::string(16, 'c');
  s.name = "upload";
  s.kind = SpanKind::kClient;
  s.start = kT0;
  s.end = kT0 + std::chrono::milliseconds(1500);
  s.attributes = {{"blob.size", int64_t{42}}};
  s.events = {{"retry", kT0 + std::chrono::milliseconds(5), {{"attempt", int64_t{2}}}}};
  s.error = true;
  s.status_message = "HTTP 503";
  OtlpResource resource;
  resource.attributes = {{"service.name", std::string("svc")}};
  const json j = EncodeTraces({s}, resource);
  const json& rs = j.at("resourceSpans").at(0);
  EXPECT_EQ(rs.at("resource").at("attributes").at(0).at("key"), "service.name");
  const json& span = rs.at("scopeSpans").at(0).at("spans").at(0);
  EXPECT_EQ(span.at("traceId"), std::string(32, 'a'));
  EXPECT_EQ(span.at("spanId"), std::string(16, 'b'));
  EXPECT_EQ(span.at("parentSpanId"), std::string(16, 'c'));
  EXPECT_EQ(span.at("kind"), 3);
  EXPECT_EQ(span.at("startTimeUnixNano"), "1700000000000000000");
  EXPECT_EQ(span.at("endTimeUnixNano"), "1700000001500000000");
  EXPECT_EQ(span.at("attributes").at(0).at("value").at("intValue"), "42");
  EXPECT_EQ(span.at("events").at(0).at("name"), "retry");
  EXPECT_EQ(span.at("events").at(0).at("timeUnixNano"), "1700000000005000000");
  EXPECT_EQ(span.at("status").at("code"), 2);
  EXPECT_EQ(span.at("status").at("message"), "HTTP 503");
}

TEST(OtlpJsonTest, RootSpanHasNoParentAndNoStatus) {
  SpanData s;
  s.context = {std::string(32, 'a'), std::string(16, 'b')};
  const json span = EncodeTraces({s}, {}).at("resourceSpans")[0]["scopeSpans"][0]["spans"][0];
  EXPECT_FALSE(span.contains("parentSpanId"));
  EXPECT_FALSE(span.contains("status"));
}

TEST(OtlpJsonTest, MetricKinds) {
  MetricsRegistry reg;
  reg.AddCounter("files.processed", "Files", "1").Add(3, {{"container", "raw"}});
  reg.AddCounter("queue.depth", "Depth", "1", true).Add(-1);
  reg.AddCounter("never.used", "Empty", "1");
  reg.AddHistogram("upload.duration", "Time", "s", {0.5, 1}).Record(0.7);
  reg.AddGauge("pending.age", "Age", "s", [] { return 4.0; });
  size_t points = 0;
  const json j = EncodeMetrics(reg, {}, kT0, kT0 + std::chrono::seconds(60), &points);
  EXPECT_EQ(points, 4u);
  const json& metrics = j.at("resourceMetrics").at(0).at("scopeMetrics").at(0).at("metrics");
  ASSERT_EQ(metrics.size(), 4u) << "instruments without series are left out";
  EXPECT_EQ(metrics[0].at("name"), "files.processed");
  EXPECT_EQ(metrics[0].at("sum").at("isMonotonic"), true);
  EXPECT_EQ(metrics[0].at("sum").at("aggregationTemporality"), 2);
  const json& dp = metrics[0].at("sum").at("dataPoints").at(0);
  EXPECT_EQ(dp.at("asDouble"), 3.0);
  EXPECT_EQ(dp.at("startTimeUnixNano"), "1700000000000000000");
  EXPECT_EQ(dp.at("timeUnixNano"), "1700000060000000000");
  EXPECT_EQ(dp.at("attributes").at(0).at("value").at("stringValue"), "raw");
  EXPECT_EQ(metrics[1].at("sum").at("isMonotonic"), false);
  const json& h = metrics[2].at("histogram");
  EXPECT_EQ(metrics[2].at("unit"), "s");
  EXPECT_EQ(h.at("aggregationTemporality"), 2);
  EXPECT_EQ(h.at("dataPoints")[0].at("bucketCounts"), json({"0", "1", "0"}));
  EXPECT_EQ(h.at("dataPoints")[0].at("explicitBounds"), json({0.5, 1.0}));
  EXPECT_EQ(h.at("dataPoints")[0].at("count"), "1");
  EXPECT_EQ(metrics[3].at("gauge").at("dataPoints")[0].at("asDouble"), 4.0);
}

TEST(OtlpJsonTest, PartialSuccess) {
  const auto p = ParsePartialSuccess(
      R"({"partialSuccess":{"rejectedSpans":"5","errorMessage":"too old"}})", "rejectedSpans");
  EXPECT_EQ(p.rejected, 5u);
  EXPECT_EQ(p.error_message, "too old");
  EXPECT_EQ(
      ParsePartialSuccess(R"({"partialSuccess":{"rejectedDataPoints":7}})", "rejectedDataPoints")
          .rejected,
      7u);
  EXPECT_EQ(ParsePartialSuccess(R"({"partialSuccess":{"rejectedLogRecords":"9"}})", "rejectedSpans")
                .rejected,
            0u)
      << "another signal's field";
  const auto warning =
      ParsePartialSuccess(R"({"partialSuccess":{"errorMessage":"slow down"}})", "rejectedSpans");
  EXPECT_EQ(warning.rejected, 0u);
  EXPECT_EQ(warning.error_message, "slow down");
  for (const char* plain : {"", "{}", "not json", "[1]", R"({"partialSuccess":null})",
                            R"({"partialSuccess":{"rejectedSpans":"-3"}})",
                            R"({"partialSuccess":{"rejectedSpans":-3}})",
                            R"({"partialSuccess":{"rejectedSpans":"5x"}})"}) {
    const auto none = ParsePartialSuccess(plain, "rejectedSpans");
    EXPECT_EQ(none.rejected, 0u) << plain;
    EXPECT_EQ(none.error_message, "") << plain;
  }
}

}  // namespace
}  // namespace nbu::telemetry
