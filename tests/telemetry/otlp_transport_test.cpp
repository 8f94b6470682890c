// Retry-After as OTLP/HTTP collectors send it with 429 and 503: delta-seconds or an HTTP-date.
#include "telemetry/otlp_transport.h"

#include <gtest/gtest.h>

namespace nbu::telemetry {
namespace {

using std::chrono::seconds;

constexpr std::time_t kAnswered = 1445412480;  // Wed, 21 Oct 2015 07:28:00 GMT

TEST(OtlpTransportTest, RetryAfterInSeconds) {
  EXPECT_EQ(ParseRetryAfter("120", kAnswered), seconds(120));
  EXPECT_EQ(ParseRetryAfter(" 7 ", kAnswered), seconds(7));
  EXPECT_EQ(ParseRetryAfter("0", kAnswered), seconds(0));
  EXPECT_GE(ParseRetryAfter("99999999999999999999999", kAnswered), seconds(3600))
      << "too large to hold is long, not short or an error";
}

TEST(OtlpTransportTest, RetryAfterAsAnHttpDate) {
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:28:30 GMT", kAnswered), seconds(30));
  EXPECT_EQ(ParseRetryAfter("Wednesday, 21-Oct-15 07:29:00 GMT", kAnswered), seconds(60))
      << "RFC 850, obsolete but allowed";
  EXPECT_EQ(ParseRetryAfter("Wed Oct 21 07:28:05 2015", kAnswered), seconds(5)) << "asctime";
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", kAnswered), seconds(0))
      << "a date already past means now";
}

TEST(OtlpTransportTest, RetryAfterThatIsNeither) {
  for (const char* bad : {"", "  ", "-5", "1.5", "5s", "soon", "Wed, 99 Foo 2015"}) {
    EXPECT_EQ(ParseRetryAfter(bad, kAnswered), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace nbu::telemetry
