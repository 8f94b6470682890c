#include "azure/retry_policy.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace nbu::azure {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

Result<HttpResponse> Resp(long status, HeaderMap headers = {}) {
  HttpResponse r;
  r.status = status;
  r.headers = std::move(headers);
  return r;
}

TEST(RetryPolicyTest, RetryableStatuses) {
  for (long s : {408, 429, 500, 502, 503, 504}) EXPECT_TRUE(IsRetryableStatus(s)) << s;
  for (long s : {200, 201, 202, 304, 400, 401, 403, 404, 409, 412, 413, 501, 505}) {
    EXPECT_FALSE(IsRetryableStatus(s)) << s;
  }
}

TEST(RetryPolicyTest, DecidesByOutcome) {
  const RetryOptions o;
  EXPECT_TRUE(RetryDelay(o, 1, Resp(503), 0.5));
  EXPECT_FALSE(RetryDelay(o, 1, Resp(400), 0.5));
  EXPECT_FALSE(RetryDelay(o, 1, Resp(404), 0.5));
  EXPECT_FALSE(RetryDelay(o, 1, Resp(201), 0.5));
  EXPECT_TRUE(RetryDelay(o, 1, Result<HttpResponse>(Status(ErrorKind::kTransient, "reset")), 0.5));
  EXPECT_FALSE(
      RetryDelay(o, 1, Result<HttpResponse>(Status(ErrorKind::kPermanent, "bad url")), 0.5));
}

TEST(RetryPolicyTest, StopsAfterMaxAttempts) {
  RetryOptions o;
  o.max_attempts = 3;
  EXPECT_TRUE(RetryDelay(o, 1, Resp(500), 0.0));
  EXPECT_TRUE(RetryDelay(o, 2, Resp(500), 0.0));
  EXPECT_FALSE(RetryDelay(o, 3, Resp(500), 0.0));
  o.max_attempts = 1;
  EXPECT_FALSE(RetryDelay(o, 1, Resp(500), 0.0));
}

TEST(RetryPolicyTest, ExponentialBackoffWithJitterBounds) {
  RetryOptions o;
  o.max_attempts = 100;
  o.base_delay = 1000ms;
  o.max_delay = 60000ms;
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503), 0.0), 800ms);   // 1000 * 0.8
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503), 1.0), 1300ms);  // 1000 * 1.3
  EXPECT_EQ(*RetryDelay(o, 2, Resp(503), 0.0), 1600ms);
  EXPECT_EQ(*RetryDelay(o, 3, Resp(503), 0.4), 4000ms);  // 4000 * 1.0
  EXPECT_EQ(*RetryDelay(o, 4, Resp(503), 0.4), 8000ms);
  for (double j : {0.0, 0.25, 0.5, 0.75, 0.999}) {
    const milliseconds d = *RetryDelay(o, 2, Resp(500), j);
    EXPECT_GE(d, 1600ms);
    EXPECT_LE(d, 2600ms);
  }
}

TEST(RetryPolicyTest, DelayIsCapped) {
  RetryOptions o;
  o.max_attempts = 1000;
  o.base_delay = 800ms;
  o.max_delay = 5000ms;
  EXPECT_EQ(*RetryDelay(o, 10, Resp(503), 0.9), 5000ms);
  EXPECT_EQ(*RetryDelay(o, 500, Resp(503), 0.9), 5000ms);  // no overflow for huge attempts
}

