// Many threads ending spans while the exporter thread is stuck on a collector that does not
// answer: recording never blocks, and every span is either queued or counted as dropped.
#include "telemetry/telemetry.h"

#include "fake_transport.h"
#include "support/captured_log.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <thread>

namespace nbu::telemetry {
namespace {

using std::chrono::milliseconds;

TEST(OtlpConcurrencyTest, StuckCollectorNeverBlocksSpanRecording) {
  TelemetryConfig config;
  config.traces_url = "http://127.0.0.1:1/v1/traces";
  config.span_schedule_delay = milliseconds(10);
  config.max_queue_size = 64;
  config.max_export_batch_size = 16;
  test::FakeCollector collector;
  collector.hold = true;  // the first POST hangs until cancelled or released
  Telemetry t(config, RealClock::Instance(), std::make_unique<test::FakeTransport>(&collector));
  t.Start();
  { Span first = t.tracer().StartSpan("first"); }
  ASSERT_TRUE(nbu::test::WaitFor(
      [&] {
        std::lock_guard lock(collector.mu);
        return collector.in_flight == 1;
      },
      std::chrono::seconds(30)));

  constexpr int kThreads = 4;
  constexpr int kSpansPerThread = 2000;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&t] {
      for (int j = 0; j < kSpansPerThread; ++j) {
        Span root = t.tracer().StartSpan("file");
        Span child = t.tracer().StartSpan("upload", &root.context());
        child.SetAttribute("bytes", int64_t{j});
      }
    });
  }
  for (auto& th : threads) th.join();  // would hang here if recording waited on the collector

  const ExporterStats stats = t.exporter()->stats();
  const uint64_t total = 2ull * kThreads * kSpansPerThread;
  EXPECT_EQ(t.exporter()->queue_size(), 64u);
  EXPECT_EQ(stats.spans_dropped_queue_full, total - 64);
  EXPECT_EQ(t.metrics().Counters()[0]->Value({{"signal", "spans"}, {"reason", "queue_full"}}),
            static_cast<double>(total - 64));

  collector.Release();
  t.Shutdown(RealClock::Instance().Now() + std::chrono::seconds(30));
  const ExporterStats end = t.exporter()->stats();
  EXPECT_EQ(end.spans_exported + end.spans_dropped_export + end.spans_dropped_queue_full,
            total + 1);
}

TEST(OtlpConcurrencyTest, ShutdownCancelsAHungRequestAtTheDeadline) {
  nbu::test::CapturedLog logged("otlp export failing");
  TelemetryConfig config;
  config.traces_url = "http://127.0.0.1:1/v1/traces";
  config.span_schedule_delay = milliseconds(1);
  config.export_timeout = std::chrono::hours(1);
  test::FakeCollector collector;
  collector.hold = true;
  Telemetry t(config, RealClock::Instance(), std::make_unique<test::FakeTransport>(&collector));
  t.Start();
  t.tracer().StartSpan("s").End();
  ASSERT_TRUE(nbu::test::WaitFor(
      [&] {
        std::lock_guard lock(collector.mu);
        return collector.in_flight == 1;
      },
      std::chrono::seconds(30)));
  t.Shutdown(RealClock::Instance().Now() + milliseconds(50));  // returns: the hold is cancelled
  EXPECT_EQ(t.exporter()->stats().spans_dropped_export, 1u);
  // Dropped by the deadline, as docs/observability.md says: reason=shutdown, and the collector
  // is not reported failing (it was never given the time to answer).
  const telemetry::Counter* dropped = t.metrics().Counters()[0];
  EXPECT_EQ(dropped->info().name, "otel.exporter.dropped");
  EXPECT_EQ(dropped->Value({{"signal", "spans"}, {"reason", "shutdown"}}), 1);
  EXPECT_EQ(dropped->Value({{"signal", "spans"}, {"reason", "export_failed"}}), 0);
  EXPECT_EQ(t.exporter()->stats().export_failures, 0u);
  for (const telemetry::Counter* c : t.metrics().Counters()) {
    if (c->info().name == "otel.exporter.failures") {
      EXPECT_EQ(c->Value({{"signal", "spans"}}), 0);
    }
  }
  EXPECT_EQ(logged.Lines(), std::vector<std::string>{});
}

TEST(OtlpConcurrencyTest, ShutdownKeepsItsDeadlineUnderALongRetryAfter) {
  TelemetryConfig config;
  config.traces_url = "http://127.0.0.1:1/v1/traces";
  config.span_schedule_delay = milliseconds(1);
  test::FakeCollector collector;
  collector.script.push_back(
      test::Answer({ErrorKind::kTransient, "HTTP 429"}, std::chrono::seconds(3600)));
  Telemetry t(config, RealClock::Instance(), std::make_unique<test::FakeTransport>(&collector));
  t.Start();
  t.tracer().StartSpan("s").End();
  ASSERT_TRUE(nbu::test::WaitFor([&] { return t.exporter()->stats().export_failures == 1; },
                                 std::chrono::seconds(30)));
  // The worker sleeps toward the Retry-After; Shutdown must wake it and not send or wait.
  t.Shutdown(RealClock::Instance().Now() + milliseconds(100));
  EXPECT_EQ(collector.Requests().size(), 1u);
  EXPECT_EQ(t.exporter()->stats().spans_dropped_export, 1u);
  EXPECT_EQ(t.metrics().Counters()[0]->Value({{"signal", "spans"}, {"reason", "shutdown"}}), 1);
}

}  // namespace
}  // namespace nbu::telemetry
