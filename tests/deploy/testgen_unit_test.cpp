// Unit tests for nfs-testgen: configuration, request validation, file names and contents.
#include "testgen/config.h"
#include "testgen/file_name.h"
#include "testgen/job.h"

#include <gtest/gtest.h>

#include <map>

namespace nbu::testgen {
namespace {

ConfigResult Load(const std::map<std::string, std::string>& vars) {
  return LoadConfig([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(TestgenConfigTest, DefaultsWhenUnsetOrEmpty) {
  const auto r = Load({{"GEN_HTTP_PORT", ""}});
  ASSERT_TRUE(r.errors.empty());
  EXPECT_EQ(r.config.output_dir, "/mnt/nfs/incoming");
  EXPECT_EQ(r.config.http_host, "127.0.0.1");
  EXPECT_EQ(r.config.http_port, 8080);
  EXPECT_EQ(r.config.write_mode, WriteMode::kInPlace);
}

TEST(TestgenConfigTest, ReadsEveryVariable) {
  const auto r = Load({{"GEN_OUTPUT_DIR", "/data/in"},
                       {"GEN_HTTP_HOST", "127.0.0.1"},
                       {"GEN_HTTP_PORT", "9090"},
                       {"GEN_WRITE_MODE", "rename"},
                       {"GEN_LOG_LEVEL", "debug"}});
  ASSERT_TRUE(r.errors.empty());
  EXPECT_EQ(r.config.output_dir, "/data/in");
  EXPECT_EQ(r.config.http_host, "127.0.0.1");
  EXPECT_EQ(r.config.http_port, 9090);
  EXPECT_EQ(r.config.write_mode, WriteMode::kRename);
  EXPECT_EQ(r.config.log_level, LogLevel::kDebug);
  EXPECT_EQ(ConfigVarNames().size(), 5u);
}

TEST(TestgenConfigTest, ReportsOneLinePerProblemNamingTheVariable) {
  const auto r =
      Load({{"GEN_HTTP_PORT", "80x"}, {"GEN_WRITE_MODE", "append"}, {"GEN_LOG_LEVEL", "loud"}});
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].rfind("GEN_HTTP_PORT: ", 0), 0u) << r.errors[0];
  EXPECT_EQ(r.errors[1].rfind("GEN_WRITE_MODE: ", 0), 0u) << r.errors[1];
  EXPECT_EQ(r.errors[2].rfind("GEN_LOG_LEVEL: ", 0), 0u) << r.errors[2];
  for (const char* port : {"0", "65536", "-1", " 80", "8080 "}) {
    EXPECT_EQ(Load({{"GEN_HTTP_PORT", port}}).errors.size(), 1u) << port;
  }
}

TEST(JobSpecTest, EmptyBodyAndEmptyObjectMeanDefaults) {
  for (const char* body : {"", "  \n", "{}"}) {
    const auto p = ParseJobSpec(body, WriteMode::kRename);
    ASSERT_TRUE(p.spec) << body;
    EXPECT_EQ(p.spec->session_name, "test-session");
    EXPECT_EQ(p.spec->interval_s, 2);
    EXPECT_EQ(p.spec->size_bytes, 65536u);
    EXPECT_EQ(p.spec->count, 10u);
    EXPECT_EQ(p.spec->write_mode, WriteMode::kRename);  // the service default
  }
}

TEST(JobSpecTest, ReadsEveryField) {
  const auto p =
      ParseJobSpec(R"({"session_name":"run_1.a-b","interval_s":0.25,"size_bytes":0,"count":0,)"
                   R"("write_mode":"rename"})",
                   WriteMode::kInPlace);
  ASSERT_TRUE(p.spec);
  EXPECT_EQ(p.spec->session_name, "run_1.a-b");
  EXPECT_EQ(p.spec->interval_s, 0.25);
  EXPECT_EQ(p.spec->size_bytes, 0u);
  EXPECT_EQ(p.spec->count, 0u);
  EXPECT_EQ(p.spec->write_mode, WriteMode::kRename);
}

struct BadBody {
  const char* body;
  int status;
  const char* code;
  const char* field;
};

TEST(JobSpecTest, RefusesBadBodiesWithStatusCodeAndField) {
  const BadBody cases[] = {
      {"{", 400, "malformed_json", ""},
      {"[1]", 400, "invalid_type", ""},
      {R"({"session_name":5})", 400, "invalid_type", "session_name"},
      {R"({"session_name":""})", 422, "invalid_value", "session_name"},
      {R"({"session_name":".."})", 422, "invalid_value", "session_name"},
      {R"({"session_name":"demo."})", 422, "invalid_value", "session_name"},  // as the uploader
      {R"({"session_name":"a/b"})", 422, "invalid_value", "session_name"},
      {R"({"interval_s":"2"})", 400, "invalid_type", "interval_s"},
      {R"({"interval_s":true})", 400, "invalid_type", "interval_s"},
      {R"({"interval_s":-0.5})", 422, "out_of_range", "interval_s"},
      {R"({"interval_s":86401})", 422, "out_of_range", "interval_s"},
      {R"({"size_bytes":1.5})", 400, "invalid_type", "size_bytes"},
      {R"({"size_bytes":-1})", 422, "out_of_range", "size_bytes"},
      {R"({"size_bytes":107374182401})", 422, "out_of_range", "size_bytes"},
      {R"({"count":null})", 400, "invalid_type", "count"},
      {R"({"count":1000001})", 422, "out_of_range", "count"},
      {R"({"write_mode":"append"})", 422, "invalid_value", "write_mode"},
      {R"({"write_mode":1})", 400, "invalid_type", "write_mode"},
      {R"({"intervals":1})", 400, "unknown_field", "intervals"},
  };
  for (const auto& c : cases) {
    const auto p = ParseJobSpec(c.body, WriteMode::kInPlace);
    ASSERT_FALSE(p.spec) << c.body;
    EXPECT_EQ(p.error.http_status, c.status) << c.body;
    EXPECT_EQ(p.error.code, c.code) << c.body;
    EXPECT_EQ(p.error.field, c.field) << c.body;
  }
}

TEST(FileNameTest, FormatIsFixedWidthAndRoundTrips) {
  using namespace std::chrono;
  const auto t =
      sys_days(year(2026) / 11 / 28) + hours(18) + minutes(4) + seconds(7) + milliseconds(45);
  const std::string name = MakeFileName({t, 42, 0x1a2b3c4d});
  EXPECT_EQ(name, "20261128T180407.045Z-000042-1a2b3c4d.bin");
  const auto parts = ParseFileName(name);
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->time, t);
  EXPECT_EQ(parts->sequence, 42u);
  EXPECT_EQ(parts->random, 0x1a2b3c4du);
}

TEST(FileNameTest, NamesSortByTimeThenSequence) {
  using namespace std::chrono;
  const auto t = sys_days(year(2026) / 1 / 1) + hours(9);
  EXPECT_LT(MakeFileName({t, 9, 0xffffffff}), MakeFileName({t, 10, 0}));
  EXPECT_LT(MakeFileName({t, 999, 0xffffffff}), MakeFileName({t + milliseconds(1), 1, 0}));
  EXPECT_LT(MakeFileName({t, 1, 0}), MakeFileName({t + hours(24 * 400), 1, 0}));
}

TEST(FileNameTest, ParseRejectsEverythingElse) {
  for (const char* bad :
       {"", "x.bin", "20261128T180407.045Z-000042-1a2b3c4d.bin.completed",
        ".20261128T180407.045Z-000042-1a2b3c4d.bin.Ab12Cd",
        "20261128T180407.045Z-000042-1A2B3C4D.bin", "20261328T180407.045Z-000042-1a2b3c4d.bin",
        "20261128T240407.045Z-000042-1a2b3c4d.bin", "20261128T180407.045Z-00004x-1a2b3c4d.bin",
        "20261128T180407.045Z-+00042-1a2b3c4d.bin", "20261128T180407.045Z-000042-1a2b3c4d.dat"}) {
    EXPECT_FALSE(ParseFileName(bad)) << bad;
  }
}

TEST(ContentStreamTest, ChunkingDoesNotChangeTheBytes) {
  const std::string name = "20261128T180407.045Z-000042-1a2b3c4d.bin";
  const std::string whole = ExpectedContent(name, 1000);
  ContentStream stream(name);
  std::string got;
  for (const size_t n : std::initializer_list<size_t>{1, 7, 8, 13, 300, 671}) {
    std::string chunk(n, '\0');
    stream.Next(chunk);
    got += chunk;
  }
  EXPECT_EQ(got, whole);
  EXPECT_NE(ExpectedContent("20261128T180407.045Z-000043-1a2b3c4d.bin", 1000), whole);
}

}  // namespace
}  // namespace nbu::testgen
