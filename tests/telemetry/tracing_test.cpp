// Spans: the bound on a span's events, and how the export tells what it dropped.
#include "telemetry/tracing.h"

#include "telemetry/otlp_json.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <vector>

namespace nbu::telemetry {
namespace {

// A file's root span gets an event per failed try and can live for days (a storage outage):
// like OpenTelemetry's default SpanLimits, a span keeps its first 128 events and counts the rest.
TEST(TracingTest, ASpanKeepsItsFirst128EventsAndCountsTheRest) {
  SimulatedClock clock(/*auto_advance=*/false);
  std::vector<SpanData> finished;
  Tracer tracer(clock, [&finished](SpanData&& s) { finished.push_back(std::move(s)); });
  for (const int64_t added : {128, 200}) {
    Span span = tracer.StartSpan("file");
    for (int64_t i = 0; i < added; ++i) span.AddEvent("attempt_failed", {{"attempt", i}});
  }
  ASSERT_EQ(finished.size(), 2u);
  for (const SpanData& s : finished) {
    EXPECT_EQ(s.events.size(), 128u);
    ASSERT_GE(s.events.size(), 128u);
    EXPECT_EQ(std::get<int64_t>(s.events[0].attributes.at(0).second), 0);
    EXPECT_EQ(std::get<int64_t>(s.events[127].attributes.at(0).second), 127) << "the first kept";
  }
  const nlohmann::json spans =
      EncodeTraces(finished, {}).at("resourceSpans")[0]["scopeSpans"][0]["spans"];
  EXPECT_EQ(spans[0].at("events").size(), 128u);
  EXPECT_FALSE(spans[0].contains("droppedEventsCount")) << "none dropped: left out, as proto3 JSON";
  EXPECT_EQ(spans[1].at("events").size(), 128u);
  EXPECT_EQ(spans[1].value("droppedEventsCount", nlohmann::json()), 72) << spans[1].dump();
}

}  // namespace
}  // namespace nbu::telemetry
