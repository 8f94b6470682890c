// Many threads on one TokenCredential: one fetch serves all, a refresh in flight does not block
// holders of a still-valid token, and a burst of 401s for the same token causes one refresh.
#include "fake_token_credential.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <thread>
#include <vector>

namespace nbu::azure {
namespace {

using namespace std::chrono_literals;
using test::FakeTokenCredential;

constexpr int kThreads = 16;

Result<std::string> Authorize(TokenCredential& c) {
  HttpRequest r;
  r.url = "https://acct.blob.core.windows.net/c/b";
  Status s = c.Authorize(r, "acct", false);
  if (!s.ok()) return s;
  return *r.FindHeader("Authorization");
}

// Waits (at most 30 s) until each of the kThreads threads is parked while the fetch is held:
// waiting for another thread's fetch, or (were fetches not shared) blocked in a fetch of its own.
// Released only then, no thread can arrive after the fetch ended. Returns the threads waiting.
int WaitAllParked(const FakeTokenCredential& cred) {
  // While the fetch is held neither count goes down, so a sum seen once stays.
  EXPECT_TRUE(
      nbu::test::WaitFor([&] { return cred.WaitersForTest() + cred.Blocked() == kThreads; }, 30s))
      << cred.WaitersForTest() << " waiting, " << cred.Blocked() << " fetching";
  return cred.WaitersForTest();
}

TEST(TokenConcurrencyTest, ConcurrentFirstCallsShareOneFetch) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock);
  cred.Hold();
  std::vector<std::string> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { got[static_cast<size_t>(i)] = *Authorize(cred); });
  }
  ASSERT_TRUE(cred.WaitBlocked());
  const int waiting = WaitAllParked(cred);
  cred.Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(waiting, kThreads - 1) << "threads behind the one fetch";
  EXPECT_EQ(cred.FetchCountForTest(), 1u);
  for (const auto& g : got) EXPECT_EQ(g, "Bearer token-1");
}

TEST(TokenConcurrencyTest, RefreshInFlightDoesNotBlockValidTokenUsers) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  ASSERT_EQ(*Authorize(cred), "Bearer token-1");
  clock.Advance(59min);  // refresh due, token still valid
  cred.Hold();
  std::string refresher;
  std::thread t([&] { refresher = *Authorize(cred); });
  ASSERT_TRUE(cred.WaitBlocked());
  std::vector<std::thread> users;
  std::atomic<int> old_tokens{0};
  std::atomic<int> finished{0};
  for (int i = 0; i < kThreads; ++i) {
    users.emplace_back([&] {
      if (*Authorize(cred) == "Bearer token-1") ++old_tokens;
      ++finished;
    });
  }
  // They finish while the fetch is still held. Users that wait for it instead fail the check,
  // and the release then frees them.
  nbu::test::WaitFor([&] { return finished.load() == kThreads; }, 30s);
  const int finished_while_held = finished.load();
  cred.Release();
  for (auto& u : users) u.join();
  t.join();
  EXPECT_EQ(finished_while_held, kThreads) << "users finished while the fetch was held";
  EXPECT_EQ(old_tokens.load(), kThreads);
  EXPECT_EQ(refresher, "Bearer token-2");
  EXPECT_EQ(cred.FetchCountForTest(), 2u);
}

// Every thread sent token-1 and got 401. The refresh is held until each thread is parked behind
// it (waiting for it, or, were fetches not shared, blocked in a fetch of its own), so no thread
// can come late and find token-2 already cached: one fetch serves the whole burst only because
// the others waited for it.
TEST(TokenConcurrencyTest, BurstOf401sForOneTokenRefreshesOnce) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  ASSERT_EQ(*Authorize(cred), "Bearer token-1");
  cred.Hold();  // the refresh the burst causes
  std::barrier sync(kThreads);
  std::vector<std::string> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      EXPECT_EQ(*Authorize(cred), "Bearer token-1");  // cached: no fetch, not held
      sync.arrive_and_wait();                         // every thread "sent" token-1 and got 401
      cred.Invalidate();
      got[static_cast<size_t>(i)] = *Authorize(cred);
    });
  }
  ASSERT_TRUE(cred.WaitBlocked());
  const int waiting = WaitAllParked(cred);
  cred.Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(waiting, kThreads - 1) << "threads behind the one refresh";
  EXPECT_EQ(cred.FetchCountForTest(), 2u);
  for (const auto& g : got) EXPECT_EQ(g, "Bearer token-2");
}

TEST(TokenConcurrencyTest, FailedFetchIsSharedByWaiters) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock);
  cred.FailNext(true);
  cred.Hold();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      if (!Authorize(cred).ok()) ++failures;
    });
  }
  ASSERT_TRUE(cred.WaitBlocked());
  const int waiting = WaitAllParked(cred);
  cred.Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), kThreads);
  // Every thread arrived while the fetch ran: they share its error instead of fetching again.
  EXPECT_EQ(waiting, kThreads - 1) << "threads behind the one fetch";
  EXPECT_EQ(cred.FetchCountForTest(), 1u);
}

}  // namespace
}  // namespace nbu::azure
