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

TEST(SimulatedClockTest, StopInterruptsSleep) {
  SimulatedClock clock(/*auto_advance=*/false);
  std::stop_source stop;
  std::thread t([&] { EXPECT_FALSE(clock.SleepFor(1h, stop.get_token())); });
  stop.request_stop();
  t.join();
}

TEST(RealClockTest, StopInterruptsSleep) {
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(RealClock::Instance().SleepFor(1h, stop.get_token()));
}

}  // namespace
}  // namespace nbu
