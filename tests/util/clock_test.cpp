#include "util/clock.h"

#include <gtest/gtest.h>

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
  std::thread t([&] {
    EXPECT_TRUE(clock.SleepFor(10s, {}));
    woke = true;
  });
  while (clock.SleepsForTest().empty()) std::this_thread::sleep_for(1ms);
  clock.Advance(5s);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(woke);
  clock.Advance(5s);
  t.join();
  EXPECT_TRUE(woke);
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
