#include "core/instruments.h"

#include "telemetry/prometheus.h"

#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

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

// A failed try shows until an answer, or until it is older than the hold; one within 10 s of
// an answer is one file's failure, not storage's.
TEST(StorageHealthTest, FailedTriesShowOnlyWhenNothingWasAnsweredAroundThem) {
  using azure::TryOutcome;
  StorageHealth h;
  const MonoTime t0 = MonoTime{} + 1000s;
  EXPECT_EQ(h.Trouble(t0, 60s), nullptr) << "no try yet: nothing known to be wrong";
  h.Record(TryOutcome::kUnreachable, t0);  // at start-up, nothing answered yet
  EXPECT_STREQ(h.Trouble(t0 + 60s, 60s), "storage_unreachable");
  EXPECT_EQ(h.Trouble(t0 + 61s, 60s), nullptr) << "no try for longer than the hold";
  h.Record(TryOutcome::kRefused, t0 + 70s);
  EXPECT_STREQ(h.Trouble(t0 + 71s, 60s), "storage_refuses_credentials");
  // An answer that is not a success (a 404: a SAS that may read but not write) proves nothing
  // of the credentials; a success does.
  h.Record(TryOutcome::kAnswered, t0 + 71s);
  EXPECT_STREQ(h.Trouble(t0 + 72s, 60s), "storage_refuses_credentials");
  h.Record(TryOutcome::kSucceeded, t0 + 72s);
  EXPECT_EQ(h.Trouble(t0 + 73s, 60s), nullptr);
  h.Record(TryOutcome::kUnreachable, t0 + 80s);
  EXPECT_EQ(h.Trouble(t0 + 81s, 60s), nullptr) << "8 s after an answer: storage is up";
  h.Record(TryOutcome::kUnreachable, t0 + 83s);
  EXPECT_STREQ(h.Trouble(t0 + 84s, 60s), "storage_unreachable");
  // Tries that end out of order: an earlier one replaces nothing.
  h.Record(TryOutcome::kRefused, t0 + 75s);
  EXPECT_STREQ(h.Trouble(t0 + 84s, 60s), "storage_unreachable");
  h.Record(TryOutcome::kAnswered, t0 + 90s);
  h.Record(TryOutcome::kAnswered, t0 + 71s);  // late: must not replace the answer at 90 s
  h.Record(TryOutcome::kUnreachable, t0 + 95s);
  EXPECT_EQ(h.Trouble(t0 + 96s, 60s), nullptr) << "5 s after the answer at 90 s";
  // A server error (a gateway's 507 to every write) is storage's trouble whatever else answers:
  // a file's HEAD before each upload gets a 404 2 s before it. Only a success clears it.
  h.Record(TryOutcome::kAnswered, t0 + 100s);
  h.Record(TryOutcome::kServerError, t0 + 102s);
  EXPECT_STREQ(h.Trouble(t0 + 103s, 60s), "storage_unreachable");
  h.Record(TryOutcome::kAnswered, t0 + 104s);
  EXPECT_STREQ(h.Trouble(t0 + 105s, 60s), "storage_unreachable") << "a 404 proves nothing";
  h.Record(TryOutcome::kSucceeded, t0 + 106s);
  EXPECT_EQ(h.Trouble(t0 + 107s, 60s), nullptr);
  h.Record(TryOutcome::kServerError, t0 + 110s);
  EXPECT_EQ(h.Trouble(t0 + 111s, 60s), nullptr) << "4 s after a success: one file's 500";
}

// The status keeps the last 20 errors, a file's as one entry (its latest error and how many),
// and the repeats of one error of no file as one: a file refused at every retry pushes no other
// error out.
TEST(RecentErrorsTest, AFilesErrorsAreOneEntryWithTheirCount) {
  RecentErrors errors;
  errors.Add("t0", "other.bin", "403");
  for (int i = 0; i < 20; ++i) {
    errors.Add("t" + std::to_string(i + 1), "stuck.bin", "claim failed: " + std::to_string(i));
  }
  errors.Add("t21", "", "storage not reachable");
  errors.Add("t22", "", "storage not reachable");
  errors.Add("t23", "", "cannot open x");
  auto got = errors.Snapshot();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].file, "other.bin");
  EXPECT_EQ(got[0].count, 1u);
  EXPECT_EQ(got[1].file, "stuck.bin");
  EXPECT_EQ(got[1].error, "claim failed: 19");
  EXPECT_EQ(got[1].time, "t20");
  EXPECT_EQ(got[1].count, 20u);
  EXPECT_EQ(got[2].error, "storage not reachable");
  EXPECT_EQ(got[2].count, 2u);
  EXPECT_EQ(got[3].error, "cannot open x");
  errors.Add("t24", "other.bin", "403");
  got = errors.Snapshot();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].file, "other.bin");
  EXPECT_EQ(got[3].count, 2u);
  for (int i = 0; i < 25; ++i) errors.Add("u", "f" + std::to_string(i), "e");  // distinct ones
  got = errors.Snapshot();
  ASSERT_EQ(got.size(), 20u);
  EXPECT_EQ(got.front().file, "f5");
}

