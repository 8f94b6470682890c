// OtlpExporter scheduling, batching, retry/backoff, drops and shutdown, on a SimulatedClock that
// moves only when the test advances it; RunOnce is driven by the test (no thread).
#include "telemetry/otlp.h"

#include "fake_transport.h"
#include "support/captured_log.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace nbu::telemetry {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test::Answer;
using test::FakeCollector;
using test::FakeTransport;

class OtlpExporterTest : public ::testing::Test {
 protected:
  OtlpExporterTest() : clock_(/*auto_advance=*/false) {
    config_.traces_url = "http://127.0.0.1:1/v1/traces";
    config_.metrics_url = "http://127.0.0.1:1/v1/metrics";
    config_.headers = {{"api-key", "secret"}};
    config_.retry_jitter = 0;
    config_.max_queue_size = 10;
    config_.max_export_batch_size = 4;
    counters_.dropped = &registry_.AddCounter("otel.exporter.dropped", "", "1");
    counters_.exported = &registry_.AddCounter("otel.exporter.exported", "", "1");
    counters_.failures = &registry_.AddCounter("otel.exporter.failures", "", "1");
  }

  OtlpExporter& Make() {
    exporter_ = std::make_unique<OtlpExporter>(
        config_, clock_, &registry_, std::make_unique<FakeTransport>(&collector_), counters_);
    return *exporter_;
  }

  SpanData NewSpan(const std::string& name) {
    SpanData s;
    s.context = {NewTraceId(), NewSpanId()};
    s.name = name;
    s.start = s.end = clock_.WallNow();
    return s;
  }

  std::vector<test::RecordedRequest> Traces() {
    std::vector<test::RecordedRequest> out;
    for (auto& r : collector_.Requests())
      if (r.url == config_.traces_url) out.push_back(r);
    return out;
  }
  std::vector<test::RecordedRequest> MetricsPosts() {
    std::vector<test::RecordedRequest> out;
    for (auto& r : collector_.Requests())
      if (r.url == config_.metrics_url) out.push_back(r);
    return out;
  }
  size_t SpanCount(const test::RecordedRequest& r) {
    return r.body.at("resourceSpans")[0]["scopeSpans"][0]["spans"].size();
  }

  SimulatedClock clock_;
  TelemetryConfig config_;
  MetricsRegistry registry_;
  ExporterCounters counters_;
  FakeCollector collector_;
  std::unique_ptr<OtlpExporter> exporter_;
};

TEST_F(OtlpExporterTest, SpansWaitForTheScheduleDelay) {
  auto& e = Make();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  EXPECT_EQ(e.RunOnce(), clock_.Now() + config_.span_schedule_delay);
  EXPECT_TRUE(Traces().empty());
  clock_.Advance(config_.span_schedule_delay);
  e.RunOnce();
  const auto traces = Traces();
  ASSERT_EQ(traces.size(), 1u);
  EXPECT_EQ(SpanCount(traces[0]), 3u);
  EXPECT_EQ(traces[0].headers, config_.headers);
  EXPECT_EQ(e.stats().spans_exported, 3u);
  EXPECT_EQ(counters_.exported->Value({{"signal", "spans"}}), 3);
}

TEST_F(OtlpExporterTest, AFullBatchGoesAtOnceInBatchSizedPieces) {
  auto& e = Make();
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  e.RunOnce();
  e.RunOnce();
  e.RunOnce();  // 1 left: below a batch, waits for the delay
  const auto traces = Traces();
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_EQ(SpanCount(traces[0]), 4u);
  EXPECT_EQ(SpanCount(traces[1]), 4u);
  EXPECT_EQ(e.queue_size(), 1u);
}

TEST_F(OtlpExporterTest, FullQueueDropsAndCounts) {
  auto& e = Make();
  int accepted = 0;
  for (int i = 0; i < 15; ++i) accepted += e.Enqueue(NewSpan("s")) ? 1 : 0;
  EXPECT_EQ(accepted, 10);
  EXPECT_EQ(e.stats().spans_dropped_queue_full, 5u);
  EXPECT_EQ(counters_.dropped->Value({{"reason", "queue_full"}, {"signal", "spans"}}), 5);
}

