#include "util/rate_limiter.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace nbu {
namespace {

using namespace std::chrono_literals;

// At 1 MB/s, 10 MB in 16 KiB pieces take 10 s less the 100 ms burst an idle limiter saves up,
// whoever asks: the bytes granted by any time never exceed the rate's share plus that burst.
TEST(RateLimiterTest, GrantsNoMoreThanTheRateAndOneBurst) {
  SimulatedClock clock;  // each wait moves the clock on by that wait
  RateLimiter limit(1e6, clock);
  const MonoTime t0 = clock.Now();
  uint64_t granted = 0;
  while (granted < 10'000'000) {
    ASSERT_TRUE(limit.Acquire(16384, {}));
    granted += 16384;
    const double allowed = (ToSeconds(clock.Now() - t0) + 0.1) * 1e6 + 16384;
    ASSERT_LE(static_cast<double>(granted), allowed) << ToSeconds(clock.Now() - t0);
  }
  EXPECT_NEAR(ToSeconds(clock.Now() - t0), static_cast<double>(granted) / 1e6 - 0.1, 0.02);
  // Idle for a minute: one burst goes at once, then the rate again.
  clock.Advance(60s);
  const MonoTime t1 = clock.Now();
  ASSERT_TRUE(limit.Acquire(100'000, {}));
  EXPECT_EQ(clock.Now(), t1) << "a burst's worth waits for nothing";
  ASSERT_TRUE(limit.Acquire(100'000, {}));
  EXPECT_NEAR(ToSeconds(clock.Now() - t1), 0.1, 0.001);
}

// Threads share the rate: four asking at once get a quarter each, and a stopped caller's wait
// ends at once.
TEST(RateLimiterTest, ThreadsShareTheRateAndAStopEndsTheWait) {
  RealClock& clock = RealClock::Instance();
  RateLimiter limit(1e6, clock, 0ms);
  std::vector<std::jthread> threads;
  const MonoTime t0 = clock.Now();
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) EXPECT_TRUE(limit.Acquire(10'000, {}));
    });
  }
  threads.clear();  // joined: 200 kB at 1 MB/s, no less than 0.19 s
  EXPECT_GE(clock.Now() - t0, 190ms);
  RateLimiter slow(1.0, clock, 0ms);  // a byte a second: ten take ten seconds
  std::stop_source stop;
  std::jthread stopper([&] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  EXPECT_FALSE(slow.Acquire(10, stop.get_token()));
  EXPECT_LT(clock.Now() - t0, 10s);
}

}  // namespace
}  // namespace nbu
