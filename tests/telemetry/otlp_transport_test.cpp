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
// What a collector or gateway quotes back loses the header values and the endpoint's query values
// (a gateway's key, as sent and decoded); short values stay, as do the words around them.
TEST(OtlpTransportTest, SecretsOfHeadersAndTheUrlQueryAreRemoved) {
  const KeyValues headers = {{"authorization", "Bearer headerkey123"}};
  const std::string url = "https://h/v1/traces?key=gw%2Bkey12345&x=1#f";
  EXPECT_EQ(WithoutSecrets("refused https://h/v1/traces?key=gw%2Bkey12345&x=1: key gw+key12345, "
                           "header headerkey123",
                           &headers, url),
            "refused https://h/v1/traces?key=<redacted>&x=1: key <redacted>, header <redacted>");
  EXPECT_EQ(WithoutSecrets("key gw+key12345", nullptr, url), "key <redacted>");
  EXPECT_EQ(WithoutSecrets("no query here", nullptr, "https://h/v1/traces"), "no query here");
  // A password in the URL, as written, decoded, and in the Basic credential curl sends
  // ("me:pass+word1" in base64).
  const std::string with_user = "https://me:pass%2Bword1@h:4318/v1/traces";
  EXPECT_EQ(WithoutSecrets("Authorization: Basic bWU6cGFzcyt3b3JkMQ== for me, pass+word1, "
                           "pass%2Bword1",
                           nullptr, with_user),
            "Authorization: Basic <redacted> for me, <redacted>, <redacted>");
  EXPECT_EQ(WithoutSecrets("at h:4318@x", nullptr, "https://h:4318/v1/traces?a=b@c"),
            "at h:4318@x");
  // A short password goes too; a user name alone when it could be a key.
  EXPECT_EQ(WithoutSecrets("bad credentials otel:pw%2F3, pw/3", nullptr,
                           "https://otel:pw%2F3@collector:4318"),
            "bad credentials otel:<redacted>, <redacted>");
  EXPECT_EQ(WithoutSecrets("unknown key gwkey12345 for otel", nullptr,
                           "https://gwkey12345@collector:4318"),
            "unknown key <redacted> for otel");
  EXPECT_EQ(WithoutSecrets("unknown user otel", nullptr, "https://otel@collector:4318"),
            "unknown user otel");
  // So is a user name with an empty password: the key of a gateway that asks for Basic auth.
  EXPECT_EQ(WithoutSecrets("unknown key gwkey12345 for otel", nullptr,
                           "https://gwkey12345:@collector:4318"),
            "unknown key <redacted> for otel");
}

}  // namespace nbu::telemetry