// Spans that come faster than the collector takes them are dropped at every pass: one line a
// minute says how many, not one a pass, and the last line at the end says the rest.
TEST_F(OtlpExporterTest, SpansDroppedForAFullQueueAreToldOnceAMinuteAndAtTheEnd) {
  nbu::test::CapturedLog logged("span queue full");
  auto& e = Make();
  for (int pass = 0; pass < 5; ++pass) {
    for (int i = 0; i < 15; ++i) (void)e.Enqueue(NewSpan("s"));
    e.RunOnce();
  }
  ASSERT_EQ(logged.Json().size(), 1u);
  EXPECT_EQ(logged.Json()[0]["dropped"], 5);
  e.Shutdown(clock_.Now() + seconds(5));
  const std::vector<nlohmann::json> lines = logged.Json();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["dropped"].get<uint64_t>() + lines[1]["dropped"].get<uint64_t>(),
            e.stats().spans_dropped_queue_full);
}

TEST_F(OtlpExporterTest, TransientFailuresRetryWithBackoffThenDrop) {
  config_.max_export_attempts = 3;
  auto& e = Make();
  for (int i = 0; i < 2; ++i) collector_.script.push_back(Answer({ErrorKind::kTransient, "503"}));
  collector_.script.push_back(Answer({ErrorKind::kTransient, "timeout"}));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  EXPECT_EQ(e.RunOnce(), clock_.Now() + seconds(1));  // attempt 1 failed: retry in base delay
  clock_.Advance(milliseconds(999));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 1u) << "no retry before the backoff";
  clock_.Advance(milliseconds(1));
  EXPECT_EQ(e.RunOnce(), clock_.Now() + seconds(2));  // doubled
  clock_.Advance(seconds(2));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 3u);
  EXPECT_EQ(e.stats().export_failures, 3u);
  EXPECT_EQ(e.stats().spans_dropped_export, 1u);
  EXPECT_EQ(counters_.dropped->Value({{"reason", "export_failed"}, {"signal", "spans"}}), 1);
  EXPECT_EQ(counters_.failures->Value({{"signal", "spans"}}), 3);
}

TEST_F(OtlpExporterTest, BackoffIsCappedAndJittered) {
  config_.max_export_attempts = 10;
  config_.retry_jitter = 0.2;
  auto& e = Make();
  for (int i = 0; i < 6; ++i) collector_.script.push_back(Answer({ErrorKind::kTransient, "down"}));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  for (int attempt = 1; attempt <= 6; ++attempt) {
    const MonoTime next = e.RunOnce();
    const double delay = ToSeconds(next - clock_.Now());
    const double nominal = std::min(5.0, 1.0 * (1 << (attempt - 1)));
    EXPECT_GE(delay, nominal * 0.8 - 1e-9) << attempt;
    EXPECT_LE(delay, nominal * 1.2 + 1e-9) << attempt;
    clock_.Advance(next - clock_.Now());
  }
  e.RunOnce();
  EXPECT_EQ(e.stats().spans_exported, 1u);
}

TEST_F(OtlpExporterTest, RetryAfterIsAFloorUnderTheBackoff) {
  auto& e = Make();
  collector_.script.push_back(Answer({ErrorKind::kTransient, "HTTP 429"}, seconds(30)));
  collector_.script.push_back(Answer({ErrorKind::kTransient, "HTTP 503"}, seconds(0)));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  EXPECT_EQ(e.RunOnce(), clock_.Now() + seconds(30)) << "not the 1 s backoff";
  clock_.Advance(seconds(30) - milliseconds(1));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 1u) << "no retry before the Retry-After";
  clock_.Advance(milliseconds(1));
  EXPECT_EQ(e.RunOnce(), clock_.Now() + seconds(2)) << "a shorter Retry-After: the backoff";
  clock_.Advance(seconds(2));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 3u);
  EXPECT_EQ(e.stats().spans_exported, 1u);
}

