// Unit tests for the generator engine on a simulated clock (sleeps return at once).
#include "support/process.h"
#include "testgen/file_name.h"
#include "testgen/generator.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace nbu::testgen {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool Finished(const Generator& g) { return g.Snapshot().state != GeneratorState::kRunning; }

class GeneratorTest : public ::testing::TestWithParam<WriteMode> {
 protected:
  test::TempDir dir_;
  SimulatedClock clock_;
};

TEST_P(GeneratorTest, WritesCountFilesWithVerifiableContent) {
  Generator gen(dir_.path(), clock_);
  JobSpec spec{"s1", 2, 100'000, 5, GetParam()};
  ASSERT_TRUE(gen.Start(spec).ok());
  ASSERT_TRUE(test::WaitFor([&] { return Finished(gen); }, std::chrono::seconds(10)));
  const auto st = gen.Snapshot();
  EXPECT_EQ(st.state, GeneratorState::kCompleted);
  EXPECT_EQ(st.files_written, 5u);
  EXPECT_EQ(st.bytes_written, 500'000u);
  const auto names = Names(dir_ / "s1");
  ASSERT_EQ(names.size(), 5u);  // no temp files left behind
  for (size_t i = 0; i < names.size(); ++i) {
    const auto parts = ParseFileName(names[i]);
    ASSERT_TRUE(parts) << names[i];
    EXPECT_EQ(parts->sequence, i + 1);
    EXPECT_EQ(test::ReadFile(dir_ / ("s1/" + names[i])), ExpectedContent(names[i], 100'000));
  }
  EXPECT_EQ(st.last_file, "s1/" + names.back());
}

TEST_P(GeneratorTest, PacesFilesByTheInterval) {
  Generator gen(dir_.path(), clock_);
  ASSERT_TRUE(gen.Start({"s1", 3, 65536, 3, GetParam()}).ok());
  ASSERT_TRUE(test::WaitFor([&] { return Finished(gen); }, std::chrono::seconds(10)));
  Duration slept{0};
  for (const auto d : clock_.SleepsForTest()) slept += d;
  // Each file starts 3 s after the previous one; in-place writing also spreads each file over
  // half the interval (8 chunks, 7 pauses), which shows after the last file too.
  const bool in_place = GetParam() == WriteMode::kInPlace;
  const Duration expected =
      std::chrono::seconds(6) + (in_place ? FromSeconds(7 * 3.0 / 16) : Duration{0});
  EXPECT_EQ(std::chrono::round<std::chrono::milliseconds>(slept),
            std::chrono::round<std::chrono::milliseconds>(expected));
  EXPECT_EQ(clock_.SleepsForTest().size(), in_place ? 2u + 3 * 7 : 2u);
}

// A long interval does not stretch the pauses inside an in-place file past 1 s, which an
// uploader with a short minimum age would take for the end of the file.
TEST(GeneratorPacingTest, PausesInsideAFileStayUnderOneSecond) {
  test::TempDir dir;
  SimulatedClock clock;
  Generator gen(dir.path(), clock);
  ASSERT_TRUE(gen.Start({"s1", 600, 65536, 1, WriteMode::kInPlace}).ok());
  ASSERT_TRUE(test::WaitFor([&] { return Finished(gen); }, std::chrono::seconds(10)));
  const auto sleeps = clock.SleepsForTest();
  ASSERT_EQ(sleeps.size(), 7u);  // 8 chunks
  for (const auto d : sleeps) EXPECT_EQ(d, std::chrono::seconds(1));
}

INSTANTIATE_TEST_SUITE_P(Modes, GeneratorTest,
                         ::testing::Values(WriteMode::kInPlace, WriteMode::kRename),
                         [](const ::testing::TestParamInfo<WriteMode>& param_info) {
                           return param_info.param == WriteMode::kRename ? "Rename" : "InPlace";
                         });

TEST(GeneratorStateTest, StartWhileRunningConflictsAndStopEndsTheJob) {
  test::TempDir dir;
  SimulatedClock clock(/*auto_advance=*/false);  // the job waits in its interval until stopped
  Generator gen(dir.path(), clock);
  EXPECT_EQ(gen.Stop().kind(), ErrorKind::kConflict);
  ASSERT_TRUE(gen.Start({"s", 60, 10, 0, WriteMode::kRename}).ok());
  EXPECT_EQ(gen.Start({"s", 60, 10, 0, WriteMode::kRename}).kind(), ErrorKind::kConflict);
  ASSERT_TRUE(
      test::WaitFor([&] { return gen.Snapshot().files_written == 1; }, std::chrono::seconds(10)));
  ASSERT_TRUE(gen.Stop().ok());
  EXPECT_EQ(gen.Snapshot().state, GeneratorState::kStopped);
  EXPECT_EQ(gen.Stop().kind(), ErrorKind::kConflict);
  EXPECT_EQ(Names(dir / "s").size(), 1u);
  ASSERT_TRUE(gen.Start({"t", 0, 1, 2, WriteMode::kInPlace}).ok());  // a new job may start
  ASSERT_TRUE(test::WaitFor([&] { return Finished(gen); }, std::chrono::seconds(10)));
  EXPECT_EQ(gen.Snapshot().files_written, 2u);
}

TEST(GeneratorStateTest, UnwritableOutputFailsTheStart) {
  test::TempDir dir;
  test::WriteFile(dir / "file", "x");
  SimulatedClock clock;
  Generator gen(dir / "file", clock);  // a regular file where the output directory should be
  EXPECT_FALSE(gen.Start({"s", 0, 1, 1, WriteMode::kInPlace}).ok());
  EXPECT_EQ(gen.Snapshot().state, GeneratorState::kIdle);
}

}  // namespace
}  // namespace nbu::testgen
