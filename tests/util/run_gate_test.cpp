#include "util/run_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

namespace nbu {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kLong = 60s;  // longer than any test waits

// Polls `done` for up to 10 s: the threads under test signal through the gate's counters.
template <typename F>
bool WaitFor(F done) {
  for (int i = 0; i < 1000 && !done(); ++i) std::this_thread::sleep_for(10ms);
  return done();
}

TEST(RunGateTest, SideBySideRunsShareTheGate) {
  RunGate gate;
  std::stop_source stop;
  RunGate::Pass a(gate, false, stop.get_token(), kLong);
  RunGate::Pass b(gate, false, stop.get_token(), kLong);
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_EQ(gate.side_by_side(), 2);
}

// A lone run waits for the runs inside, keeps new ones out while it waits (else a steady stream
// of them would starve it), and runs with nothing beside it.
TEST(RunGateTest, ALoneRunWaitsForTheOthersAndKeepsNewOnesOut) {
  RunGate gate;
  std::stop_source stop;
  std::atomic<int> inside{0};
  std::atomic<int> most_beside_alone{-1};
  std::atomic<bool> alone_done{false};
  auto first = std::make_unique<RunGate::Pass>(gate, false, stop.get_token(), kLong);
  std::thread alone([&] {
    RunGate::Pass p(gate, true, stop.get_token(), kLong);
    ASSERT_TRUE(p);
    most_beside_alone = inside.load();
    std::this_thread::sleep_for(50ms);
    most_beside_alone = std::max(most_beside_alone.load(), inside.load());
    alone_done = true;
  });
  ASSERT_TRUE(WaitFor([&] { return gate.alone_waiting() == 1; }));
  std::thread later([&] {
    RunGate::Pass p(gate, false, stop.get_token(), kLong);
    ASSERT_TRUE(p);
    EXPECT_TRUE(alone_done) << "a run that came after the lone one waited for it";
    ++inside;
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(gate.side_by_side(), 1) << "the later run is held while the lone one waits";
  EXPECT_FALSE(alone_done);
  first.reset();
  alone.join();
  later.join();
  EXPECT_EQ(most_beside_alone, 0);
  EXPECT_EQ(gate.side_by_side(), 0);
}

// A stop ends every wait with nothing held, and lets the runs held back by a lone one go on.
TEST(RunGateTest, AStopEndsTheWaitsWithNothingHeld) {
  RunGate gate;
  std::stop_source stop;
  std::stop_source other;
  auto first = std::make_unique<RunGate::Pass>(gate, false, other.get_token(), kLong);
  std::atomic<int> refused{0};
  std::thread alone([&] {
    RunGate::Pass p(gate, true, stop.get_token(), kLong);
    if (!p) ++refused;
  });
  ASSERT_TRUE(WaitFor([&] { return gate.alone_waiting() == 1; }));
  std::atomic<bool> entered{false};
  std::thread later([&] {
    RunGate::Pass p(gate, false, other.get_token(), kLong);
    entered = static_cast<bool>(p);
  });
  stop.request_stop();
  alone.join();
  later.join();
  EXPECT_EQ(refused, 1);
  EXPECT_TRUE(entered) << "held back by the lone run only while it waited";
  first.reset();
  EXPECT_EQ(gate.side_by_side(), 0);
  EXPECT_EQ(gate.alone_waiting(), 0);
  RunGate::Pass after(gate, true, other.get_token(), kLong);
  EXPECT_TRUE(after) << "nothing left held";
}

// Many threads, some alone: a lone run never has another run beside it (TSan checks the rest).
TEST(RunGateTest, NoRunIsEverBesideALoneOne) {
  RunGate gate;
  std::stop_source stop;
  std::atomic<int> side{0};
  std::atomic<int> alone{0};
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const bool lone = (i + t) % 7 == 0;
        RunGate::Pass p(gate, lone, stop.get_token(), kLong);
        ASSERT_TRUE(p);
        if (lone) {
          if (++alone != 1 || side.load() != 0) ++violations;
          std::this_thread::yield();
          --alone;
        } else {
          ++side;
          if (alone.load() != 0) ++violations;
          std::this_thread::yield();
          --side;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(violations, 0);
}

// A run inside that never ends does not hold a lone one, nor those behind it, for ever: past its
// limit the lone run goes in beside it.
TEST(RunGateTest, ALoneWaitPastItsLimitGoesInBeside) {
  RunGate gate;
  std::stop_source stop;
  RunGate::Pass stuck(gate, false, stop.get_token(), kLong);
  RunGate::Pass lone(gate, true, stop.get_token(), 100ms);
  EXPECT_TRUE(lone);
  EXPECT_FALSE(lone.alone());
  EXPECT_EQ(gate.side_by_side(), 2);
  EXPECT_EQ(gate.alone_waiting(), 0);
}

// Behind another lone run (a suspect's first attempt, which ends) the limit starts again: the
// run stays alone, so suspects that come together never go in beside the others.
TEST(RunGateTest, ALoneWaitBehindAnotherLoneRunStaysAlone) {
  RunGate gate;
  std::stop_source stop;
  std::optional<RunGate::Pass> first;
  first.emplace(gate, true, stop.get_token(), kLong);
  ASSERT_TRUE(first->alone());
  std::optional<RunGate::Pass> second;
  std::thread waiter([&] { second.emplace(gate, true, stop.get_token(), 50ms); });
  std::this_thread::sleep_for(300ms);  // six of its limits
  EXPECT_EQ(gate.alone_waiting(), 1) << "still waiting to run alone";
  EXPECT_EQ(gate.side_by_side(), 0);
  first.reset();
  waiter.join();
  EXPECT_TRUE(second->alone());
}

// A lone run ahead that shares (its first attempt over, its retries or completion to go) starts
// the wait behind it again: its side-by-side remainder is not what the waiting suspect had been
// waiting on, and going in beside it would let the healthy files in beside the suspect.
TEST(RunGateTest, ALoneWaitStartsAgainWhenTheLoneRunAheadShares) {
  RunGate gate;
  std::stop_source stop;
  std::optional<RunGate::Pass> first;
  first.emplace(gate, true, stop.get_token(), kLong);
  std::optional<RunGate::Pass> second;
  std::thread waiter([&] { second.emplace(gate, true, stop.get_token(), 1000ms); });
  ASSERT_TRUE(WaitFor([&] { return gate.alone_waiting() == 1; }));
  std::this_thread::sleep_for(900ms);
  first->Share();                      // 900 ms into the second's wait of 1000
  std::this_thread::sleep_for(300ms);  // past the 1000 ms counted from its start
  EXPECT_EQ(gate.alone_waiting(), 1) << "still waiting to run alone";
  first.reset();
  waiter.join();
  EXPECT_TRUE(second->alone());
}

// A lone run is alone for its limit at most: then the runs held back go in beside it (a
// suspect's first attempt may be a multi-hour upload). Its Share and its end settle the count.
TEST(RunGateTest, ALoneRunPastItsLimitHasTheOthersBesideIt) {
  for (const bool share : {false, true}) {
    RunGate gate;
    std::stop_source stop;
    std::optional<RunGate::Pass> lone;
    lone.emplace(gate, true, stop.get_token(), 1000ms);
    ASSERT_TRUE(lone->alone());
    std::atomic<bool> entered{false};
    std::optional<RunGate::Pass> later;
    std::thread waiter([&] {
      later.emplace(gate, false, stop.get_token(), kLong);
      entered = true;
    });
    std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(entered) << "held back while the lone run is within its limit";
    const bool in_beside = WaitFor([&] { return entered.load(); });
    EXPECT_TRUE(in_beside) << "still held back past the lone run's limit";
    if (!in_beside) lone.reset();  // lets it in, to end the test
    waiter.join();
    if (!in_beside) continue;
    ASSERT_TRUE(*later);
    EXPECT_EQ(gate.side_by_side(), 2) << "the lone run counts beside it";
    if (share) {
      lone->Share();
      EXPECT_EQ(gate.side_by_side(), 2);
    }
    lone.reset();
    EXPECT_EQ(gate.side_by_side(), 1);
    later.reset();
    EXPECT_EQ(gate.side_by_side(), 0);
    RunGate::Pass next(gate, true, stop.get_token(), kLong);
    EXPECT_TRUE(next.alone()) << "nothing left held";
  }
}

// Closed (a service shutting down), the gate ends every wait with nothing held, and a run that
// would wait gets nothing; the runs inside go on and leave as ever.
TEST(RunGateTest, ClosedItBeginsNoRunAndEndsEveryWait) {
  RunGate gate;
  std::stop_source stop;
  std::optional<RunGate::Pass> inside;
  inside.emplace(gate, false, stop.get_token(), kLong);
  std::atomic<int> refused{0};
  std::thread lone([&] {
    RunGate::Pass p(gate, true, stop.get_token(), kLong);
    if (!p) ++refused;
  });
  ASSERT_TRUE(WaitFor([&] { return gate.alone_waiting() == 1; }));
  std::thread behind([&] {
    RunGate::Pass p(gate, false, stop.get_token(), kLong);
    if (!p) ++refused;
  });
  std::this_thread::sleep_for(50ms);
  gate.Close();
  EXPECT_TRUE(WaitFor([&] { return refused.load() == 2; })) << "the waits went on";
  stop.request_stop();  // ends them if they did, to end the test
  lone.join();
  behind.join();
  std::stop_source fresh;
  EXPECT_FALSE(RunGate::Pass(gate, true, fresh.get_token(), kLong)) << "a run is inside";
  EXPECT_EQ(gate.alone_waiting(), 0);
  EXPECT_EQ(gate.side_by_side(), 1);
  inside.reset();
  EXPECT_EQ(gate.side_by_side(), 0);
}

// Past its limit a lone run goes in beside the runs inside even while other lone runs wait: a
// stream of them must not hold it (and the replica's intake) for ever.
TEST(RunGateTest, ALoneRunPastItsLimitDoesNotWaitForOtherLoneOnes) {
  RunGate gate;
  std::stop_source stop;
  RunGate::Pass stuck(gate, false, stop.get_token(), kLong);
  std::optional<RunGate::Pass> patient;
  std::thread waiter([&] { patient.emplace(gate, true, stop.get_token(), kLong); });
  ASSERT_TRUE(WaitFor([&] { return gate.alone_waiting() == 1; }));
  RunGate::Pass hasty(gate, true, stop.get_token(), 100ms);
  EXPECT_TRUE(hasty);
  EXPECT_FALSE(hasty.alone());
  EXPECT_EQ(gate.side_by_side(), 2);
  EXPECT_EQ(gate.alone_waiting(), 1) << "the other still waits to run alone";
  stop.request_stop();
  waiter.join();
  EXPECT_FALSE(*patient);
}

// Shared, a lone pass lets in the runs it held back, and stays held until it ends.
TEST(RunGateTest, ALonePassSharedLetsTheOthersIn) {
  RunGate gate;
  std::stop_source stop;
  std::optional<RunGate::Pass> lone;
  lone.emplace(gate, true, stop.get_token(), kLong);
  ASSERT_TRUE(lone->alone());
  std::atomic<bool> entered{false};
  std::thread later([&] {
    RunGate::Pass p(gate, false, stop.get_token(), kLong);
    entered = static_cast<bool>(p);
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(entered) << "held back while the lone run is alone";
  lone->Share();
  EXPECT_FALSE(lone->alone());
  later.join();
  EXPECT_TRUE(entered);
  EXPECT_EQ(gate.side_by_side(), 1) << "the shared pass is still held";
  std::optional<RunGate::Pass> next;
  std::thread another([&] { next.emplace(gate, true, stop.get_token(), kLong); });
  ASSERT_TRUE(WaitFor([&] { return gate.alone_waiting() == 1; }));
  lone.reset();
  another.join();
  EXPECT_TRUE(next->alone()) << "alone once the shared pass ended";
}

}  // namespace
}  // namespace nbu