TEST_F(OtlpExporterTest, RetryAfterIsCappedAndHoldsBackTheNextBatch) {
  config_.max_export_attempts = 1;
  config_.metrics_url.clear();  // RunOnce's answer is then the span batch's time alone
  auto& e = Make();
  collector_.script.push_back(Answer({ErrorKind::kTransient, "HTTP 429"}, seconds(3600)));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  const MonoTime failed_at = clock_.Now();
  e.RunOnce();
  EXPECT_EQ(e.stats().spans_dropped_export, 1u) << "out of attempts";
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  EXPECT_EQ(e.RunOnce(), failed_at + kMaxRetryAfter) << "capped, and for the next batch too";
  EXPECT_EQ(Traces().size(), 1u);
  clock_.Advance(failed_at + kMaxRetryAfter - clock_.Now());
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 2u);
  EXPECT_EQ(e.stats().spans_exported, 1u);
}

// The wait ParseRetryAfter answers for a Retry-After too large to hold (2^40 s) does not fit in
// nanoseconds: it is capped like any other, not overflowed into a wait that has already ended.
TEST_F(OtlpExporterTest, ARetryAfterTooLargeForNanosecondsIsCappedToo) {
  const std::optional<seconds> huge = ParseRetryAfter("99999999999999999999999", 0);
  ASSERT_TRUE(huge.has_value());
  ASSERT_GT(*huge, std::chrono::duration_cast<seconds>(Duration::max())) << "the case tested";
  config_.metrics_url.clear();  // RunOnce's answer is then the span batch's time alone
  auto& e = Make();
  collector_.script.push_back(Answer({ErrorKind::kTransient, "HTTP 429"}, huge));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  const MonoTime failed_at = clock_.Now();
  EXPECT_EQ(e.RunOnce(), failed_at + kMaxRetryAfter) << "held back for the cap, not the backoff";
  clock_.Advance(kMaxRetryAfter - milliseconds(1));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 1u) << "no retry before the cap";
  clock_.Advance(milliseconds(1));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 2u);
  EXPECT_EQ(e.stats().spans_exported, 1u);
}

TEST_F(OtlpExporterTest, PartialSuccessDropsTheRejectedWithoutRetry) {
  config_.max_queue_size = 8;
  config_.max_export_batch_size = 8;
  auto& e = Make();
  nbu::test::CapturedLog captured("partial success");
  auto send = [&](const std::string& body) {
    collector_.script.push_back(Answer(Status::Ok(), std::nullopt, body));
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(e.Enqueue(NewSpan("s")));
    e.RunOnce();
  };
  const std::string message(300, 'x');
  send(R"({"partialSuccess":{"rejectedSpans":"5","errorMessage":")" + message + R"("}})");
  EXPECT_EQ(e.stats().spans_exported, 3u);
  EXPECT_EQ(e.stats().spans_dropped_export, 5u);
  send(R"({"partialSuccess":{"rejectedSpans":5}})");  // a number, as some collectors send it
  EXPECT_EQ(e.stats().spans_exported, 6u);
  EXPECT_EQ(e.stats().spans_dropped_export, 10u);
  for (const std::string body : {"", "not json", "{}", R"({"partialSuccess":{}})",
                                 R"({"partialSuccess":{"rejectedSpans":"0"}})"}) {
    send(body);
  }
  EXPECT_EQ(e.stats().spans_exported, 46u) << "an empty or plain 2xx is full success";
  EXPECT_EQ(counters_.dropped->Value({{"reason", "rejected"}, {"signal", "spans"}}), 10);
  EXPECT_EQ(counters_.exported->Value({{"signal", "spans"}}), 46);
  clock_.Advance(seconds(30));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 7u) << "rejected spans are not sent again";
  EXPECT_EQ(e.stats().export_failures, 0u);
  const std::vector<std::string> log = captured.Lines();
  ASSERT_EQ(log.size(), 1u) << "one warning a minute";
  EXPECT_NE(log[0].find("\"rejected\":5"), std::string::npos) << log[0];
  EXPECT_NE(log[0].find(std::string(200, 'x')), std::string::npos) << log[0];
  EXPECT_EQ(log[0].find(std::string(201, 'x')), std::string::npos) << "cut to 200 characters";
  EXPECT_EQ(log[0].find("secret"), std::string::npos) << "header values are never logged";
}

