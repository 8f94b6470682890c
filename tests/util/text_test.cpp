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

}  // namespace
}  // namespace nbu
