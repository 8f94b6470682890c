#include "util/clock.h"

#include "support/process.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace nbu {
namespace {

using namespace std::chrono_literals;

TEST(BackoffTest, DoublesWithJitterAndStopsAtTheCap) {
  EXPECT_EQ(ExponentialBackoff(1, 100ms, 10s, 0.0), 80ms);
  EXPECT_EQ(ExponentialBackoff(1, 100ms, 10s, 1.0), 130ms);
  EXPECT_EQ(ExponentialBackoff(3, 100ms, 10s, 0.0), 320ms);
  EXPECT_EQ(ExponentialBackoff(0, 100ms, 10s, 0.0), 80ms);  // attempts count from 1
  EXPECT_EQ(ExponentialBackoff(9, 100ms, 10s, 0.5), 10s);
  EXPECT_EQ(ExponentialBackoff(1000, 100ms, 10s, 0.5), 10s);  // no overflow
}

TEST(SimulatedClockTest, AutoAdvanceRecordsSleeps) {
  SimulatedClock clock;
  const MonoTime t0 = clock.Now();
  EXPECT_TRUE(clock.SleepFor(5s, {}));
  EXPECT_EQ(clock.Now() - t0, Duration(5s));
  ASSERT_EQ(clock.SleepsForTest().size(), 1u);
}

TEST(SimulatedClockTest, ManualClockWakesSleeperOnAdvance) {
  SimulatedClock clock(/*auto_advance=*/false);
  std::atomic<bool> woke{false};
  // Its token is stopped only if the test ends early (the jthread's destructor): a failed check
  // below does not leave it asleep.
  std::jthread t([&](std::stop_token stop) {
    EXPECT_TRUE(clock.SleepFor(10s, stop));
    woke = true;
  });
  ASSERT_TRUE(test::WaitFor([&] { return !clock.SleepsForTest().empty(); }, 30s))
      << "the thread did not go to sleep";
  clock.Advance(5s);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(woke);
  clock.Advance(5s);
  EXPECT_TRUE(test::WaitFor([&] { return woke.load(); }, 30s)) << "the sleeper did not wake";
}

// The stop comes once the sleep has begun (it is recorded under the lock the sleep waits on). A
// sleep deaf to its stop fails the test after 30 s; the clock is then moved on to free it.
TEST(SimulatedClockTest, StopInterruptsSleep) {
  SimulatedClock clock(/*auto_advance=*/false);
  std::stop_source stop;
  std::atomic<int> result{-1};
  std::thread t([&] { result = clock.SleepFor(1h, stop.get_token()) ? 1 : 0; });
  ASSERT_TRUE(test::WaitFor([&] { return !clock.SleepsForTest().empty(); }, 30s));
  stop.request_stop();
  const bool woke = test::WaitFor([&] { return result.load() != -1; }, 30s);
  if (!woke) clock.Advance(1h);
  t.join();
  EXPECT_TRUE(woke) << "the stop did not end the sleep";
  EXPECT_EQ(result.load(), 0) << "a stopped sleep returns false";
}

// A sleep deaf to its stop returns true after 40 s.
TEST(RealClockTest, StopBeforeTheSleepEndsItAtOnce) {
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(RealClock::Instance().SleepFor(40s, stop.get_token()));
}

// The real clock shows no sign of having begun to sleep, so the stop comes 200 ms after the
// thread is about to: a stop that comes sooner still passes, through the path of the test above.
// The sleep is 40 s, so a sleep deaf to its stop fails the 30 s wait and then ends by itself.
TEST(RealClockTest, StopDuringTheSleepEndsIt) {
  std::stop_source stop;
  std::atomic<bool> about_to_sleep{false};
  std::atomic<int> result{-1};
  std::thread t([&] {
    about_to_sleep = true;
    result = RealClock::Instance().SleepFor(40s, stop.get_token()) ? 1 : 0;
  });
  ASSERT_TRUE(test::WaitFor([&] { return about_to_sleep.load(); }, 30s));
  std::this_thread::sleep_for(200ms);
  stop.request_stop();
  EXPECT_TRUE(test::WaitFor([&] { return result.load() != -1; }, 30s))
      << "the stop did not end the sleep";
  t.join();
  EXPECT_EQ(result.load(), 0) << "a stopped sleep returns false";
}

}  // namespace
}  // namespace nbu