// A collector may quote what it refused: the configured header values (API keys) are taken out
// of a partialSuccess's errorMessage before it is cut short and logged, as out of a failed
// answer's body.
TEST_F(OtlpExporterTest, PartialSuccessMessageIsLoggedWithoutHeaderValues) {
  const std::string key = "k3y-0f-the-c0llector-that-must-n0t-leak";
  config_.headers = {{"api-key", key}, {"Authorization", "Bearer t0ken-that-must-n0t-leak"}};
  auto& e = Make();
  nbu::test::CapturedLog captured("partial success");
  // The key starts at character 184: a cut at 200 before the scrub would keep 16 of its 39.
  const std::string message = "token t0ken-that-must-n0t-leak refused; " + std::string(140, '.') +
                              "key " + key + " is unknown";
  collector_.script.push_back(Answer(
      Status::Ok(), std::nullopt, R"({"partialSuccess":{"errorMessage":")" + message + R"("}})"));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  e.RunOnce();
  EXPECT_EQ(e.stats().spans_exported, 1u);
  const std::vector<std::string> log = captured.Lines();
  ASSERT_EQ(log.size(), 1u);
  for (const std::string& secret : {key, std::string("t0ken-that-must-n0t-leak")}) {
    EXPECT_EQ(nbu::test::PieceOf(secret, log[0], 8), "") << log[0];
  }
  EXPECT_NE(log[0].find("token <redacted> refused; ..."), std::string::npos) << log[0];
  EXPECT_NE(log[0].find("key <redacted>"), std::string::npos) << log[0];
}

TEST_F(OtlpExporterTest, PartialSuccessDropsRejectedDataPoints) {
  auto& files = registry_.AddCounter("files.processed", "Files", "1");
  files.Add(1, {{"container", "a"}});
  files.Add(1, {{"container", "b"}});
  auto& e = Make();
  collector_.script.push_back(
      Answer(Status::Ok(), std::nullopt, R"({"partialSuccess":{"rejectedDataPoints":1}})"));
  clock_.Advance(config_.metric_export_interval);
  e.RunOnce();
  ASSERT_EQ(MetricsPosts().size(), 1u);
  EXPECT_EQ(e.stats().metric_points_exported, 1u);
  EXPECT_EQ(e.stats().metric_points_dropped, 1u);
  EXPECT_EQ(counters_.dropped->Value({{"reason", "rejected"}, {"signal", "metrics"}}), 1);
}

TEST_F(OtlpExporterTest, PermanentFailureIsNotRetried) {
  auto& e = Make();
  collector_.script.push_back(Answer({ErrorKind::kPermanent, "HTTP 400"}));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock_.Advance(config_.span_schedule_delay);
  e.RunOnce();
  clock_.Advance(seconds(30));
  e.RunOnce();
  EXPECT_EQ(Traces().size(), 1u);
  EXPECT_EQ(e.stats().spans_dropped_export, 1u);
}

TEST_F(OtlpExporterTest, MetricsEveryExportInterval) {
  registry_.AddCounter("files.processed", "Files", "1").Add(2);
  auto& e = Make();
  e.RunOnce();
  EXPECT_TRUE(MetricsPosts().empty());
  clock_.Advance(config_.metric_export_interval);
  e.RunOnce();
  clock_.Advance(config_.metric_export_interval / 2);
  e.RunOnce();
  auto posts = MetricsPosts();
  ASSERT_EQ(posts.size(), 1u);
  const auto& metrics = posts[0].body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
  bool found = false;
  for (const auto& m : metrics) found |= m["name"] == "files.processed";
  EXPECT_TRUE(found);
  clock_.Advance(config_.metric_export_interval / 2);
  e.RunOnce();
  EXPECT_EQ(MetricsPosts().size(), 2u);
}

