// TokenCredential's cache on a SimulatedClock: reuse, refresh ahead of expiry (2 min margin,
// half-life for long and short lifetimes), failed refreshes, Invalidate after 401, and the
// https-only rule of Authorize.
#include "fake_token_credential.h"
#include "support/process.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

namespace nbu::azure {
namespace {

using namespace std::chrono_literals;
using test::FakeTokenCredential;

HttpRequest Req(std::string url = "https://acct.blob.core.windows.net/c/b") {
  HttpRequest r;
  r.url = std::move(url);
  r.SetHeader("x-ms-version", "2025-11-05");
  return r;
}

std::string Bearer(TokenCredential& c) {
  HttpRequest r = Req();
  Status s = c.Authorize(r, "acct", false);
  EXPECT_TRUE(s.ok()) << s.ToString();
  const std::string* h = r.FindHeader("Authorization");
  return h ? *h : "";
}

TEST(TokenCacheTest, ReusesTokenUntilTwoMinutesBeforeExpiry) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  clock.Advance(57min);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  EXPECT_EQ(cred.FetchCountForTest(), 1u);
  clock.Advance(1min + 1s);  // 1:59 left
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  EXPECT_EQ(cred.FetchCountForTest(), 2u);
}

TEST(TokenCacheTest, LongLivedTokensRefreshAtHalfLife) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 24h);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  clock.Advance(12h - 1s);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  clock.Advance(2s);
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
}

TEST(TokenCacheTest, ShortLivedTokensAreReusedUntilHalfLife) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 10s);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  clock.Advance(4s);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  clock.Advance(2s);
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  EXPECT_EQ(cred.FetchCountForTest(), 2u);
}

// The issuer's refresh hint (refresh_in) brings a refresh forward, within reason: a hint of 0 (a
// stand-in's, a proxy's) does not fetch a token for every request, and one past the token's
// life does not hold the refresh back to its expiry.
TEST(TokenCacheTest, TheIssuersRefreshHintIsTakenWithinReason) {
  struct Case {
    std::chrono::seconds lifetime, hint, kept, refreshed;  // after the first fetch
  };
  // The last: a token of 10 s is kept for half its life, as without a hint.
  for (const auto& [lifetime, hint, kept, refreshed] :
       {Case{1h, 0s, 4min + 59s, 5min + 1s}, Case{1h, 10min, 9min + 59s, 10min + 1s},
        Case{1h, 2h, 57min + 59s, 58min + 1s}, Case{10s, 0s, 4s, 6s}}) {
    SimulatedClock clock(false);
    FakeTokenCredential cred(clock, lifetime);
    cred.SetRefreshIn(hint);
    EXPECT_EQ(Bearer(cred), "Bearer token-1");
    clock.Advance(kept);
    EXPECT_EQ(Bearer(cred), "Bearer token-1") << "hint " << hint.count() << " s";
    clock.Advance(refreshed - kept);
    EXPECT_EQ(Bearer(cred), "Bearer token-2") << "hint " << hint.count() << " s";
  }
}

TEST(TokenCacheTest, FailedRefreshKeepsValidTokenAndBacksOff) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  clock.Advance(59min);  // refresh due, token valid for 1 more minute
  cred.FailNext(true);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  EXPECT_EQ(cred.FetchCountForTest(), 2u);  // no retry within 30 s
  clock.Advance(31s);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  EXPECT_EQ(cred.FetchCountForTest(), 3u);
  clock.Advance(30s);  // expired: the error surfaces
  HttpRequest r = Req();
  Status s = cred.Authorize(r, "acct", false);
  EXPECT_EQ(s.kind(), ErrorKind::kAuth);
  EXPECT_EQ(r.FindHeader("Authorization"), nullptr);
  cred.FailNext(false);
  EXPECT_EQ(Bearer(cred), "Bearer token-5");
}

TEST(TokenCacheTest, InvalidateAfter401RefreshesOnce) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  cred.Invalidate();
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  EXPECT_EQ(cred.FetchCountForTest(), 2u);
}

// A thread waiting for another's fetch stops waiting when its stop is requested; the fetch
// goes on for the thread that runs it.
TEST(TokenCacheTest, AStopEndsAWaitForAnotherThreadsFetch) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  cred.Hold();
  std::thread fetching([&] { EXPECT_EQ(Bearer(cred), "Bearer token-1"); });
  ASSERT_TRUE(cred.WaitBlocked());
  std::stop_source stop;
  auto waiting = std::async(std::launch::async, [&] { return cred.GetToken(stop.get_token()); });
  // EXPECT: the cleanup below must run either way (a thread and the held fetch).
  EXPECT_TRUE(nbu::test::WaitFor([&] { return cred.WaitersForTest() == 1; }, 10s));
  stop.request_stop();
  const bool ended = waiting.wait_for(10s) == std::future_status::ready;
  cred.Release();  // on every path, so that nothing hangs
  fetching.join();
  ASSERT_TRUE(ended) << "the stop did not end the wait";
  const Result<std::string> waited = waiting.get();
  EXPECT_EQ(waited.status().kind(), ErrorKind::kCancelled) << waited.status().ToString();
  EXPECT_EQ(cred.FetchCountForTest(), 1u);
}

