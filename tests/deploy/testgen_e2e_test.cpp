// End-to-end tests of nfs-testgen: the real binary as a process, driven through its HTTP API,
// with the files it writes checked on disk.
#include "deploy/deploy_support.h"
#include "testgen/file_name.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>

namespace nbu::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Every entry of `dir`, hidden ones included, sorted.
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Checks that `dir` holds exactly `names`, each complete, of `size` bytes and the content its
// name calls for.
void ExpectFiles(const std::string& dir, const std::vector<std::string>& names, uint64_t size) {
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(Entries(dir), sorted);
  for (const auto& name : names) {
    EXPECT_TRUE(testgen::ParseFileName(name)) << name;
    const std::string path = dir + '/';
    EXPECT_EQ(ReadFile(path + name), testgen::ExpectedContent(name, size)) << name;
  }
}

class TestgenE2eTest : public ::testing::Test {
 protected:
  TempDir dir_;
  Testgen gen_{dir_ / "incoming", dir_ / "testgen.log"};
  int port() const { return gen_.port(); }
};

TEST_F(TestgenE2eTest, AnswersHealthStatusAndErrorsAsJson) {
  EXPECT_EQ(GetJson(port(), "/healthz").status, 200);
  const auto idle = GetJson(port(), "/v1/generate/status");
  ASSERT_EQ(idle.status, 200);
  EXPECT_EQ(idle.body["state"], "idle");
  EXPECT_EQ(idle.body["files_written"], 0);
  EXPECT_EQ(idle.body["write_mode"], "in-place");

  const auto stop = PostJson(port(), "/v1/generate/stop", "");
  EXPECT_EQ(stop.status, 409);
  EXPECT_EQ(stop.body["error"], "not_running");
  const auto malformed = PostJson(port(), "/v1/generate/start", "{\"count\":");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(malformed.body["error"], "malformed_json");
  const auto type = PostJson(port(), "/v1/generate/start", R"({"size_bytes":"big"})");
  EXPECT_EQ(type.status, 400);
  EXPECT_EQ(type.body["field"], "size_bytes");
  const auto range = PostJson(port(), "/v1/generate/start", R"({"interval_s":-1})");
  EXPECT_EQ(range.status, 422);
  EXPECT_EQ(range.body["field"], "interval_s");
  const auto session = PostJson(port(), "/v1/generate/start", R"({"session_name":"../x"})");
  EXPECT_EQ(session.status, 422);
  const auto unknown = GetJson(port(), "/v1/nope");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.body["error"], "not_found");
  EXPECT_EQ(GetJson(port(), "/v1/generate/start").status, 404);  // wrong method
  EXPECT_FALSE(fs::exists(dir_ / "incoming"));                   // nothing was started
}

TEST_F(TestgenE2eTest, RenameModeWritesCompleteFilesAndRefusesASecondJob) {
  const auto start = PostJson(port(), "/v1/generate/start",
                              R"({"session_name":"run-1","interval_s":0.05,"size_bytes":5000,)"
                              R"("count":4,"write_mode":"rename"})");
  ASSERT_EQ(start.status, 202) << start.body;
  EXPECT_EQ(start.body["state"], "running");
  EXPECT_EQ(PostJson(port(), "/v1/generate/start", "{}").status, 409);
  const json done = gen_.WaitJobDone(std::chrono::seconds(30));
  EXPECT_EQ(done["state"], "completed");
  EXPECT_EQ(done["session_name"], "run-1");
  EXPECT_EQ(done["files_written"], 4);
  EXPECT_EQ(done["bytes_written"], 20000);
  EXPECT_EQ(done["write_mode"], "rename");
  const auto names = gen_.WrittenFiles();
  ASSERT_EQ(names.size(), 4u);
  ExpectFiles(dir_ / "incoming/run-1", names, 5000);
  EXPECT_EQ(PostJson(port(), "/v1/generate/stop", "").status, 409);  // already finished
}