// Errors of one cause are one entry whatever their file or text: many files that cannot be
// claimed, or a start-up check whose every message holds a new request id, take one slot, with
// the latest file and text; errors without a cause keep theirs.
TEST(RecentErrorsTest, ErrorsOfOneCauseAreOneEntry) {
  RecentErrors errors;
  errors.Add("t0", "other.bin", "403");
  errors.Add("t1", "", "HEAD container: HTTP 403 (request id 1)", "start-up");
  for (int i = 0; i < 30; ++i) {
    errors.Add("u" + std::to_string(i), "f" + std::to_string(i), "claim failed: EACCES",
               "claim failed: permanent");
  }
  errors.Add("t2", "", "HEAD container: HTTP 403 (request id 2)", "start-up");
  errors.Add("t3", "", "HEAD container: HTTP 403 (request id 2)");  // no cause: its own
  errors.Add("t4", "f29", "upload failed");                         // the file's own
  const auto got = errors.Snapshot();
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].file, "other.bin");
  EXPECT_EQ(got[1].file, "f29");
  EXPECT_EQ(got[1].time, "u29");
  EXPECT_EQ(got[1].count, 30u);
  EXPECT_EQ(got[2].error, "HEAD container: HTTP 403 (request id 2)");
  EXPECT_EQ(got[2].time, "t2");
  EXPECT_EQ(got[2].count, 2u);
  EXPECT_EQ(got[3].count, 1u);
  EXPECT_EQ(got[4].error, "upload failed");
}

// An answer at time 0 (a clock that starts there) is an answer, not "never".
TEST(StorageHealthTest, AnAnswerAtTimeZeroCounts) {
  using azure::TryOutcome;
  StorageHealth h;
  h.Record(TryOutcome::kAnswered, MonoTime{});
  h.Record(TryOutcome::kUnreachable, MonoTime{} + 5s);
  EXPECT_EQ(h.Trouble(MonoTime{} + 5s, 60s), nullptr);
  h.Record(TryOutcome::kUnreachable, MonoTime{} + 11s);
  EXPECT_STREQ(h.Trouble(MonoTime{} + 11s, 60s), "storage_unreachable");
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

// Every counter is exported from the start, at 0, but those counted by a reason only (no series
// without the reason would mean anything).
TEST(InstrumentsTest, EveryCounterIsExportedFromTheStart) {
  telemetry::MetricsRegistry r;
  Instruments inst(r);
  std::set<std::string> counters;
  std::set<std::string> sampled;
  std::istringstream text(telemetry::RenderPrometheus(r));
  for (std::string line; std::getline(text, line);) {
    std::istringstream words(line);
    std::string first, second, third;
    words >> first >> second >> third;
    if (first == "#" && second == "TYPE" && words.str().ends_with(" counter")) {
      counters.insert(third);
    } else if (first != "#") {
      sampled.insert(first.substr(0, first.find('{')));
    }
  }
  EXPECT_GE(counters.size(), 15u);
  for (const std::string& name : counters) {
    if (name == "http_retries_total" || name == "file_attempts_failed_total") continue;
    EXPECT_TRUE(sampled.contains(name)) << name << " has no series before its first event";
  }
}

// http.checksum_mismatches is counted by op: seeded at 0 for each op that can report one, and no
// series without the label sits at 0 beside them, before or after a mismatch is counted.
TEST(InstrumentsTest, ChecksumMismatchesAreSeededPerOpWithoutAnUnlabelledSeries) {
  telemetry::MetricsRegistry r;
  Instruments inst(r);
  auto lines = [&] {
    std::vector<std::string> out;
    std::istringstream text(telemetry::RenderPrometheus(r));
    for (std::string line; std::getline(text, line);) {
      if (line.rfind("http_checksum_mismatches", 0) == 0) out.push_back(line);
    }
    return out;
  };
  EXPECT_EQ(lines(),
            (std::vector<std::string>{R"(http_checksum_mismatches_total{op="PutBlob"} 0)",
                                      R"(http_checksum_mismatches_total{op="PutBlock"} 0)",
                                      R"(http_checksum_mismatches_total{op="PutBlockList"} 0)"}));
  inst.checksum_mismatches.Add(1, {{"op", "PutBlock"}});
  for (const std::string& line : lines()) {
    EXPECT_NE(line.find("{op=\""), std::string::npos) << "a series without op: " << line;
  }
  EXPECT_EQ(inst.checksum_mismatches.Value({{"op", "PutBlock"}}), 1);
}

}  // namespace
}  // namespace nbu::core
