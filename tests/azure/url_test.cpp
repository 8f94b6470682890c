#include "azure/url.h"

#include <gtest/gtest.h>

namespace nbu::azure {
namespace {

TEST(PortIsNumericTest, HostsAndPorts) {
  for (const char* ok : {"acct.blob.core.windows.net", "127.0.0.1:10000", "[::1]", "[::1]:10000",
                         "host:65535", "host:0"}) {
    EXPECT_TRUE(PortIsNumeric(ok)) << ok;
  }
  for (const char* bad :
       {"me:s3", "host:", "[::1]x", "[::1]:", "[::1", "host:65536", "host:99999", "host:123456"}) {
    EXPECT_FALSE(PortIsNumeric(bad)) << bad;
  }
}

TEST(UrlEncodePathTest, KeepsUnreservedSubDelimsAndSlash) {
  EXPECT_EQ(UrlEncodePath("a/b/c"), "a/b/c");
  EXPECT_EQ(UrlEncodePath("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(UrlEncodePath("!$&'()*,;=:@"), "!$&'()*,;=:@");
}

TEST(UrlEncodePathTest, EncodesReservedAndUnsafe) {
  EXPECT_EQ(UrlEncodePath("my file.txt"), "my%20file.txt");
  EXPECT_EQ(UrlEncodePath("100%"), "100%25");
  EXPECT_EQ(UrlEncodePath("a#b?c"), "a%23b%3Fc");
  EXPECT_EQ(UrlEncodePath("a+b"), "a%2Bb");
  EXPECT_EQ(UrlEncodePath("say \"hi\""), "say%20%22hi%22");
  EXPECT_EQ(UrlEncodePath("back\\slash<>"), "back%5Cslash%3C%3E");
  EXPECT_EQ(UrlEncodePath(std::string("nul\0x", 5)), "nul%00x");
}

TEST(UrlEncodePathTest, EncodesUtf8BytesUpperHex) {
  EXPECT_EQ(UrlEncodePath("caf\xC3\xA9"), "caf%C3%A9");                        // café
  EXPECT_EQ(UrlEncodePath("\xE6\x97\xA5\xE6\x9C\xAC"), "%E6%97%A5%E6%9C%AC");  // 日本
  EXPECT_EQ(UrlEncodePath("\xF0\x9F\x98\x80"), "%F0%9F%98%80");                // emoji
}

TEST(UrlEncodeQueryValueTest, AlsoEncodesPlusEqualsAmpersandSlash) {
  EXPECT_EQ(UrlEncodeQueryValue("ab+/cd=="), "ab%2B%2Fcd%3D%3D");
  EXPECT_EQ(UrlEncodeQueryValue("a&b"), "a%26b");
  EXPECT_EQ(UrlEncodeQueryValue("x;y:z"), "x;y:z");
  EXPECT_EQ(UrlEncodeQueryValue("a b"), "a%20b");
  EXPECT_EQ(UrlEncodeQueryValue("2026-01-31T12:00:00Z"), "2026-01-31T12:00:00Z");
}

TEST(UrlDecodeTest, RoundTripsAndKeepsMalformed) {
  for (const std::string s : {"a b+c=d&e/f", "caf\xC3\xA9 #%?\"'", "plain"}) {
    EXPECT_EQ(UrlDecode(UrlEncodeQueryValue(s)), s);
    EXPECT_EQ(UrlDecode(UrlEncodePath(s)), s);
  }
  EXPECT_EQ(UrlDecode("%2b%2B"), "++");
  EXPECT_EQ(UrlDecode("100%"), "100%");
  EXPECT_EQ(UrlDecode("%zz%4"), "%zz%4");
  EXPECT_EQ(UrlDecode("a+b"), "a+b");
}

TEST(SplitUrlTest, Parts) {
  UrlParts p = SplitUrl("http://127.0.0.1:10000/devstoreaccount1/c/a%20b?comp=block&x=1");
  EXPECT_EQ(p.scheme, "http");
  EXPECT_EQ(p.authority, "127.0.0.1:10000");
  EXPECT_EQ(p.path, "/devstoreaccount1/c/a%20b");
  EXPECT_EQ(p.query, "comp=block&x=1");
  p = SplitUrl("https://acct.blob.core.windows.net");
  EXPECT_EQ(p.authority, "acct.blob.core.windows.net");
  EXPECT_EQ(p.path, "/");
  EXPECT_EQ(p.query, "");
  p = SplitUrl("https://acct.blob.core.windows.net/?comp=list");
  EXPECT_EQ(p.path, "/");
  EXPECT_EQ(p.query, "comp=list");
}

TEST(SplitQueryTest, Pairs) {
  const auto q = SplitQuery("a=1&&b=&c&d=x=y");
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[0], (std::pair<std::string, std::string>("a", "1")));
  EXPECT_EQ(q[1], (std::pair<std::string, std::string>("b", "")));
  EXPECT_EQ(q[2], (std::pair<std::string, std::string>("c", "")));
  EXPECT_EQ(q[3], (std::pair<std::string, std::string>("d", "x=y")));
}

TEST(RedactUrlTest, RemovesSignatureOnly) {
  EXPECT_EQ(RedactUrl("https://a.blob.core.windows.net/c/b?sv=2021-06-08&sig=abc%2Bdef%3D&se=x"),
            "https://a.blob.core.windows.net/c/b?sv=2021-06-08&sig=REDACTED&se=x");
  EXPECT_EQ(RedactUrl("http://h/c/b?comp=block&SIG=zzz"), "http://h/c/b?comp=block&SIG=REDACTED");
  EXPECT_EQ(RedactUrl("http://h/c/b"), "http://h/c/b");
  EXPECT_EQ(RedactUrl("http://h/c/b?signature=keep"), "http://h/c/b?signature=keep");
}

// A SAS pasted after '#' is not in the query, and user info is not part of the query either:
// both go, user info first (a password may hold '#' or '?').
TEST(RedactUrlTest, DropsTheFragmentAndUserInfo) {
  EXPECT_EQ(RedactUrl("https://a.blob.core.windows.net/#sv=2021-06-08&sig=XYZ/c/b?comp=block"),
            "https://a.blob.core.windows.net/");
  EXPECT_EQ(RedactUrl("https://a.blob.core.windows.net/c/b?comp=block&sig=XYZ#sig=XYZ"),
            "https://a.blob.core.windows.net/c/b?comp=block&sig=REDACTED");
  EXPECT_EQ(RedactUrl("https://me:pw@a.blob.core.windows.net/c/b"),
            "https://a.blob.core.windows.net/c/b");
  EXPECT_EQ(RedactUrl("https://me:p#w?x@a.blob.core.windows.net/c/b?sig=XYZ"),
            "https://a.blob.core.windows.net/c/b?sig=REDACTED");
  EXPECT_EQ(RedactUrl("http://127.0.0.1:10000/dev@store/c/b"),
            "http://127.0.0.1:10000/dev@store/c/b")
      << "an @ in the path is not user info";
}

}  // namespace
}  // namespace nbu::azure