// A fetch cancelled by its thread's stop is no error for a thread that waited for it, even when
// an earlier fetch failed: that thread fetches for itself.
TEST(TokenCacheTest, ACancelledFetchDoesNotHandAnOlderErrorToItsWaiters) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  cred.FailNext(true);
  EXPECT_EQ(cred.GetToken().status().message(), "fake: refused");
  cred.FailNext(false);
  cred.Hold();
  std::stop_source stop;
  auto cancelled = std::async(std::launch::async, [&] { return cred.GetToken(stop.get_token()); });
  ASSERT_TRUE(cred.WaitBlocked());
  auto waiter = std::async(std::launch::async, [&] { return cred.GetToken(); });
  // EXPECT: the cleanup below must run either way (a thread and the held fetch).
  EXPECT_TRUE(nbu::test::WaitFor([&] { return cred.WaitersForTest() == 1; }, 10s));
  stop.request_stop();
  cred.Release();
  EXPECT_EQ(cancelled.get().status().kind(), ErrorKind::kCancelled);
  const Result<std::string> got = waiter.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "token-3");  // its own fetch, after the refused one and the cancelled one
}

// A token that had expired when it arrived (this machine's clock ahead of the issuer's by more
// than its lifetime) is an error that says so, not a token storage would refuse.
TEST(TokenCacheTest, ATokenExpiredOnArrivalIsAnErrorNamingTheClock) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, -1h);
  const Result<std::string> token = cred.GetToken();
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().kind(), ErrorKind::kAuth);
  EXPECT_NE(token.status().message().find("expired on arrival, 3600 s before"), std::string::npos)
      << token.status().message();
  cred.SetLifetime(1h);
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
}

// A fetch that throws ends as an error, and the next one runs: nothing is left marked as
// fetching, which would keep every later caller waiting for a fetch that never ends.
TEST(TokenCacheTest, AFetchThatThrowsAnythingIsAnError) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  cred.ThrowNext();
  const Result<std::string> token = cred.GetToken();
  ASSERT_FALSE(token.ok());
  EXPECT_NE(token.status().message().find("unexpected error"), std::string::npos)
      << token.status().message();
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
}

TEST(TokenCacheTest, StaleInvalidateFromAnEarlierTokenIsIgnored) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  std::promise<void> used, go;
  std::thread a([&] {
    EXPECT_EQ(Bearer(cred), "Bearer token-1");  // thread A sends with token-1...
    used.set_value();
    go.get_future().wait();
    cred.Invalidate();  // ...and reports its 401 late, after token-2 was fetched
  });
  used.get_future().wait();
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  cred.Invalidate();  // this thread's 401 for token-1: refresh
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  go.set_value();
  a.join();
  EXPECT_EQ(Bearer(cred), "Bearer token-2");  // A's stale report did not drop token-2
  clock.Advance(TokenCredential::kInvalidateInterval);
  cred.Invalidate();  // a 401 for token-2 itself: refresh once more
  EXPECT_EQ(Bearer(cred), "Bearer token-3");
  EXPECT_EQ(cred.FetchCountForTest(), 3u);
}

// Storage refusing every token must not make each request a token request: a token is dropped
// at most once per kInvalidateInterval, and Invalidate() says when a resend would carry the same.
TEST(TokenCacheTest, TokensAreDroppedAtMostOncePerInterval) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock, 1h);
  EXPECT_EQ(Bearer(cred), "Bearer token-1");
  EXPECT_TRUE(cred.Invalidate());
  EXPECT_EQ(Bearer(cred), "Bearer token-2");
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(cred.Invalidate()) << "token-2 was fetched just now";
    EXPECT_EQ(Bearer(cred), "Bearer token-2");
  }
  clock.Advance(TokenCredential::kInvalidateInterval - 1s);
  EXPECT_FALSE(cred.Invalidate());
  clock.Advance(1s);
  EXPECT_TRUE(cred.Invalidate());
  EXPECT_EQ(Bearer(cred), "Bearer token-3");
  EXPECT_EQ(cred.FetchCountForTest(), 3u);
}