TEST_F(OtlpExporterTest, FailedMetricsRetryUntilTheNextSnapshot) {
  registry_.AddCounter("files.processed", "Files", "1").Add(2);
  config_.max_export_attempts = 100;
  auto& e = Make();
  for (int i = 0; i < 100; ++i)
    collector_.script.push_back(Answer({ErrorKind::kTransient, "down"}));
  for (int i = 0; i < 5000 && e.stats().metric_points_exported == 0; ++i) {
    const MonoTime next = e.RunOnce();
    clock_.Advance(next - clock_.Now());
  }
  EXPECT_EQ(e.stats().metric_points_dropped, 0u) << "superseded snapshots are not losses";
  EXPECT_GT(e.stats().metric_points_exported, 0u);
}

TEST_F(OtlpExporterTest, ShutdownWithoutThreadFlushesEverything) {
  registry_.AddCounter("files.processed", "Files", "1").Add(1);
  auto& e = Make();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  e.Shutdown(clock_.Now() + seconds(5));
  const auto traces = Traces();
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_EQ(SpanCount(traces[0]) + SpanCount(traces[1]), 6u);
  EXPECT_LE(traces[0].timeout, milliseconds(5000));
  EXPECT_EQ(MetricsPosts().size(), 1u);
  EXPECT_FALSE(e.Enqueue(NewSpan("late")));
  e.Shutdown(clock_.Now());  // idempotent
  EXPECT_EQ(Traces().size(), 2u);
}

TEST_F(OtlpExporterTest, ShutdownAtTheDeadlineDropsAndCounts) {
  auto& e = Make();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  e.Shutdown(clock_.Now());
  EXPECT_TRUE(collector_.Requests().empty());
  EXPECT_EQ(e.stats().spans_dropped_export, 3u);
  EXPECT_EQ(counters_.dropped->Value({{"reason", "shutdown"}, {"signal", "spans"}}), 3);
  // The metrics' last window too: its points (the dropped counter's, here) are counted.
  EXPECT_GE(e.stats().metric_points_dropped, 1u);
  EXPECT_GE(counters_.dropped->Value({{"reason", "shutdown"}, {"signal", "metrics"}}), 1);
}

TEST_F(OtlpExporterTest, ShutdownMakesOneAttemptOnly) {
  auto& e = Make();
  collector_.script.push_back(Answer({ErrorKind::kTransient, "down"}));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  e.Shutdown(clock_.Now() + seconds(5));
  EXPECT_EQ(Traces().size(), 1u);
  EXPECT_EQ(e.stats().spans_dropped_export, 1u);
}

// An auto-advancing clock: a wait in Shutdown moves time instead of hanging the test, so any
// wait past the deadline shows as a clock beyond it.
TEST_F(OtlpExporterTest, ShutdownDropsRatherThanOutwaitARetryAfter) {
  SimulatedClock clock(/*auto_advance=*/true);
  OtlpExporter e(config_, clock, &registry_, std::make_unique<FakeTransport>(&collector_),
                 counters_);
  collector_.script.push_back(Answer({ErrorKind::kTransient, "HTTP 429"}, seconds(50)));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock.Advance(config_.span_schedule_delay);
  e.RunOnce();
  const MonoTime deadline = clock.Now() + seconds(5);
  e.Shutdown(deadline);
  EXPECT_LE(clock.Now(), deadline);
  EXPECT_EQ(Traces().size(), 1u) << "not sent against the collector's Retry-After";
  EXPECT_EQ(counters_.dropped->Value({{"reason", "shutdown"}, {"signal", "spans"}}), 1);
  EXPECT_EQ(MetricsPosts().size(), 1u) << "the other signal is not throttled";
  EXPECT_EQ(counters_.dropped->Value({{"reason", "shutdown"}, {"signal", "metrics"}}), 0)
      << "sent, so not dropped";
}