TEST_F(TestgenE2eTest, StopEndsAnOpenEndedInPlaceJobWithoutPartialFiles) {
  ASSERT_EQ(PostJson(port(), "/v1/generate/start",
                     R"({"session_name":"s","interval_s":0.4,"size_bytes":300000,"count":0})")
                .status,
            202);
  ASSERT_TRUE(WaitFor([&] { return gen_.WrittenFiles().size() >= 2; }, std::chrono::seconds(30)));
  const auto stop = PostJson(port(), "/v1/generate/stop", "");
  ASSERT_EQ(stop.status, 200);
  EXPECT_EQ(stop.body["state"], "stopped");
  const auto names = gen_.WrittenFiles();
  EXPECT_EQ(stop.body["files_written"], names.size());
  ExpectFiles(dir_ / "incoming/s", names, 300000);
}

TEST_F(TestgenE2eTest, SigtermFinishesTheCurrentFileAndExitsZero) {
  ASSERT_EQ(PostJson(port(), "/v1/generate/start",
                     R"({"session_name":"s","interval_s":2,"size_bytes":800000,"count":0})")
                .status,
            202);
  ASSERT_TRUE(
      WaitFor([&] { return GetJson(port(), "/v1/generate/status").body["bytes_written"] > 0; },
              std::chrono::seconds(30)));
  gen_.process().Signal(SIGTERM);  // most likely in the middle of the paced first file
  EXPECT_EQ(gen_.process().Wait(std::chrono::seconds(20)), 0) << gen_.process().ReadLog();
  // The file it was writing is finished, not removed (which would leave nothing to compare).
  ASSERT_GE(gen_.WrittenFiles().size(), 1u) << gen_.process().ReadLog();
  ExpectFiles(dir_ / "incoming/s", gen_.WrittenFiles(), 800000);
}

TEST(TestgenConfigE2eTest, InvalidConfigurationExitsTwoNamingEachVariable) {
  TempDir dir;
  ChildProcess proc({BinaryPath("nfs-testgen")},
                    {{"GEN_HTTP_PORT", "99999"}, {"GEN_WRITE_MODE", "append"}}, dir / "log");
  proc.CheckAtEnd(std::chrono::seconds(20));
  EXPECT_EQ(proc.Wait(std::chrono::seconds(20)), 2);
  const std::string log = proc.ReadLog();
  EXPECT_NE(log.find("GEN_HTTP_PORT"), std::string::npos) << log;
  EXPECT_NE(log.find("GEN_WRITE_MODE"), std::string::npos) << log;
}

// An address it cannot listen on (here a port another server holds, one that allows sharing it
// as cpp-httplib's servers do) is named like the other settings, with the same exit code.
TEST(TestgenConfigE2eTest, AnAddressItCannotListenOnExitsTwoNamingIt) {
  TempDir dir;
  const int port = FreeLoopbackPort();
  const int holder = ListenLoopbackShared(port);
  ASSERT_GE(holder, 0);
  ChildProcess proc({BinaryPath("nfs-testgen")},
                    {{"GEN_HTTP_HOST", "127.0.0.1"},
                     {"GEN_HTTP_PORT", std::to_string(port)},
                     {"GEN_OUTPUT_DIR", dir.path()}},
                    dir / "log");
  proc.CheckAtEnd(std::chrono::seconds(20));
  const auto code = proc.Wait(std::chrono::seconds(20));
  if (!code) proc.Signal(SIGTERM);  // it shared the port and serves: stop it
  ::close(holder);
  EXPECT_EQ(code, 2);
  const std::string log = proc.ReadLog();
  EXPECT_NE(
      log.find("GEN_HTTP_HOST, GEN_HTTP_PORT: cannot listen on 127.0.0.1:" + std::to_string(port)),
      std::string::npos)
      << log;
}

TEST(TestgenConfigE2eTest, ListsItsVariables) {
  TempDir dir;
  ChildProcess proc({BinaryPath("nfs-testgen"), "--config-vars"}, {}, dir / "log");
  proc.CheckAtEnd(std::chrono::seconds(20));
  EXPECT_EQ(proc.Wait(std::chrono::seconds(20)), 0);
  EXPECT_EQ(proc.ReadLog(),
            "GEN_OUTPUT_DIR\nGEN_HTTP_HOST\nGEN_HTTP_PORT\nGEN_WRITE_MODE\nGEN_LOG_LEVEL\n");
}

}  // namespace
}  // namespace nbu::test