TEST(RetryPolicyTest, RetryAfterHeaderForms) {
  RetryOptions o;
  o.max_delay = 60000ms;
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"retry-after", "7"}}), 0.5), 7000ms);
  EXPECT_EQ(*RetryDelay(o, 1, Resp(429, {{"retry-after-ms", "250"}}), 0.5), 250ms);
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"x-ms-retry-after-ms", "1234"}}), 0.5), 1234ms);
  // Milliseconds forms win over seconds; retry-after-ms over x-ms-retry-after-ms.
  EXPECT_EQ(*RetryDelay(o, 1,
                        Resp(503, {{"retry-after", "9"},
                                   {"retry-after-ms", "10"},
                                   {"x-ms-retry-after-ms", "20"}}),
                        0.5),
            10ms);
  EXPECT_EQ(
      *RetryDelay(o, 1, Resp(503, {{"retry-after", "9"}, {"x-ms-retry-after-ms", "20"}}), 0.5),
      20ms);
  // Server hints are capped too; "0" means "retry now".
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"retry-after", "3600"}}), 0.5), 60000ms);
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"retry-after", "0"}}), 0.5), 0ms);
  // Retry-After as an HTTP date counts from the response's Date (the server's clock).
  EXPECT_EQ(*RetryDelay(o, 1,
                        Resp(503, {{"retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"},
                                   {"date", "Wed, 21 Oct 2015 07:27:55 GMT"}}),
                        0.5),
            5000ms);
  EXPECT_EQ(*RetryDelay(o, 1,
                        Resp(503, {{"retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"},
                                   {"date", "Thu, 22 Oct 2015 07:28:00 GMT"}}),
                        0.5),
            0ms);  // already past
  // Unusable hints (a date without the response's Date, negative, junk) fall back to the
  // computed backoff.
  o.base_delay = 1000ms;
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"}}), 0.4),
            1000ms);
  EXPECT_EQ(*RetryDelay(o, 1,
                        Resp(503, {{"retry-after", "Wed, 21 Oct 2015 07:28:00 UTC"},
                                   {"date", "Wed, 21 Oct 2015 07:27:55 GMT"}}),
                        0.4),
            1000ms);
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"retry-after", "-5"}}), 0.4), 1000ms);
  EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{"retry-after-ms", "12abc"}}), 0.4), 1000ms);
  // A hint on a non-retryable status does not make it retryable.
  EXPECT_FALSE(RetryDelay(o, 1, Resp(400, {{"retry-after", "1"}}), 0.4));
}

// A number too large for 64 bits asks for a very long wait: it gets the longest one allowed, not
// the short backoff a junk header gets. And every hint, however large, stays within
// kMaxServerHint, which converts to nanoseconds without overflow.
TEST(RetryPolicyTest, AHintTooLargeToHoldIsTheLongestWait) {
  RetryOptions o;
  o.base_delay = 1000ms;
  const std::string huge = "99999999999999999999";
  for (const char* header : {"retry-after", "retry-after-ms", "x-ms-retry-after-ms"}) {
    EXPECT_EQ(*RetryDelay(o, 1, Resp(503, {{header, huge}}), 0.4), o.max_delay) << header;
    EXPECT_EQ(*ServerRetryHint(*Resp(503, {{header, huge}})), kMaxServerHint) << header;
    EXPECT_EQ(*ServerRetryHint(*Resp(503, {{header, "9223372036854775807"}})), kMaxServerHint)
        << header;
  }
  EXPECT_EQ(*ServerRetryHint(*Resp(503, {{"retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"},
                                         {"date", "Thu, 01 Jan 1970 00:00:00 GMT"}})),
            kMaxServerHint);
  static_assert(kMaxServerHint <= std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::nanoseconds::max()));
  // Still junk: a sign, a trailing letter, nothing.
  EXPECT_FALSE(ServerRetryHint(*Resp(503, {{"retry-after", "-99999999999999999999"}})));
  EXPECT_FALSE(ServerRetryHint(*Resp(503, {{"retry-after", "99999999999999999999s"}})));
  EXPECT_FALSE(ServerRetryHint(*Resp(503, {{"retry-after", ""}})));
  EXPECT_FALSE(ServerRetryHint(*Resp(503, {{"retry-after", "+5"}})));
}

TEST(RetryPolicyTest, ServerRetryHintAbsent) { EXPECT_FALSE(ServerRetryHint(*Resp(503))); }

