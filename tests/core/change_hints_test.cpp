#include "core/change_hints.h"

#include "support/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;
using nbu::test::TempDir;
using nbu::test::WriteFile;

// Wait() bounded in time: false when no change came within `limit`.
bool WaitAtMost(ChangeHints& hints, std::chrono::milliseconds limit) {
  return nbu::test::CallWithDeadline(limit, [&](std::stop_token stop) { return hints.Wait(stop); });
}

// One scan that lists `dirs`.
void Scan(ChangeHints& hints, std::initializer_list<std::string> dirs) {
  hints.BeginScan();
  for (const auto& d : dirs) hints.Watch(d);
  hints.EndScan();
}

class ChangeHintsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(hints.available()) << hints.error(); }
  std::string Dir(const std::string& name) {
    const std::string p = dir.path() + "/" + name;
    ::mkdir(p.c_str(), 0700);
    return p;
  }
  TempDir dir;
  ChangeHints hints;
};

TEST_F(ChangeHintsTest, AFileWrittenOrRenamedIntoAWatchedDirectoryIsAChange) {
  const std::string a = Dir("a");
  Scan(hints, {a});
  EXPECT_EQ(hints.stats().watches, 1U);
  EXPECT_FALSE(WaitAtMost(hints, 200ms));  // nothing happened yet
  WriteFile(a + "/f", "x");
  EXPECT_TRUE(WaitAtMost(hints, 30s));
  WriteFile(dir.path() + "/outside", "y");
  ASSERT_EQ(std::rename((dir.path() + "/outside").c_str(), (a + "/g").c_str()), 0);
  EXPECT_TRUE(WaitAtMost(hints, 30s));
  // The files are named, by directory, once.
  using Names = ChangeHints::Names;
  EXPECT_EQ(hints.TakeChangedFiles(), (ChangeHints::ChangedFiles{{a, Names{"f", "g"}}}));
  EXPECT_TRUE(hints.TakeChangedFiles().empty());
}

TEST_F(ChangeHintsTest, ANewFileIsAChangeOnlyOnceClosedButANewDirectoryAtOnce) {
  const std::string a = Dir("a");
  Scan(hints, {a});
  const int fd = ::open((a + "/f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(WaitAtMost(hints, 300ms));  // a scan now would see the file before its bytes
  ASSERT_EQ(::write(fd, "xyz", 3), 3);
  ::close(fd);
  EXPECT_TRUE(WaitAtMost(hints, 30s));
  Dir("a/sub");  // it must be scanned to be watched itself
  EXPECT_TRUE(WaitAtMost(hints, 30s));
  // Only the file is named for a closer look.
  EXPECT_EQ(hints.TakeChangedFiles(), (ChangeHints::ChangedFiles{{a, ChangeHints::Names{"f"}}}));
}

TEST_F(ChangeHintsTest, ADirectoryAScanNoLongerListsIsNoLongerWatched) {
  const std::string a = Dir("a");
  const std::string b = Dir("b");
  Scan(hints, {a, b});
  EXPECT_EQ(hints.stats().watches, 2U);
  Scan(hints, {a});
  EXPECT_EQ(hints.stats().watches, 1U);
  WriteFile(b + "/f", "x");
  EXPECT_FALSE(WaitAtMost(hints, 300ms));
  WriteFile(a + "/f", "x");
  EXPECT_TRUE(WaitAtMost(hints, 30s));
}

TEST_F(ChangeHintsTest, ADirectoryRemovedAndMadeAgainIsWatchedAgain) {
  std::string d = Dir("d");
  Scan(hints, {d});
  ASSERT_EQ(::rmdir(d.c_str()), 0);
  // The kernel ends the watch; Wait reads that (it is not a change in the directory).
  EXPECT_FALSE(WaitAtMost(hints, 300ms));
  d = Dir("d");
  Scan(hints, {d});
  WriteFile(d + "/f", "x");
  EXPECT_TRUE(WaitAtMost(hints, 30s));
}

TEST_F(ChangeHintsTest, ADirectoryRenamedWithinTheTreeIsWatchedUnderItsNewName) {
  const std::string a = Dir("a");
  Scan(hints, {a});
  const std::string b = dir.path() + "/b";
  ASSERT_EQ(std::rename(a.c_str(), b.c_str()), 0);
  // The next scan lists the same directory as b: dropping a's watch drops b's too (one inode),
  // and the scan after it watches b afresh.
  Scan(hints, {b});
  EXPECT_EQ(hints.stats().watches, 0U);
  Scan(hints, {b});
  EXPECT_EQ(hints.stats().watches, 1U);
  WriteFile(b + "/f", "x");
  EXPECT_TRUE(WaitAtMost(hints, 30s));
}

TEST_F(ChangeHintsTest, DirectoriesBeyondTheCapAreLeftToThePoll) {
  ChangeHints capped(1);
  const std::string a = Dir("a");
  const std::string b = Dir("b");
  Scan(capped, {a, b});
  EXPECT_EQ(capped.stats().watches, 1U);
  EXPECT_TRUE(capped.stats().limited);
  WriteFile(b + "/f", "x");
  EXPECT_FALSE(WaitAtMost(capped, 300ms));
  Scan(capped, {a});
  EXPECT_FALSE(capped.stats().limited);
}

TEST_F(ChangeHintsTest, AStopEndsTheWait) {
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(hints.Wait(stop.get_token()));
  // The stop is not left behind for the next wait.
  const std::string a = Dir("a");
  Scan(hints, {a});
  WriteFile(a + "/f", "x");
  EXPECT_TRUE(WaitAtMost(hints, 30s));
}

}  // namespace
}  // namespace nbu::core
