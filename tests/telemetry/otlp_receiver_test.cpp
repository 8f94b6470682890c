// End to end over real HTTP: Telemetry + libcurl exporter against a stand-in OTLP/HTTP receiver.
// Short real intervals; no assertions on speed, only on what arrives and what is counted.
#include "otlp_receiver.h"

#include <httplib.h>
#include "support/process.h"
#include "telemetry/otlp_transport.h"
#include "telemetry/telemetry.h"

#include <gtest/gtest.h>

namespace nbu::telemetry {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test::OtlpReceiver;
using test::ReceivedMetric;

constexpr auto kWait = seconds(30);

TelemetryConfig ConfigFor(const std::map<std::string, std::string>& env) {
  auto r = ParseTelemetryConfig([&](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
  EXPECT_TRUE(r.errors.empty()) << r.errors[0];
  return r.config;
}

std::string StringAttr(const test::AnyValues& attrs, const std::string& key) {
  auto it = attrs.find(key);
  if (it == attrs.end() || !it->second.contains("stringValue")) return "<missing>";
  return it->second.at("stringValue").get<std::string>();
}

const ReceivedMetric* FindMetric(const std::vector<ReceivedMetric>& metrics,
                                 const std::string& name) {
  const ReceivedMetric* found = nullptr;
  for (const auto& m : metrics)
    if (m.name == name) found = &m;  // the latest snapshot
  return found;
}

TEST(OtlpReceiverTest, SpansAndMetricsArriveWithResource) {
  OtlpReceiver receiver;
  TelemetryConfig config = ConfigFor({{"OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()},
                                      {"OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def"},
                                      {"OTEL_SERVICE_NAME", "nbu-it"},
                                      {"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"},
                                      {"OTEL_BSP_SCHEDULE_DELAY", "20"},
                                      {"OTEL_METRIC_EXPORT_INTERVAL", "50"}});
  config.service_version = "0.1.0";
  Telemetry t(config, RealClock::Instance());
  auto& metrics = t.metrics();
  metrics.AddCounter("files.processed", "Files uploaded", "1").Add(3, {{"container", "raw"}});
  metrics.AddCounter("files.failed", "Files quarantined", "1").Add(1, {{"reason", "permanent"}});
  metrics.AddHistogram("upload.duration", "Upload time", "s", {0.1, 1, 10}).Record(0.5);
  metrics.AddHistogram("file.size", "File size", "By", {1024, 1 << 20}).Record(4096);
  metrics.AddCounter("queue.depth", "Files waiting", "1", /*up_down=*/true).Add(-2);
  t.Start();

  std::string trace_id, root_id, child_id;
  {
    Span root = t.tracer().StartSpan("process_file", nullptr, SpanKind::kInternal);
    root.SetAttribute("file.path", std::string("/nfs/in/a.bin"));
    root.SetAttribute("file.size", int64_t{4096});
    root.SetAttribute("ratio", 0.25);
    root.SetAttribute("resumed", true);
    Span child = t.tracer().StartSpan("put_block", &root.context(), SpanKind::kClient);
    child.AddEvent("retry", {{"attempt", int64_t{2}}});
    child.SetError("HTTP 503 ServerBusy");
    trace_id = root.context().trace_id;
    root_id = root.context().span_id;
    child_id = child.context().span_id;
  }

  ASSERT_TRUE(nbu::test::WaitFor([&] { return receiver.Spans().size() >= 2; }, kWait));
  ASSERT_TRUE(nbu::test::WaitFor(
      [&] {
        const auto m = receiver.Metrics();
        for (const char* n :
             {"files.processed", "files.failed", "upload.duration", "file.size", "queue.depth"})
          if (FindMetric(m, n) == nullptr) return false;
        return true;
      },
      kWait));
  t.Shutdown(RealClock::Instance().Now() + seconds(10));
  EXPECT_TRUE(receiver.Errors().empty()) << receiver.Errors()[0];
  EXPECT_EQ(receiver.LastHeaders()["api-key"], "abc def");

  const auto spans = receiver.Spans();
  const test::ReceivedSpan* root = nullptr;
  const test::ReceivedSpan* child = nullptr;
  for (const auto& s : spans) {
    if (s.span_id == root_id) root = &s;
    if (s.span_id == child_id) child = &s;
  }
  ASSERT_NE(root, nullptr);
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(root->trace_id, trace_id);
  EXPECT_EQ(child->trace_id, trace_id);
  EXPECT_EQ(root->parent_span_id, "");
  EXPECT_EQ(child->parent_span_id, root_id);
  EXPECT_EQ(child->kind, 3);
  EXPECT_EQ(root->kind, 1);
  EXPECT_EQ(root->attributes.at("file.path").at("stringValue"), "/nfs/in/a.bin");
  EXPECT_EQ(root->attributes.at("file.size").at("intValue"), "4096");
  EXPECT_EQ(root->attributes.at("ratio").at("doubleValue"), 0.25);
  EXPECT_EQ(root->attributes.at("resumed").at("boolValue"), true);
  EXPECT_EQ(root->status_code, 0);
  EXPECT_EQ(child->status_code, 2);
  EXPECT_EQ(child->status_message, "HTTP 503 ServerBusy");
  ASSERT_EQ(child->events.size(), 1u);
  EXPECT_EQ(child->events[0].first, "retry");
  EXPECT_EQ(child->events[0].second.at("attempt").at("intValue"), "2");
  EXPECT_EQ(StringAttr(root->resource, "service.name"), "nbu-it");
  EXPECT_EQ(StringAttr(root->resource, "service.version"), "0.1.0");
  EXPECT_EQ(StringAttr(root->resource, "deployment.environment"), "test");

  const auto received = receiver.Metrics();
  const ReceivedMetric* processed = FindMetric(received, "files.processed");
  EXPECT_EQ(processed->type, "sum");
  EXPECT_TRUE(processed->is_monotonic);
  EXPECT_EQ(processed->temporality, 2);
  EXPECT_EQ(processed->points.at(0).value, 3);
  EXPECT_EQ(StringAttr(processed->points.at(0).attributes, "container"), "raw");
  EXPECT_EQ(StringAttr(processed->resource, "service.name"), "nbu-it");
  const ReceivedMetric* failed = FindMetric(received, "files.failed");
  EXPECT_EQ(failed->type, "sum");
  EXPECT_TRUE(failed->is_monotonic);
  const ReceivedMetric* duration = FindMetric(received, "upload.duration");
  EXPECT_EQ(duration->type, "histogram");
  EXPECT_EQ(duration->unit, "s");
  EXPECT_EQ(duration->temporality, 2);
  EXPECT_EQ(duration->points.at(0).bucket_counts, (std::vector<uint64_t>{0, 1, 0, 0}));
  EXPECT_EQ(duration->points.at(0).bounds, (std::vector<double>{0.1, 1, 10}));
  const ReceivedMetric* size = FindMetric(received, "file.size");
  EXPECT_EQ(size->type, "histogram");
  EXPECT_EQ(size->unit, "By");
  EXPECT_EQ(size->points.at(0).sum, 4096);
  const ReceivedMetric* depth = FindMetric(received, "queue.depth");
  EXPECT_EQ(depth->type, "sum");
  EXPECT_FALSE(depth->is_monotonic);
  EXPECT_EQ(depth->points.at(0).value, -2);
  const ReceivedMetric* exported = FindMetric(received, "otel.exporter.exported");
  ASSERT_NE(exported, nullptr) << "the exporter's own counters are exported too";
}

TEST(OtlpReceiverTest, CollectorDownNeverBlocksAndDropsAreCounted) {
  TelemetryConfig config =
      ConfigFor({{"OTEL_EXPORTER_OTLP_ENDPOINT",
                  "http://127.0.0.1:" + std::to_string(nbu::test::FreeLoopbackPort())},
                 {"OTEL_BSP_SCHEDULE_DELAY", "10"},
                 {"OTEL_BSP_MAX_QUEUE_SIZE", "16"},
                 {"OTEL_EXPORTER_OTLP_TIMEOUT", "500"}});
  config.retry_base_delay = milliseconds(5);
  config.retry_max_delay = milliseconds(20);
  Telemetry t(config, RealClock::Instance());
  t.Start();
  constexpr int kSpans = 1000;
  for (int i = 0; i < kSpans; ++i) t.tracer().StartSpan("file").End();
  ASSERT_TRUE(
      nbu::test::WaitFor([&] { return t.exporter()->stats().spans_dropped_export > 0; }, kWait));
  t.Shutdown(RealClock::Instance().Now() + seconds(2));
  const ExporterStats s = t.exporter()->stats();
  EXPECT_EQ(s.spans_exported, 0u);
  EXPECT_EQ(s.spans_dropped_queue_full + s.spans_dropped_export, static_cast<uint64_t>(kSpans));
  EXPECT_GT(s.export_failures, 0u);
  const Counter* dropped = t.metrics().Counters()[0];
  EXPECT_EQ(dropped->info().name, "otel.exporter.dropped");
  EXPECT_EQ(dropped->Value({{"reason", "queue_full"}, {"signal", "spans"}}) +
                dropped->Value({{"reason", "export_failed"}, {"signal", "spans"}}) +
                dropped->Value({{"reason", "shutdown"}, {"signal", "spans"}}),
            kSpans);
}

TEST(OtlpReceiverTest, SlowCollectorTimesOutWithoutBlockingSpans) {
  OtlpReceiver receiver;
  receiver.SetDelay(seconds(20));
  TelemetryConfig config = ConfigFor(
      {{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint() + "/v1/traces"},
       {"OTEL_BSP_SCHEDULE_DELAY", "10"},
       {"OTEL_BSP_MAX_QUEUE_SIZE", "32"},
       {"OTEL_EXPORTER_OTLP_TIMEOUT", "3000"}});  // recording below happens while the POST hangs
  config.max_export_attempts = 1;
  Telemetry t(config, RealClock::Instance());
  t.Start();
  t.tracer().StartSpan("first").End();
  ASSERT_TRUE(nbu::test::WaitFor([&] { return receiver.Requests() >= 1; }, kWait));
  for (int i = 0; i < 500; ++i) t.tracer().StartSpan("file").End();  // while the POST hangs
  EXPECT_GT(t.exporter()->stats().spans_dropped_queue_full, 0u);
  ASSERT_TRUE(nbu::test::WaitFor([&] { return t.exporter()->stats().export_failures > 0; }, kWait));
  t.Shutdown(RealClock::Instance().Now() + milliseconds(300));
  const ExporterStats s = t.exporter()->stats();
  EXPECT_EQ(s.spans_exported + s.spans_dropped_queue_full + s.spans_dropped_export, 501u);
}

TEST(OtlpReceiverTest, RejectedBatchIsDroppedWithoutRetry) {
  OtlpReceiver receiver;
  receiver.SetAnswer(400);
  TelemetryConfig config =
      ConfigFor({{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint() + "/v1/traces"},
                 {"OTEL_BSP_SCHEDULE_DELAY", "10"}});
  Telemetry t(config, RealClock::Instance());
  t.Start();
  t.tracer().StartSpan("s").End();
  ASSERT_TRUE(
      nbu::test::WaitFor([&] { return t.exporter()->stats().spans_dropped_export == 1; }, kWait));
  t.Shutdown(RealClock::Instance().Now() + seconds(2));
  EXPECT_EQ(receiver.Requests(), 1);
  EXPECT_TRUE(receiver.Errors().empty());
}

// The libcurl transport against the stand-in, with the exporter's schedule on a SimulatedClock
// the test moves (RunOnce, no thread): it asserts when the next attempt is due, not real waits.
SpanData SpanAt(const Clock& clock) {
  SpanData s;
  s.context = {NewTraceId(), NewSpanId()};
  s.name = "s";
  s.start = s.end = clock.WallNow();
  return s;
}

TEST(OtlpReceiverTest, RetryAfterSecondsAndDatesDelayTheRetry) {
  OtlpReceiver receiver;
  receiver.SetAnswer(429, {{"Retry-After", "7"}});
  TelemetryConfig config;
  config.traces_url = receiver.endpoint() + "/v1/traces";
  config.retry_jitter = 0;
  SimulatedClock clock(/*auto_advance=*/false);
  OtlpExporter e(config, clock, nullptr);
  ASSERT_TRUE(e.Enqueue(SpanAt(clock)));
  clock.Advance(config.span_schedule_delay);
  EXPECT_EQ(e.RunOnce(), clock.Now() + seconds(7)) << "not the 1 s backoff";
  // An HTTP-date counts from the answer's Date (the server's clock), so any date will do here.
  receiver.SetAnswer(503, {{"Date", "Wed, 21 Oct 2015 07:28:00 GMT"},
                           {"Retry-After", "Wed, 21 Oct 2015 07:28:30 GMT"}});
  clock.Advance(seconds(7));
  EXPECT_EQ(e.RunOnce(), clock.Now() + seconds(30)) << "not the 2 s backoff";
  receiver.SetAnswer(200);
  clock.Advance(seconds(30));
  e.RunOnce();
  EXPECT_EQ(receiver.Requests(), 3);
  EXPECT_EQ(e.stats().spans_exported, 1u);
  EXPECT_TRUE(receiver.Errors().empty()) << receiver.Errors()[0];
}

TEST(OtlpReceiverTest, PartialSuccessRejectsAreDroppedNotRetried) {
  OtlpReceiver receiver;
  receiver.SetAnswer(200, {},
                     R"({"partialSuccess":{"rejectedSpans":"2","errorMessage":"spans too old"}})");
  TelemetryConfig config;
  config.traces_url = receiver.endpoint() + "/v1/traces";
  SimulatedClock clock(/*auto_advance=*/false);
  OtlpExporter e(config, clock, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(e.Enqueue(SpanAt(clock)));
  clock.Advance(config.span_schedule_delay);
  e.RunOnce();
  clock.Advance(seconds(30));
  e.RunOnce();
  EXPECT_EQ(receiver.Requests(), 1);
  EXPECT_EQ(e.stats().spans_exported, 1u);
  EXPECT_EQ(e.stats().spans_dropped_export, 2u);
  EXPECT_EQ(e.stats().export_failures, 0u);
}

// A gateway that refuses the API key may quote it in its answer, and the failure is logged: the
// libcurl transport removes every header value from the body before shortening it (a cut could
// keep most of a key), and leaves out a 401's or 403's body altogether.
TEST(OtlpReceiverTest, ExportErrorsNeverQuoteHeaderValues) {
  const std::string key = "k3y-0f-the-c0llector-that-must-n0t-leak";
  const KeyValues headers = {{"api-key", key},
                             {"Authorization", "Bearer t0ken-that-must-n0t-leak"}};
  OtlpReceiver receiver;
  const auto post = [&] {
    OtlpRequest request{receiver.endpoint() + "/v1/traces", &headers, R"({"resourceSpans":[]})",
                        seconds(5)};
    const std::atomic<bool> cancel{false};
    return NewCurlOtlpTransport()->Post(request, cancel).status;
  };
  const auto expect_no_secret = [&](const Status& s) {
    EXPECT_FALSE(s.ok());
    for (const std::string& secret : {key, std::string("t0ken-that-must-n0t-leak")}) {
      EXPECT_EQ(nbu::test::PieceOf(secret, s.message(), 8), "") << s.message();
    }
  };
  // 180 characters, then the key: a cut at 200 would keep 20 of them.
  const std::string padding(180, '.');
  receiver.SetAnswer(400, {},
                     R"({"message":")" + padding.substr(0, 168) + "invalid key " + key +
                         R"(, token Bearer t0ken-that-must-n0t-leak"})");
  Status s = post();
  expect_no_secret(s);
  EXPECT_NE(s.message().find("HTTP 400: {\"message\":\"..."), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("invalid key <redact"), std::string::npos) << s.message();
  receiver.SetAnswer(400, {}, R"({"message":"token t0ken-that-must-n0t-leak is unknown"})");
  s = post();
  expect_no_secret(s);
  EXPECT_NE(s.message().find("token <redacted> is unknown"), std::string::npos) << s.message();
  for (int status : {401, 403}) {
    receiver.SetAnswer(status, {}, R"({"message":"refused"})");
    s = post();
    expect_no_secret(s);
    EXPECT_NE(s.message().find("HTTP " + std::to_string(status)), std::string::npos);
    EXPECT_EQ(s.message().find("refused"), std::string::npos) << s.message();
  }
  EXPECT_EQ(receiver.LastHeaders()["api-key"], key) << "the key was sent";
}

TEST(OtlpReceiverTest, ReceiverRejectsWrongContentType) {
  // Guards the stand-in itself: a body without the JSON content type is refused and recorded.
  OtlpReceiver receiver;
  httplib::Client client("127.0.0.1", receiver.port());
  const auto res = client.Post("/v1/traces", "{}", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 415);
  EXPECT_EQ(receiver.Errors().size(), 1u);
  const auto bad =
      client.Post("/v1/traces", R"({"resourceSpans":[{"bogus":1}]})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

}  // namespace
}  // namespace nbu::telemetry
