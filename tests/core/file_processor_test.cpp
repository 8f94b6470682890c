#include "core/file_processor.h"

#include <gtest/gtest.h>

#include <limits>
#include <set>

namespace nbu::core {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// A staging volume smaller than one file's ring (or whole Put Blob file) is named at start-up:
// such a file would wait for room for ever.
TEST(StagingRoomTest, OneFileMustFit) {
  Config c;  // 64 MiB Put Blob limit, 8 MiB blocks, 8 in flight: a ring of 10 blocks
  EXPECT_EQ(StagingNeedPerFile(c), 80ULL << 20);
  EXPECT_FALSE(CheckStagingRoom(c, 80ULL << 20).has_value());
  const auto w = CheckStagingRoom(c, 64ULL << 20);
  ASSERT_TRUE(w.has_value());
  EXPECT_NE(w->find("holds 64 MiB"), std::string::npos) << *w;
  EXPECT_NE(w->find("up to 80 MiB"), std::string::npos) << *w;
  c.azure_put_blob_max_bytes = 256ULL << 20;  // files up to 256 MiB are staged whole
  EXPECT_EQ(StagingNeedPerFile(c), 256ULL << 20);
  EXPECT_TRUE(CheckStagingRoom(c, 128ULL << 20).has_value());
}

TEST(BlockPlanTest, PutBlobUpToThresholdThenBlocks) {
  EXPECT_EQ(PlanBlockSize(0, 32 * kMiB, 8 * kMiB), 0u);
  EXPECT_EQ(PlanBlockSize(32 * kMiB, 32 * kMiB, 8 * kMiB), 0u);
  EXPECT_EQ(PlanBlockSize(32 * kMiB + 1, 32 * kMiB, 8 * kMiB), 8 * kMiB);
}

TEST(BlockPlanTest, GrowsSoABlobNeverNeedsMoreThan50000Blocks) {
  for (uint64_t size : std::initializer_list<uint64_t>{400'000 * kMiB, 1'000'000 * kMiB,
                                                       190ull * 1024 * 1024 * kMiB}) {
    const uint64_t bs = PlanBlockSize(size, 32 * kMiB, 8 * kMiB);
    EXPECT_EQ(bs % kMiB, 0u);
    EXPECT_LE((size + bs - 1) / bs, 50'000u) << size;
    EXPECT_LE(bs, 4000 * kMiB);
  }
}

TEST(StagingSlotsTest, SendersPlusTwoBlocksWhateverTheFileSize) {
  EXPECT_EQ(StagingSlots(32, 8), 10u);      // 256 MiB in 8 MiB blocks: 80 MiB staged
  EXPECT_EQ(StagingSlots(12'800, 8), 10u);  // 100 GiB: still 80 MiB
  EXPECT_EQ(StagingSlots(5, 8), 5u);        // fewer blocks than slots
  EXPECT_EQ(StagingSlots(40, 0), 3u);       // at least one sender
}

TEST(BlockIdTest, FixedWidthDeterministicAndContentBound) {
  const Md5Digest a = Md5::Of("a");
  const Md5Digest b = Md5::Of("b");
  std::set<size_t> widths;
  for (uint64_t i : std::initializer_list<uint64_t>{0, 9, 10, 99'999, 49'999})
    widths.insert(BlockId(a, kMiB, i).size());
  EXPECT_EQ(widths.size(), 1u);
  EXPECT_EQ(BlockId(a, kMiB, 7), BlockId(a, kMiB, 7));
  EXPECT_NE(BlockId(a, kMiB, 7), BlockId(b, kMiB, 7));      // other bytes
  EXPECT_NE(BlockId(a, kMiB, 7), BlockId(a, 2 * kMiB, 7));  // other block size
  EXPECT_EQ(BlockId(a, kMiB, 42).substr(16), "-000042");
}

// A mime.types text: one type and its extensions per line, comments, blanks and tabs, a first
// type named for an extension winning, and lines that do not start with a type skipped (one that
// would put a control character or a second word in a header never gets there).
TEST(NamingTest, MimeTypesAreParsedAsTheSystemTableWritesThem) {
  const auto table = ParseMimeTypes(
      "# comment\n"
      "application/x-netcdf\t\t\tnc\n"
      "image/fits  fits fit FTS   # trailing comment\n"
      "application/json-seq\n"
      "text/plain\ttxt\r\n"
      "text/other txt\n"
      "not-a-type zz\n"
      "bad/ty\x01pe yy\n"
      "a/b/c xx\n"
      "\n");
  const std::unordered_map<std::string, std::string> expected = {{"nc", "application/x-netcdf"},
                                                                 {"fits", "image/fits"},
                                                                 {"fit", "image/fits"},
                                                                 {"fts", "image/fits"},
                                                                 {"txt", "text/plain"}};
  EXPECT_EQ(table, expected);
}

TEST(NamingTest, RcloneMtimeIsUtcToTheNanosecond) {
  EXPECT_EQ(RcloneMtime(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(RcloneMtime(1'700'000'000'123'456'789), "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(RcloneMtime(-1), "1969-12-31T23:59:59.999999999Z") << "floored, not truncated";
  EXPECT_EQ(RcloneMtime(std::numeric_limits<int64_t>::min()), "1677-09-21T00:12:43.145224192Z");
  EXPECT_EQ(RcloneMtime(std::numeric_limits<int64_t>::max()), "2262-04-11T23:47:16.854775807Z");
}

TEST(NamingTest, ContentTypeAndDate) {
  EXPECT_EQ(ContentTypeFor("x.CSV"), "text/csv");
  EXPECT_EQ(ContentTypeFor("a.tar.gz"), "application/gzip");
  EXPECT_EQ(ContentTypeFor("noext"), "application/octet-stream");
  EXPECT_EQ(ContentTypeFor("x.no-such-extension"), "application/octet-stream");
  EXPECT_EQ(ContentTypeFor("run.log"), "text/plain") << "our table first";
  // Beyond our table, the system's (scripts/install-deps.sh installs Debian's media-types).
  const auto system = fs::ReadSmallFile("/etc/mime.types", 4 << 20);
  ASSERT_TRUE(system.ok()) << system.status().ToString();
  const auto table = ParseMimeTypes(*system);
  for (const char* ext : {"nc", "fits", "wasm", "svg"}) {
    const auto it = table.find(ext);
    ASSERT_NE(it, table.end()) << ext << " is not in /etc/mime.types";
    EXPECT_EQ(ContentTypeFor(std::string("data.") + ext), it->second) << ext;
  }
  const auto t = std::chrono::system_clock::time_point(
      std::chrono::seconds(1'798'761'599));  // 2026-12-31T23:59:59Z
  EXPECT_EQ(UtcDate(t), "20261231");
  EXPECT_EQ(UtcDate(t + std::chrono::seconds(1)), "20270101");
}

}  // namespace
}  // namespace nbu::core
