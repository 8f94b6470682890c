#include "util/log.h"

#include "support/captured_log.h"

#include <gtest/gtest.h>

namespace nbu {
namespace {

TEST(LogTest, OneJsonObjectPerLineWithTraceContext) {
  test::CapturedLog logged;
  LogInfo("plain", {{"file", "a b.txt"}, {"bytes", 3}});
  {
    ScopedLogTraceContext ctx("0123456789abcdef0123456789abcdef", "0123456789abcdef");
    LogWarn("traced");
  }
  LogDebug("filtered out at info level");
  LogError("bad utf8", {{"file", std::string("\xff\xfe")}});
  logged.Stop();
  const std::vector<std::string> lines = logged.Lines();

  ASSERT_EQ(lines.size(), 3u);
  const auto a = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(a["level"], "info");
  EXPECT_EQ(a["message"], "plain");
  EXPECT_EQ(a["file"], "a b.txt");
  EXPECT_EQ(a["bytes"], 3);
  EXPECT_FALSE(a.contains("trace_id"));
  const auto b = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(b["trace_id"], "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(b["span_id"], "0123456789abcdef");
  // A name that is not UTF-8 keeps its bytes told apart: \xNN each, not U+FFFD.
  const auto c = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(c["file"], "\\xFF\\xFE");
}

TEST(LogTest, TimestampFormat) {
  const auto t =
      std::chrono::system_clock::time_point(std::chrono::milliseconds(1'700'000'000'123));
  EXPECT_EQ(FormatTimestamp(t), "2023-11-14T22:13:20.123Z");
}

}  // namespace
}  // namespace nbu

namespace nbu {
namespace {

TEST(LogLimiter, LetsOneThroughPerIntervalAndCountsTheRest) {
  using std::chrono::seconds;
  LogLimiter limiter(seconds(10));
  const auto t0 = std::chrono::steady_clock::time_point{} + seconds(100);
  uint64_t held = 99;
  EXPECT_TRUE(limiter.Allow(t0, &held));
  EXPECT_EQ(held, 0u);
  EXPECT_FALSE(limiter.Allow(t0 + seconds(1), &held));
  EXPECT_FALSE(limiter.Allow(t0 + seconds(9), &held));
  EXPECT_TRUE(limiter.Allow(t0 + seconds(10), &held));
  EXPECT_EQ(held, 2u);
  EXPECT_TRUE(limiter.Allow(t0 + seconds(25), &held));
  EXPECT_EQ(held, 0u);
  // News goes through at once, with the count of those held back before it, and starts a new
  // interval.
  EXPECT_FALSE(limiter.Allow(t0 + seconds(26), &held));
  EXPECT_TRUE(limiter.Allow(t0 + seconds(27), &held, /*news=*/true));
  EXPECT_EQ(held, 1u);
  EXPECT_FALSE(limiter.Allow(t0 + seconds(36), &held));
  EXPECT_TRUE(limiter.Allow(t0 + seconds(37), &held));
  EXPECT_EQ(held, 1u);
}

}  // namespace
}  // namespace nbu
