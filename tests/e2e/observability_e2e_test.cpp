// Observability end to end: the real binary exports OTLP traces and metrics to a stand-in
// collector faithful to OTLP/HTTP, logs carry the exported trace ids, /metrics scrapes cleanly,
// and a dead collector costs uploads nothing but counted drops.
#include "e2e_support.h"
#include "otlp_receiver.h"

#include <gtest/gtest.h>

#include <httplib.h>

#include <regex>
#include <sstream>

namespace nbu::test {
namespace {

using namespace std::chrono_literals;
using telemetry::test::OtlpReceiver;

class ObservabilityE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    blobs_ = MakeBlobClient(azurite_, "obs");
    ASSERT_TRUE(blobs_->CreateContainerIfMissing().ok());
  }
  std::map<std::string, std::string> OtelEnv(const std::string& endpoint) {
    return {{"APP_AZURE_CONTAINER", "obs"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT", endpoint},
            {"OTEL_BSP_SCHEDULE_DELAY", "200"},
            {"OTEL_METRIC_EXPORT_INTERVAL", "300"},
            {"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"}};
  }
  std::string Scrape(UploaderProcess& up) {
    httplib::Client cli("127.0.0.1", up.port());
    auto r = cli.Get("/metrics");
    return r && r->status == 200 ? r->body : "";
  }
  Azurite azurite_;
  Volume volume_;
  std::unique_ptr<azure::BlobClient> blobs_;
};

TEST_F(ObservabilityE2E, TracesMetricsAndLogsAgree) {
  OtlpReceiver collector;
  UploaderProcess up(azurite_, volume_, "obs", "obs-1", OtelEnv(collector.endpoint()));
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"o"})").status, 200);
  for (int i = 0; i < 3; ++i) WriteFile(volume_.incoming() + "/o/f" + std::to_string(i), "data");
  ASSERT_TRUE(WaitFor([&] { return up.Status().value("uploaded", 0) == 3; }, 60s));
  ASSERT_TRUE(WaitFor(
      [&] {
        int files = 0;
        for (const auto& s : collector.Spans()) files += s.name == "file" ? 1 : 0;
        return files >= 3;
      },
      30s));
  EXPECT_TRUE(collector.Errors().empty()) << collector.Errors().front();

  // One trace per file: the root span and its claim/stage/upload/complete children.
  std::map<std::string, telemetry::test::ReceivedSpan> roots;
  for (const auto& s : collector.Spans()) {
    if (s.name == "file") roots[s.trace_id] = s;
  }
  ASSERT_EQ(roots.size(), 3u);
  for (const auto& [trace, root] : roots) {
    for (const char* k : {"service.name", "service.instance.id", "deployment.environment"}) {
      ASSERT_TRUE(root.resource.count(k)) << k;
    }
    ASSERT_TRUE(root.attributes.count("session"));
    EXPECT_EQ(root.resource.at("service.name")["stringValue"], "nfs-blob-uploader");
    EXPECT_EQ(root.resource.at("service.instance.id")["stringValue"], "obs-1");
    EXPECT_EQ(root.resource.at("deployment.environment")["stringValue"], "test");
    EXPECT_EQ(root.attributes.at("session")["stringValue"], "o");
    EXPECT_TRUE(root.attributes.count("blob.name"));
    std::set<std::string> children;
    for (const auto& s : collector.Spans()) {
      if (s.trace_id == trace && s.parent_span_id == root.span_id) children.insert(s.name);
    }
    EXPECT_EQ(children, (std::set<std::string>{"claim", "stage", "upload", "complete"}));
  }

  // Every "uploaded" log line carries the trace and span id of its file's root span.
  int matched = 0;
  std::istringstream log(up.process().ReadLog());
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("message", "") != "uploaded") continue;
    auto it = roots.find(j.value("trace_id", ""));
    ASSERT_NE(it, roots.end()) << line;
    EXPECT_EQ(j["span_id"], it->second.span_id);
    ++matched;
  }
  EXPECT_EQ(matched, 3);

  // The seed's five metrics, with their types.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& m : collector.Metrics()) {
          if (m.name == "files.processed" && !m.points.empty() && m.points[0].value >= 3)
            return true;
        }
        return false;
      },
      30s));
  std::map<std::string, telemetry::test::ReceivedMetric> last;
  for (const auto& m : collector.Metrics()) last[m.name] = m;
  for (const char* k :
       {"files.processed", "files.failed", "upload.duration", "file.size", "queue.depth"}) {
    ASSERT_TRUE(last.count(k)) << k;
  }
  EXPECT_EQ(last.at("files.processed").type, "sum");
  EXPECT_TRUE(last.at("files.processed").is_monotonic);
  EXPECT_EQ(last.at("files.failed").type, "sum");
  EXPECT_EQ(last.at("upload.duration").type, "histogram");
  EXPECT_EQ(last.at("upload.duration").unit, "s");
  EXPECT_EQ(last.at("file.size").type, "histogram");
  EXPECT_EQ(last.at("file.size").unit, "By");
  EXPECT_EQ(last.at("queue.depth").type, "sum");
  EXPECT_FALSE(last.at("queue.depth").is_monotonic);
  EXPECT_EQ(last.at("file.size").points.at(0).count, 3u);

  // /metrics, read the way a scraper reads it.
  const std::string text = Scrape(up);
  EXPECT_NE(text.find("# TYPE files_processed_total counter"), std::string::npos);
  EXPECT_NE(text.find("files_processed_total 3"), std::string::npos);
  EXPECT_NE(text.find("# TYPE upload_duration_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("upload_duration_seconds_bucket{le=\"+Inf\"} 3"), std::string::npos);
  EXPECT_NE(text.find("file_size_bytes_count 3"), std::string::npos);
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEinfINFNa]+$)");
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
  }
}

TEST_F(ObservabilityE2E, DeadCollectorDoesNotStopUploadsAndDropsAreCounted) {
  const int dead_port = FreeLoopbackPort();  // nothing listens there
  UploaderProcess up(azurite_, volume_, "obs", "obs-2",
                     OtelEnv("http://127.0.0.1:" + std::to_string(dead_port)));
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"d"})").status, 200);
  for (int i = 0; i < 20; ++i) WriteFile(volume_.incoming() + "/d/f" + std::to_string(i), "x");
  ASSERT_TRUE(WaitFor([&] { return up.Status().value("uploaded", 0) == 20; }, 60s));
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string text = Scrape(up);
        return text.find("otel_exporter_failures_total{signal=\"spans\"}") != std::string::npos ||
               text.find("otel_exporter_dropped_total{reason=\"export_failed\"") !=
                   std::string::npos;
      },
      30s))
      << Scrape(up);
}

}  // namespace
}  // namespace nbu::test
