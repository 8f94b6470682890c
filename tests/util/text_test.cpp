#include "util/text.h"
#include "util/utf8.h"

#include <gtest/gtest.h>

namespace nbu {
namespace {

TEST(TextTest, LowersAsciiOnly) {
  EXPECT_EQ(LowerAscii("X-Ms-Date: ABC"), "x-ms-date: abc");
  // Bytes past ASCII (UTF-8 of "Ä") are left alone, whatever the locale says about them.
  EXPECT_EQ(LowerAscii("\xC3\x84Z"), "\xC3\x84z");
  EXPECT_EQ(LowerAscii(""), "");
}

TEST(TextTest, ComparesIgnoringAsciiCase) {
  EXPECT_TRUE(EqualsIgnoreCaseAscii("Content-Length", "content-LENGTH"));
  EXPECT_TRUE(EqualsIgnoreCaseAscii("SIG", "sig"));
  EXPECT_FALSE(EqualsIgnoreCaseAscii("sig", "sign"));
  EXPECT_FALSE(EqualsIgnoreCaseAscii("sig", "sih"));
}

TEST(TextTest, TrimsSpaceAtBothEndsOnly) {
  EXPECT_EQ(TrimSpaceAscii(" \t\r\n\f\va b\t \n"), "a b");
  EXPECT_EQ(TrimSpaceAscii(" \t "), "");
  EXPECT_EQ(TrimSpaceAscii("x"), "x");
  EXPECT_EQ(TrimSpaceAscii("\xA0x\xA0"), "\xA0x\xA0");  // not ASCII white space
}

TEST(TextTest, FindsAUrlsUserInfo) {
  using Span = std::optional<std::pair<size_t, size_t>>;
  EXPECT_EQ(UserInfoSpan("https://me:pw@host/c"), (Span{{8, 14}}));
  // A password may hold '#', '?' and '@': the user info ends at the last '@' before the path.
  EXPECT_EQ(UserInfoSpan("https://me:p#w?x@y@host/c?sig=1"), (Span{{8, 19}}));
  EXPECT_EQ(UserInfoSpan("user:pw@proxy:3128"), (Span{{0, 8}}));    // no scheme
  EXPECT_EQ(UserInfoSpan("https://host/dev@store"), std::nullopt);  // an '@' in the path
  EXPECT_EQ(UserInfoSpan("https://host"), std::nullopt);
  EXPECT_EQ(UserInfoSpan("a@b://host"), std::nullopt);  // before the scheme's end
}

TEST(TextTest, ScrubsEveryOccurrenceOfEachSecret) {
  EXPECT_EQ(ScrubSecrets("k=abc1 abc1abc1 x", {"abc1", ""}), "k=<redacted> <redacted><redacted> x");
  // The replacement is not searched again for the same secret.
  EXPECT_EQ(ScrubSecrets("red red", {"red"}), "<redacted> <redacted>");
  // In the order given: the longer one first keeps its shorter part from splitting it.
  EXPECT_EQ(ScrubSecrets("Bearer tok123", {"Bearer tok123", "tok123"}), "<redacted>");
  // Nor by another secret: a short one ("e", given twice as written and decoded) does not nest.
  EXPECT_EQ(ScrubSecrets("see red", {"e", "e", "red"}), "s<redacted><redacted> <redacted>");
  EXPECT_EQ(ScrubSecrets("dire", {"d", "red"}), "<redacted>ire");
  // Secrets that overlap in the text go as one: no part of either is left.
  EXPECT_EQ(ScrubSecrets("x zzabcdef12 y", {"abcdef12", "zzabc"}), "x <redacted> y");
  EXPECT_EQ(ScrubSecrets("aaaa", {"aaa"}), "<redacted>") << "overlaps of one secret too";
}

}  // namespace
}  // namespace nbu

namespace nbu {
namespace {

// Each length's first and last code point, written and read back as the same one.
TEST(Utf8Test, AppendedCodePointsDecodeToThemselves) {
  for (const uint32_t cp :
       {0x00U, 0x7FU, 0x80U, 0x7FFU, 0x800U, 0xD7FFU, 0xE000U, 0xFFFFU, 0x10000U, 0x10FFFFU}) {
    std::string s;
    AppendUtf8(s, static_cast<char32_t>(cp));
    EXPECT_EQ(s.size(), cp < 0x80 ? 1U : cp < 0x800 ? 2U : cp < 0x10000 ? 3U : 4U) << cp;
    if (cp < 0x80) {
      EXPECT_EQ(static_cast<unsigned char>(s[0]), cp);
      continue;
    }
    char32_t back = 0;
    EXPECT_EQ(DecodeUtf8(s, 0, &back), s.size()) << cp;
    EXPECT_EQ(static_cast<uint32_t>(back), cp);
  }
  std::string euro;
  AppendUtf8(euro, U'\u20AC');
  EXPECT_EQ(euro, "\u20AC");
}

// Bytes that are not UTF-8 become \xNN; well-formed text, including U+FFFD itself and four-byte
// characters, stays as it is. Overlong forms, surrogates and sequences cut short are stray bytes.
TEST(Utf8Test, InvalidBytesAreEscapedOneByOne) {
  EXPECT_EQ(EscapeInvalidUtf8("caf\xE9.txt"), "caf\\xE9.txt");
  EXPECT_EQ(EscapeInvalidUtf8("caf\xE8.txt"), "caf\\xE8.txt");
  for (const char* kept : {"", "plain", "caf\u00E9", "\uFFFD", "\U0001F600 x", "a\\b"}) {
    EXPECT_EQ(EscapeInvalidUtf8(kept), kept);
  }
  EXPECT_EQ(EscapeInvalidUtf8("\xC0\xAF"), "\\xC0\\xAF");           // overlong '/'
  EXPECT_EQ(EscapeInvalidUtf8("\xED\xA0\x80"), "\\xED\\xA0\\x80");  // a surrogate
  EXPECT_EQ(EscapeInvalidUtf8("\xE2\x82"), "\\xE2\\x82");           // cut short
  EXPECT_EQ(EscapeInvalidUtf8("\xE2\x82\xAC\xFF"), "\u20AC\\xFF");
}

// DumpJson writes what nlohmann's strict dump would throw on, keys too, and leaves valid
// documents as dump() writes them.
TEST(Utf8Test, DumpJsonEscapesStringsThatAreNotUtf8) {
  const nlohmann::json ok = {{"file", "caf\u00E9"}, {"n", 3}, {"list", {"a", 1}}};
  EXPECT_EQ(DumpJson(ok), ok.dump());
  EXPECT_EQ(DumpJson(ok, 2), ok.dump(2));
  nlohmann::json bad = {{"files", {std::string("a\xFF"), "b"}}, {"n", 3}};
  bad[std::string("k\xFE")] = std::string("\xE9");
  const auto back = nlohmann::json::parse(DumpJson(bad));
  EXPECT_EQ(back["files"], nlohmann::json({"a\\xFF", "b"}));
  EXPECT_EQ(back["n"], 3);
  EXPECT_EQ(back["k\\xFE"], "\\xE9");
}

}  // namespace
}  // namespace nbu
