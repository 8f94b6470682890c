// The Telemetry facade: wiring of registry, tracer and exporter; the no-export path.
#include "telemetry/telemetry.h"

#include "fake_transport.h"
#include "telemetry/prometheus.h"

#include <gtest/gtest.h>

namespace nbu::telemetry {
namespace {

using test::FakeCollector;
using test::FakeTransport;

TEST(TelemetryTest, WithoutEndpointSpansGetIdsButGoNowhere) {
  SimulatedClock clock(false);
  Telemetry t(TelemetryConfig{}, clock);
  EXPECT_FALSE(t.exporting());
  EXPECT_EQ(t.exporter(), nullptr);
  Span root = t.tracer().StartSpan("file");
  Span child = t.tracer().StartSpan("upload", &root.context());
  EXPECT_TRUE(root.context().valid());
  EXPECT_EQ(child.context().trace_id, root.context().trace_id);
  child.End();
  root.End();
  t.Start();
  t.Shutdown(clock.Now());
  // The exporter's own counters exist for dashboards even when nothing exports.
  EXPECT_NE(RenderPrometheus(t.metrics()).find("# TYPE otel_exporter_dropped_total counter"),
            std::string::npos);
}

TEST(TelemetryTest, SdkDisabledMeansNoExporter) {
  SimulatedClock clock(false);
  TelemetryConfig config;
  config.traces_url = "http://127.0.0.1:1/v1/traces";
  config.sdk_disabled = true;
  Telemetry t(config, clock);
  EXPECT_FALSE(t.exporting());
}

TEST(TelemetryTest, SpansReachTheExporterAndShutdownFlushes) {
  SimulatedClock clock(false);
  TelemetryConfig config;
  config.traces_url = "http://127.0.0.1:1/v1/traces";
  config.metrics_url = "http://127.0.0.1:1/v1/metrics";
  FakeCollector collector;
  Telemetry t(config, clock, std::make_unique<FakeTransport>(&collector));
  ASSERT_TRUE(t.exporting());
  t.metrics().AddCounter("files.processed", "Files", "1").Add(1);
  {
    Span s = t.tracer().StartSpan("file");
    s.SetAttribute("file.path", std::string("/nfs/a\xff.bin"));  // not UTF-8: must not throw
  }
  EXPECT_EQ(t.exporter()->queue_size(), 1u);
  t.Shutdown(clock.Now() + std::chrono::seconds(5));
  const auto requests = collector.Requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].url, config.traces_url);
  EXPECT_EQ(requests[1].url, config.metrics_url);
  EXPECT_EQ(t.metrics().Counters()[1]->Value({{"signal", "spans"}}), 1)
      << "otel.exporter.exported counts the span";
  const std::string text = RenderPrometheus(t.metrics());
  EXPECT_NE(text.find("otel_exporter_queue_size 0"), std::string::npos) << text;
}

}  // namespace
}  // namespace nbu::telemetry
