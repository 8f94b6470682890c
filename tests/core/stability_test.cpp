#include "core/stability.h"

#include <gtest/gtest.h>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;

fs::FileStat St(uint64_t size, int64_t mtime, uint64_t ino = 1) {
  fs::FileStat s;
  s.size = size;
  s.mtime_ns = mtime;
  s.ino = ino;
  return s;
}

class StabilityTest : public ::testing::Test {
 protected:
  bool Scan(const std::string& rel, const fs::FileStat& st) {
    tracker.BeginScan();
    const bool ready = tracker.Observe(rel, st, clock.Now());
    tracker.EndScan();
    return ready;
  }
  SimulatedClock clock{false};
  StabilityTracker tracker{5s};
};

TEST_F(StabilityTest, ReadyOnlyAfterTwoEqualScansAndMinimumAge) {
  EXPECT_FALSE(Scan("a", St(10, 100)));  // first sight
  clock.Advance(2s);
  EXPECT_FALSE(Scan("a", St(10, 100)));  // equal, but only 2 s old
  clock.Advance(3s);
  EXPECT_TRUE(Scan("a", St(10, 100)));  // equal and 5 s old
  clock.Advance(2s);
  EXPECT_FALSE(Scan("a", St(10, 100)));  // already queued: reported once
}

TEST_F(StabilityTest, AnyChangeRestartsTheClock) {
  EXPECT_FALSE(Scan("a", St(10, 100)));
  clock.Advance(10s);
  EXPECT_FALSE(Scan("a", St(20, 100)));  // grew
  clock.Advance(10s);
  EXPECT_FALSE(Scan("a", St(20, 200, 1) /* mtime moved */));
  clock.Advance(10s);
  EXPECT_FALSE(Scan("a", St(20, 200, 2) /* replaced: new inode */));
  clock.Advance(4s);
  EXPECT_FALSE(Scan("a", St(20, 200, 2)));
  clock.Advance(1s);
  EXPECT_TRUE(Scan("a", St(20, 200, 2)));
}

TEST_F(StabilityTest, OldMtimeDoesNotMakeAFileReady) {
  // The NFS server's clock may be far behind: a file with an ancient mtime is still measured on
  // our own clock from when we first saw it.
  EXPECT_FALSE(Scan("a", St(10, 1)));
  EXPECT_FALSE(Scan("a", St(10, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(10, 1)));
}

TEST_F(StabilityTest, ZeroMinimumAgeStillNeedsTwoScans) {
  StabilityTracker t(0s);
  t.BeginScan();
  EXPECT_FALSE(t.Observe("a", St(0, 1), clock.Now()));
  t.EndScan();
  t.BeginScan();
  EXPECT_TRUE(t.Observe("a", St(0, 1), clock.Now()));
  t.EndScan();
}

TEST_F(StabilityTest, VanishedFilesAreForgottenAndQueuedOnesKeptWithoutAStat) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  tracker.BeginScan();
  EXPECT_TRUE(tracker.SkipStat("a", clock.Now()));  // queued: kept alive without a stat
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 1u);
  tracker.BeginScan();  // "a" not listed any more: claimed
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 0u);
  // A new file under the same name starts from scratch.
  EXPECT_FALSE(Scan("a", St(1, 1)));
}

TEST_F(StabilityTest, ForgetLetsASameNamedFileBeQueuedAgain) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  tracker.Forget("a");
  EXPECT_FALSE(Scan("a", St(2, 2, 9)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(2, 2, 9)));
}

TEST_F(StabilityTest, SummaryGivesOldestPendingAndNextDue) {
  tracker.BeginScan();
  const auto empty = tracker.EndScan();
  EXPECT_FALSE(empty.oldest_pending);
  EXPECT_FALSE(empty.next_due);
  Scan("a", St(1, 1));
  const MonoTime t = clock.Now();
  clock.Advance(3s);
  tracker.BeginScan();
  tracker.Observe("a", St(1, 1), clock.Now());
  tracker.Observe("b", St(1, 1), clock.Now());
  const auto first = tracker.EndScan();
  EXPECT_EQ(*first.oldest_pending, t);
  EXPECT_EQ(*first.next_due, t + 5s);  // "a" comes of age first
  clock.Advance(2s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now()));  // queued: no longer due
  EXPECT_FALSE(tracker.Observe("b", St(1, 1), clock.Now()));
  const auto second = tracker.EndScan();
  EXPECT_EQ(*second.oldest_pending, t);
  EXPECT_EQ(*second.next_due, t + 3s + 5s);  // "b"
}

}  // namespace
}  // namespace nbu::core
