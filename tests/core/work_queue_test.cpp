#include "core/work_queue.h"

#include "support/process.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;

TEST(BoundedQueueTest, EveryItemDeliveredExactlyOnceUnderContention) {
  BoundedQueue<int> q(8);
  constexpr int kProducers = 4, kPerProducer = 5000;
  std::mutex mu;
  std::multiset<int> seen;
  std::vector<std::jthread> consumers;
  for (int c = 0; c < 4; ++c) {
    consumers.emplace_back([&](std::stop_token st) {
      while (auto v = q.Pop(st)) {
        std::lock_guard lock(mu);
        seen.insert(*v);
      }
    });
  }
  {
    std::vector<std::jthread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (int i = 0; i < kPerProducer; ++i) ASSERT_TRUE(q.Push(p * kPerProducer + i, {}));
      });
    }
  }
  q.Close();
  consumers.clear();
  ASSERT_EQ(seen.size(), static_cast<size_t>(kProducers * kPerProducer));
  for (int i = 0; i < kProducers * kPerProducer; ++i) EXPECT_EQ(seen.count(i), 1u) << i;
}

TEST(BoundedQueueTest, PushWaitsWhenFullAndStopsOnRequest) {
  BoundedQueue<int> q(1);
  ASSERT_TRUE(q.Push(1, {}));
  std::stop_source stop;
  std::atomic<bool> returned{false};
  std::thread t([&] {
    EXPECT_FALSE(q.Push(2, stop.get_token()));  // full: waits, then gives up on stop
    returned = true;
  });
  // Waiting for room, not returned: the stop below is what ends it (stopped whatever this finds).
  EXPECT_TRUE(test::WaitFor([&] { return q.pushes_waiting() == 1; }, 30s))
      << "a push into the full queue did not wait";
  EXPECT_FALSE(returned);
  stop.request_stop();
  t.join();
  EXPECT_EQ(q.size(), 1u);
}

TEST(BoundedQueueTest, PushIntoAFullQueueResumesOnlyOnceItDrainedToHalf) {
  BoundedQueue<int> q(4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q.Push(i, {}));
  std::atomic<bool> pushed{false};
  std::thread t([&] {
    EXPECT_TRUE(q.Push(4, {}));
    pushed = true;
  });
  for (int i = 0; i < 5000 && q.pushes_waiting() == 0; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(q.pushes_waiting(), 1u);
  EXPECT_TRUE(q.HoldsPushes());
  ASSERT_EQ(q.Pop({}), 0);  // 3 left: room for one, but the waiting push does not wake for it
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(pushed);
  EXPECT_EQ(q.size(), 3u);
  EXPECT_TRUE(q.HoldsPushes()) << "below its bound, but the push still waits";
  ASSERT_EQ(q.Pop({}), 1);  // 2 left: half the capacity
  t.join();
  EXPECT_TRUE(pushed);
  EXPECT_EQ(q.pushes_waiting(), 0u);
  EXPECT_FALSE(q.HoldsPushes());
  EXPECT_TRUE(q.Push(5, {}));  // not full: no wait
  std::vector<int> rest;
  while (q.size() > 0) rest.push_back(*q.Pop({}));
  EXPECT_EQ(rest, (std::vector<int>{2, 3, 4, 5}));
}

TEST(BoundedQueueTest, TryPushNeverWaits) {
  BoundedQueue<int> q(1);
  EXPECT_TRUE(q.TryPush(1));
  EXPECT_FALSE(q.TryPush(2));  // full: refused at once
  EXPECT_EQ(q.Pop({}), 1);
  EXPECT_TRUE(q.TryPush(3));
  q.Close();
  EXPECT_FALSE(q.TryPush(4));
  EXPECT_EQ(q.Pop({}), 3);
}

TEST(BoundedQueueTest, ClearFreesRoomAndCloseDrains) {
  BoundedQueue<int> q(2);
  ASSERT_TRUE(q.Push(1, {}));
  ASSERT_TRUE(q.Push(2, {}));
  EXPECT_EQ(q.Clear().size(), 2u);
  ASSERT_TRUE(q.Push(3, {}));
  q.Close();
  EXPECT_FALSE(q.Push(4, {}));
  EXPECT_EQ(q.Pop({}), 3);
  EXPECT_EQ(q.Pop({}), std::nullopt);
}

}  // namespace
}  // namespace nbu::core
