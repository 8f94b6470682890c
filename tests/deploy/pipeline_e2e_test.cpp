// The whole ingest path from real binaries: nfs-testgen writes files into the incoming directory,
// nfs-blob-uploader uploads them to a real Azurite, and every file must arrive byte-exact under
// <YYYYMMDD>/<session>/<name>, in both write modes.
#include "azure/blob_client.h"
#include "azure/connection_string.h"
#include "deploy/deploy_support.h"
#include "support/azurite.h"
#include "testgen/file_name.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

namespace nbu::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kContainer = "deploy-e2e";
constexpr const char* kSession = "pipeline-e2e";
constexpr uint64_t kFiles = 20;

std::string UtcDay(std::chrono::system_clock::time_point t) {
  const std::string name = testgen::MakeFileName({t, 0, 0});
  return name.substr(0, 8);  // YYYYMMDD, as in the uploader's blob names
}

class PipelineE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* d : {"nfs/incoming", "nfs/.processing", "nfs/.failed", "staging"}) {
      fs::create_directories(dir_ / d);
    }
    uploader_port_ = FreeLoopbackPort();
    uploader_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{BinaryPath("nfs-blob-uploader")},
        std::map<std::string, std::string>{
            {"APP_AZURE_CONNECTION_STRING", azurite_.ConnectionString()},
            {"APP_AZURE_CONTAINER", kContainer},
            {"APP_NFS_INCOMING_DIR", dir_ / "nfs/incoming"},
            {"APP_NFS_PROCESSING_ROOT", dir_ / "nfs/.processing"},
            {"APP_NFS_FAILED_ROOT", dir_ / "nfs/.failed"},
            {"APP_LOCAL_STAGING_ROOT", dir_ / "staging"},
            {"APP_POLL_INTERVAL_S", "0.2"},
            {"APP_MIN_FILE_AGE_S", "0.5"},
            {"APP_HTTP_HOST", "127.0.0.1"},
            {"APP_HTTP_PORT", std::to_string(uploader_port_)},
            {"APP_REPLICA_ID", "deploy-e2e-1"},
            {"APP_ENV_FILE", "/dev/null"},
            {"OTEL_SDK_DISABLED", "true"}},
        dir_ / "uploader.log");
    // Stopped by SIGTERM and checked at the end: the default shutdown grace (25 s) and 10 s more.
    uploader_->CheckAtEnd(std::chrono::seconds(35));
    ASSERT_TRUE(WaitHealthy(uploader_port_, "/readyz", std::chrono::seconds(60)))
        << uploader_->ReadLog();
    testgen_ = std::make_unique<Testgen>(dir_ / "nfs/incoming", dir_ / "testgen.log");

    auto info = azure::ParseConnectionString(azurite_.ConnectionString());
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    auto cred = azure::MakeCredential(*info);
    ASSERT_TRUE(cred.ok()) << cred.status().ToString();
    azure::BlobClientOptions options;
    options.endpoint = info->endpoint;
    options.account = info->account;
    options.container = kContainer;
    blobs_ = std::make_unique<azure::BlobClient>(
        options, *cred, std::make_shared<azure::HttpTransport>(), RealClock::Instance());
  }

  // The blob of generated file `name`, looked up under the day the file was written and the next
  // (the uploader dates a blob by its claim, which can fall after midnight).
  std::optional<std::string> Blob(const std::string& name) {
    const auto parts = testgen::ParseFileName(name);
    if (!parts) return std::nullopt;
    for (const auto day : {parts->time, parts->time + std::chrono::hours(24)}) {
      auto got = blobs_->GetBlob(UtcDay(day) + "/" + kSession + "/" + name);
      if (got.ok()) return *got;
    }
    return std::nullopt;
  }

  uint64_t Uploaded() {
    const auto st = GetJson(uploader_port_, "/v1/status");
    return st.body.is_object() ? st.body.value("uploaded", uint64_t{0}) : 0;
  }

  // Generates kFiles files in `mode` and checks that each reaches Azurite intact.
  void GenerateAndVerify(const std::string& mode, double interval_s, uint64_t size) {
    const auto before = testgen_->WrittenFiles().size();
    const json req = {{"session_name", kSession},
                      {"interval_s", interval_s},
                      {"size_bytes", size},
                      {"count", kFiles},
                      {"write_mode", mode}};
    ASSERT_EQ(PostJson(testgen_->port(), "/v1/generate/start", req.dump()).status, 202);
    const json done = testgen_->WaitJobDone(std::chrono::seconds(120));
    ASSERT_EQ(done.value("state", ""), "completed") << done;
    const auto all = testgen_->WrittenFiles();
    const std::vector<std::string> names(all.begin() + static_cast<std::ptrdiff_t>(before),
                                         all.end());
    ASSERT_EQ(names.size(), kFiles);
    const uint64_t expected_uploads = before + kFiles;
    ASSERT_TRUE(WaitFor([&] { return Uploaded() >= expected_uploads; }, std::chrono::seconds(120)))
        << "uploaded " << Uploaded() << " of " << expected_uploads << "\n"
        << uploader_->ReadLog();
    for (const auto& name : names) {
      const auto blob = Blob(name);
      ASSERT_TRUE(blob) << "no blob for " << name;
      EXPECT_TRUE(*blob == testgen::ExpectedContent(name, size)) << name << " differs";
    }
  }

  TempDir dir_;
  Azurite azurite_;
  int uploader_port_ = 0;
  std::unique_ptr<ChildProcess> uploader_;
  std::unique_ptr<Testgen> testgen_;
  std::unique_ptr<azure::BlobClient> blobs_;
};

TEST_F(PipelineE2eTest, EveryGeneratedFileArrivesByteExactInBothWriteModes) {
  const auto watch =
      PostJson(uploader_port_, "/v1/watch/start", json{{"session_name", kSession}}.dump());
  ASSERT_EQ(watch.status, 200) << watch.body;
  // In place: each 256 KiB file grows in 8 chunks over 0.4 s, longer than two scan intervals,
  // so only the stability check keeps partial files from being claimed.
  GenerateAndVerify("in-place", 0.8, uint64_t{256} * 1024);
  // Rename: hidden temp names must be ignored until the rename makes the file appear whole.
  GenerateAndVerify("rename", 0.1, 100'000);
  EXPECT_EQ(Uploaded(), 2 * kFiles);  // each file once, no partial versions
  const auto status = GetJson(uploader_port_, "/v1/status");
  EXPECT_EQ(status.body.value("failed", uint64_t{0}), 0u) << status.body;
  // The incoming session directory is drained and nothing was quarantined.
  EXPECT_TRUE(
      WaitFor([&] { return fs::is_empty(dir_ / ("nfs/incoming/" + std::string(kSession))); },
              std::chrono::seconds(30)));
  EXPECT_TRUE(fs::is_empty(dir_ / "nfs/.failed") || !fs::exists(dir_ / "nfs/.failed"));

  ASSERT_EQ(PostJson(uploader_port_, "/v1/watch/stop", "").status, 200);
  uploader_->Signal(SIGTERM);
  testgen_->process().Signal(SIGTERM);
  EXPECT_EQ(uploader_->Wait(std::chrono::seconds(40)), 0) << uploader_->ReadLog();
  EXPECT_EQ(testgen_->process().Wait(std::chrono::seconds(20)), 0);
}

}  // namespace
}  // namespace nbu::test