TEST(TokenCacheTest, RefusesPlainHttpExceptLoopback) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock);
  HttpRequest r = Req("http://acct.blob.core.windows.net/c/b");
  Status s = cred.Authorize(r, "acct", false);
  EXPECT_EQ(s.kind(), ErrorKind::kAuth);
  EXPECT_NE(s.message().find("https"), std::string::npos) << s.message();
  EXPECT_EQ(cred.FetchCountForTest(), 0u);
  for (const char* url : {"http://127.0.0.1:10000/devstoreaccount1/c", "http://localhost/x",
                          "http://[::1]:8080/x", "https://10.0.0.1/x"}) {
    HttpRequest ok = Req(url);
    EXPECT_TRUE(cred.Authorize(ok, "acct", true).ok()) << url;
  }
  HttpRequest spoof = Req("http://127.0.0.1.evil.example/x");
  EXPECT_FALSE(cred.Authorize(spoof, "acct", true).ok());
}

TEST(TokenCacheTest, RefusesOldServiceVersion) {
  SimulatedClock clock(false);
  FakeTokenCredential cred(clock);
  HttpRequest r = Req();
  r.SetHeader("x-ms-version", "2017-07-29");
  EXPECT_FALSE(cred.Authorize(r, "acct", false).ok());
  r.SetHeader("x-ms-version", "2017-11-09");
  EXPECT_TRUE(cred.Authorize(r, "acct", false).ok());
}

TEST(TokenHelpersTest, ParsesTokenResponses) {
  const WallTime now = WallTime(std::chrono::seconds(1'700'000'000));
  HttpResponse r;
  r.status = 200;
  r.body = R"({"access_token":"a","expires_in":"3599","refresh_in":1800})";
  auto t = ParseTokenResponse(r, now, "x");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->expires_on, now + 3599s);
  EXPECT_EQ(*t->refresh_on, now + 1800s);
  r.body = R"({"access_token":"a","expires_on":"1700003600"})";
  t = ParseTokenResponse(r, now, "x");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->expires_on, now + 3600s);
  r.body = R"({"access_token":"a","expires_on":1700003600})";
  EXPECT_TRUE(ParseTokenResponse(r, now, "x").ok());
  // App Service 2017 sends a date: Linux without AM/PM, Windows with; any UTC offset.
  for (const char* date : {"11/14/2023 23:13:20 +00:00", "11/14/2023 11:13:20 PM +00:00",
                           "11/15/2023 1:13:20 AM +02:00", "11/14/2023 20:13:20 -03:00"}) {
    r.body = std::string(R"({"access_token":"a","expires_on":")") + date + "\"}";
    t = ParseTokenResponse(r, now, "x");
    ASSERT_TRUE(t.ok()) << date;
    EXPECT_EQ(t->expires_on, now + 3600s) << date;
  }
  r.body = R"({"access_token":"a","expires_on":"11/14/2023 12:13:20 AM +00:00"})";
  EXPECT_EQ(ParseTokenResponse(r, now, "x")->expires_on, WallTime(1'699'920'800s));
  for (const char* bad : {"13/14/2023 11:13:20 PM +00:00", "11/14/2023 13:13:20 PM +00:00",
                          "11/14/2023 23:13:20", "11/14/2023 23:13:20 +00:00 junk", "tomorrow"}) {
    r.body = std::string(R"({"access_token":"a","expires_on":")") + bad + "\"}";
    EXPECT_FALSE(ParseTokenResponse(r, now, "x").ok()) << bad;
  }
  r.body = R"({"access_token":"a"})";
  EXPECT_FALSE(ParseTokenResponse(r, now, "x").ok());
  // Numbers the clock cannot hold (undefined behaviour when converted) are no expiry at all.
  for (const char* bad :
       {R"("expires_in":"inf")", R"("expires_in":"nan")", R"("expires_in":1e300)",
        R"("expires_in":-5)", R"("expires_on":"1e400")", R"("expires_on":99999999999)",
        R"("expires_on":"12/31/9999 11:59:59 PM +00:00")"}) {
    r.body = std::string(R"({"access_token":"a",)") + bad + "}";
    t = ParseTokenResponse(r, now, "x");
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_NE(t.status().message().find("no usable expires_in"), std::string::npos) << bad;
  }
  r.body = "not json";
  EXPECT_FALSE(ParseTokenResponse(r, now, "x").ok());
  r.status = 400;
  r.body = R"({"error":"invalid_client","error_description":"AADSTS7000215: bad secret\r\nTrace"})";
  t = ParseTokenResponse(r, now, "who");
  EXPECT_EQ(t.status().message(), "who: HTTP 400 invalid_client: AADSTS7000215: bad secret");
  EXPECT_EQ(ScrubSecrets("a s3cr3t b s3cr3t", {"s3cr3t", ""}), "a <redacted> b <redacted>");
}

}  // namespace
}  // namespace nbu::azure