TEST_F(OtlpExporterTest, ShutdownWaitsOutARetryAfterThatEndsBeforeTheDeadline) {
  SimulatedClock clock(/*auto_advance=*/true);
  OtlpExporter e(config_, clock, &registry_, std::make_unique<FakeTransport>(&collector_),
                 counters_);
  collector_.script.push_back(Answer({ErrorKind::kTransient, "HTTP 503"}, seconds(3)));
  ASSERT_TRUE(e.Enqueue(NewSpan("s")));
  clock.Advance(config_.span_schedule_delay);
  e.RunOnce();
  const MonoTime failed_at = clock.Now();
  e.Shutdown(failed_at + seconds(5));
  EXPECT_EQ(clock.Now(), failed_at + seconds(3));
  ASSERT_EQ(Traces().size(), 2u);
  EXPECT_LE(Traces()[1].timeout, milliseconds(2000)) << "what is left of the deadline";
  EXPECT_EQ(e.stats().spans_exported, 1u);
}

TEST_F(OtlpExporterTest, NoTraceExportMeansSpansAreRefused) {
  config_.traces_url.clear();
  auto& e = Make();
  EXPECT_FALSE(e.Enqueue(NewSpan("s")));
  e.RunOnce();
  EXPECT_TRUE(Traces().empty());
}

TEST_F(OtlpExporterTest, ResourceCarriesServiceAndConfiguredAttributes) {
  config_.service_name = "svc";
  config_.service_version = "1.2.3";
  config_.resource_attributes = {{"deployment.environment", "prod"}};
  const OtlpResource r = MakeOtlpResource(config_);
  ASSERT_GE(r.attributes.size(), 5u);
  EXPECT_EQ(r.attributes[0],
            (std::pair<std::string, AttributeValue>{"service.name", std::string("svc")}));
  EXPECT_EQ(r.attributes.back().first, "deployment.environment");
}

// OTLP wants each key once: the operator's OTEL_RESOURCE_ATTRIBUTES override the service's own
// service.version and service.instance.id (the last of a key given twice winning), not
// service.name.
TEST_F(OtlpExporterTest, ResourceKeysAreUniqueAndTheOperatorsWin) {
  config_.service_name = "svc";
  config_.service_version = "1.2.3";
  config_.service_instance_id = "replica-1";
  config_.resource_attributes = {{"service.instance.id", "x"},
                                 {"a", "1"},
                                 {"service.version", "y"},
                                 {"a", "2"},
                                 {"service.name", "other"}};
  const OtlpResource r = MakeOtlpResource(config_);
  std::map<std::string, std::string> values;
  for (const auto& [k, v] : r.attributes) {
    EXPECT_TRUE(values.emplace(k, std::get<std::string>(v)).second) << "twice: " << k;
  }
  EXPECT_EQ(values["service.name"], "svc");
  EXPECT_EQ(values["service.version"], "y");
  EXPECT_EQ(values["service.instance.id"], "x");
  EXPECT_EQ(values["a"], "2");
  EXPECT_EQ(values["telemetry.sdk.language"], "cpp");
  EXPECT_EQ(r.attributes[0].first, "service.name");
  EXPECT_EQ(r.scope_version, "1.2.3") << "the scope is this code";
  // In the encoded resource too.
  const nlohmann::json encoded = EncodeTraces({NewSpan("s")}, r);
  std::set<std::string> keys;
  for (const auto& kv : encoded["resourceSpans"][0]["resource"]["attributes"]) {
    EXPECT_TRUE(keys.insert(kv["key"].get<std::string>()).second) << kv.dump();
  }
  EXPECT_EQ(keys.size(), values.size());
  // Without the operator's, the service's own.
  config_.resource_attributes.clear();
  const OtlpResource own = MakeOtlpResource(config_);
  EXPECT_NE(std::find(own.attributes.begin(), own.attributes.end(),
                      std::pair<std::string, AttributeValue>{"service.instance.id",
                                                             std::string("replica-1")}),
            own.attributes.end());
}

}  // namespace
}  // namespace nbu::telemetry