TEST(ThrottleGateTest, WaitsUntilNotBefore) {
  SimulatedClock clock;  // auto-advance: sleeps return at once and are recorded
  ThrottleGate gate(clock, [] { return 0.5; });
  EXPECT_FALSE(gate.ThrottledNow());
  EXPECT_TRUE(gate.Wait({}));
  EXPECT_TRUE(clock.SleepsForTest().empty());
  gate.Throttle(3s);
  gate.Throttle(1s);  // a shorter delay never shortens the gate
  EXPECT_TRUE(gate.ThrottledNow());
  const MonoTime t0 = clock.Now();
  EXPECT_TRUE(gate.Wait({}));
  // Past "not before" by this caller's draw (0.5) of the spread, a quarter of the 3 s.
  EXPECT_EQ(clock.Now() - t0, Duration(3s) + Duration(375ms));
  EXPECT_FALSE(gate.ThrottledNow());
  EXPECT_TRUE(gate.Wait({}));  // open: not held again
  EXPECT_EQ(clock.Now() - t0, Duration(3s) + Duration(375ms));
}

// The spread is a quarter of the throttling delay, capped at a second.
TEST(ThrottleGateTest, TheReleaseSpreadIsAQuarterOfTheDelayAtMostASecond) {
  for (const auto& [delay, spread] :
       {std::pair{2s, Duration(500ms)}, std::pair{60s, Duration(1s)}}) {
    SimulatedClock clock;
    ThrottleGate gate(clock, [] { return 0.999; });
    gate.Throttle(delay);
    const MonoTime t0 = clock.Now();
    EXPECT_TRUE(gate.Wait({}));
    EXPECT_GT(clock.Now() - t0, Duration(delay) + spread * 99 / 100) << delay.count();
    EXPECT_LE(clock.Now() - t0, Duration(delay) + spread) << delay.count();
  }
}

// Requests held by the gate do not all go at the instant it opens: each waits until its own
// time within "not before" + the spread (here 4 s + up to 1 s), with the process's own random
// source. The clock stands still while they wait, so each one's sleep is its release time.
TEST(ThrottleGateTest, HeldRequestsAreReleasedSpreadOut) {
  SimulatedClock clock(/*auto_advance=*/false);
  ThrottleGate gate(clock);
  gate.Throttle(4s);
  constexpr size_t kWaiters = 16;
  std::atomic<size_t> passed{0};
  std::vector<std::thread> waiters;
  for (size_t i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      if (gate.Wait({})) ++passed;
    });
  }
  ASSERT_TRUE(nbu::test::WaitFor([&] { return clock.SleepsForTest().size() == kWaiters; }, 30s));
  const std::vector<Duration> sleeps = clock.SleepsForTest();
  for (const Duration d : sleeps) {
    EXPECT_GE(d, Duration(4s));
    EXPECT_LE(d, Duration(5s));
  }
  const auto [lo, hi] = std::minmax_element(sleeps.begin(), sleeps.end());
  EXPECT_LT(*lo, *hi) << "every held request released in the same instant";
  EXPECT_EQ(passed, 0u);
  clock.Advance(5s);
  for (auto& t : waiters) t.join();
  EXPECT_EQ(passed, kWaiters);
}

TEST(ThrottleGateTest, SharedAcrossThreadsAndStoppable) {
  SimulatedClock clock(/*auto_advance=*/false);
  ThrottleGate gate(clock);
  gate.Throttle(10s);
  std::atomic<int> passed{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i) {
    workers.emplace_back([&] {
      if (gate.Wait({})) ++passed;
    });
  }
  std::stop_source stop;
  std::thread stopped([&] { EXPECT_FALSE(gate.Wait(stop.get_token())); });
  ASSERT_TRUE(nbu::test::WaitFor([&] { return clock.SleepsForTest().size() >= 4; }, 30s));
  EXPECT_EQ(passed, 0);
  stop.request_stop();
  stopped.join();
  clock.Advance(10s + ThrottleGate::kMaxReleaseSpread);  // each waits its share of the spread
  for (auto& t : workers) t.join();
  EXPECT_EQ(passed, 3);
}

}  // namespace
}  // namespace nbu::azure
