#include "util/text.h"

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

TEST(TextTest, ScrubsEveryOccurrenceOfEachSecret) {
  EXPECT_EQ(ScrubSecrets("k=abc1 abc1abc1 x", {"abc1", ""}), "k=<redacted> <redacted><redacted> x");
  // The replacement is not searched again for the same secret.
  EXPECT_EQ(ScrubSecrets("red red", {"red"}), "<redacted> <redacted>");
  // In the order given: the longer one first keeps its shorter part from splitting it.
  EXPECT_EQ(ScrubSecrets("Bearer tok123", {"Bearer tok123", "tok123"}), "<redacted>");
}

}  // namespace
}  // namespace nbu
