#include "core/instruments.h"

#include <gtest/gtest.h>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;

TEST(RecentWindowTest, ThroughputAndPercentilesOverTheLastMinute) {
  RecentWindow w(60s, 1000);
  const MonoTime t0{};
  for (int i = 1; i <= 100; ++i) w.Add(t0 + 30s, 1'000'000, i / 100.0);
  auto s = w.Summarize(t0 + 30s);
  EXPECT_EQ(s.samples, 100u);
  EXPECT_NEAR(s.files_per_s, 100.0 / 60, 1e-9);
  EXPECT_NEAR(s.mb_per_s, 100.0 / 60, 1e-9);
  EXPECT_NEAR(s.p50_s, 0.5, 0.011);
  EXPECT_NEAR(s.p99_s, 0.99, 0.011);
  EXPECT_EQ(w.Summarize(t0 + 91s).samples, 0u);  // all older than a minute
}

TEST(RecentWindowTest, PercentilesDoNotDependOnTheOrderOfArrival) {
  RecentWindow w(60s, 1000);
  const MonoTime t0{};
  // 1..200 ms, out of order: 200, 1, 199, 2, ...
  for (int i = 0; i < 100; ++i) {
    w.Add(t0, 1, (200 - i) / 1000.0);
    w.Add(t0, 1, (i + 1) / 1000.0);
  }
  const auto s = w.Summarize(t0);
  EXPECT_DOUBLE_EQ(s.p50_s, 0.101);  // index round(0.50 x 199) = 100 of the sorted 200
  EXPECT_DOUBLE_EQ(s.p95_s, 0.190);  // round(0.95 x 199) = 189
  EXPECT_DOUBLE_EQ(s.p99_s, 0.198);  // round(0.99 x 199) = 197
}

TEST(RecentWindowTest, MemoryIsBounded) {
  RecentWindow w(60s, 10);
  for (int i = 0; i < 1000; ++i) w.Add(MonoTime{} + 1ms * i, 1, 0.1);
  EXPECT_EQ(w.Summarize(MonoTime{} + 1s).samples, 10u);
}

TEST(InstrumentsTest, SeedMetricNamesAndKinds) {
  telemetry::MetricsRegistry r;
  Instruments inst(r);
  std::map<std::string, telemetry::InstrumentKind> kinds;
  for (const auto* c : r.Counters()) kinds[c->info().name] = c->info().kind;
  for (const auto* h : r.Histograms()) kinds[h->info().name] = h->info().kind;
  EXPECT_EQ(kinds.at("files.processed"), telemetry::InstrumentKind::kCounter);
  EXPECT_EQ(kinds.at("files.failed"), telemetry::InstrumentKind::kCounter);
  EXPECT_EQ(kinds.at("queue.depth"), telemetry::InstrumentKind::kUpDownCounter);
  EXPECT_EQ(kinds.at("upload.duration"), telemetry::InstrumentKind::kHistogram);
  EXPECT_EQ(kinds.at("file.size"), telemetry::InstrumentKind::kHistogram);
}

}  // namespace
}  // namespace nbu::core
