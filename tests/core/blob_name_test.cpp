#include "core/blob_name.h"
#include "core/layout.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace nbu::core {
namespace {

TEST(BlobName, NamesAzureKeepsAreUnchanged) {
  for (const std::string name :
       {"a.txt", "with space", "trail ", "ünïcödé-файл-文件.csv", "pct%41%2F.txt", "hash#frag",
        "x.completed", ".hidden", "a..b", "rep\uFFFDx" /* U+FFFD itself */,
        "emoji\U0001F600" /* U+1F600 */, "full\uFF0Estop-inside" /* ． */, "fs\uFF0Fx" /* ／ */}) {
    EXPECT_EQ(EncodeBlobSegment(name), name);
  }
}

// The blob names rclone 1.60.1 gave the same local files (`rclone copy src az:c` to Azurite,
// names read back from List Blobs), except ‛, which that rclone cannot read from a local
// directory (rclone issue 7456): its azureblob encoder quotes it as below.
TEST(BlobName, SegmentsAreEncodedAsRcloneEncodesThem) {
  const std::map<std::string, std::string> cases = {
      {"back\\slash", "back\uFF3Cslash"},  // ＼
      {"caf\xE9.txt", "caf\u201BE9.txt"},  // ‛E9
      {"c\x01t", "c\u2401t"},              // ␁
      {"dir.", "dir\uFF0E"},               // ．
      {"d\x7Fl", "d\u2421l"},              // ␡
      {"fw\uFF3Cx", "fw\u201B\uFF3Cx"},    // ＼ -> ‛＼
      {"sym\u2401", "sym\u201B\u2401"},    // ␁ -> ‛␁
      {"trail.", "trail\uFF0E"},
      {"tr\uFF0E", "tr\u201B\uFF0E"},  // a trailing ． -> ‛．
      {"two..", "two.\uFF0E"},         // only the last '.'
      {"q\u201Bx", "q\u201B\u201Bx"},  // ‛ -> ‛‛
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(EncodeBlobSegment(in), want) << in;
}

TEST(BlobName, EveryByteOfAnIllFormedSequenceIsQuotedOnItsOwn) {
  const std::map<std::string, std::string> cases = {
      {"\xC0\x80", "\u201BC0\u201B80"},              // overlong NUL
      {"\xED\xA0\x80", "\u201BED\u201BA0\u201B80"},  // a surrogate
      {"x\xE2\x82", "x\u201BE2\u201B82"},            // cut short at the end
      {"\xE2\x82x", "\u201BE2\u201B82x"},            // cut short by an ASCII byte
      {"\xF4\x90\x80\x80",                           // past U+10FFFF
       "\u201BF4\u201B90\u201B80\u201B80"},
      {"\xFF", "\u201BFF"},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(EncodeBlobSegment(in), want);
}

// Well-formed code points Azure refuses even percent-encoded (Azurite takes them): each of their
// bytes is quoted as a stray byte is, which rclone decodes back to the same bytes.
TEST(BlobName, CodePointsAzureRefusesAreQuotedByteByByte) {
  const std::map<std::string, std::string> cases = {
      {"a\u0081", "a\u201BC2\u201B81"},                      // a C1 control
      {"\u0080\u009F", "\u201BC2\u201B80\u201BC2\u201B9F"},  // the first and last
      {"\uE000x", "\u201BEE\u201B80\u201B80x"},              // private use
      {"\uF8FF", "\u201BEF\u201BA3\u201BBF"},
      {"\uFDD0", "\u201BEF\u201BB7\u201B90"},  // noncharacters
      {"\uFFFF", "\u201BEF\u201BBF\u201BBF"},
      {"\U0001FFFE", "\u201BF0\u201B9F\u201BBF\u201BBE"},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(EncodeBlobSegment(in), want);
  for (const char* kept : {"\u00A0", "\u00E9", "\uF900", "\uFFFD", "\U0001F600"}) {
    EXPECT_EQ(EncodeBlobSegment(kept), kept) << "what Azure keeps stays as it is";
  }
}

bool IsWellFormedUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80                 ? 1
                       : c >= 0xC2 && c <= 0xDF ? 2
                       : c >= 0xE0 && c <= 0xEF ? 3
                       : c >= 0xF0 && c <= 0xF4 ? 4
                                                : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// Every name of up to four pieces from an alphabet of the characters the encoding touches, its
// replacements and pieces of them: no two names share an encoding, and no encoding holds what
// Azure would change or refuse.
TEST(BlobName, EncodingIsOneToOneAndAzureSafe) {
  const std::vector<std::string> alphabet = {"a",
                                             ".",
                                             "\\",
                                             "\x01",
                                             "\x1F",
                                             "\x7F",
                                             "\xE9",
                                             "E9",
                                             "\u201B" /* ‛ */,
                                             "\uFF3C" /* ＼ */,
                                             "\uFF0E" /* ． */,
                                             "\u2401" /* ␁ */,
                                             "\u2421" /* ␡ */,
                                             "\u2400" /* ␀ */,
                                             "\xEF\xBC" /* ． cut short */,
                                             "\x8E",
                                             "\u0081",
                                             "\xC2" /* U+0081 cut short */};
  std::vector<std::string> names, level = {""};
  for (int pieces = 1; pieces <= 4; ++pieces) {
    std::vector<std::string> next;
    for (const auto& n : level) {
      for (const auto& piece : alphabet) next.push_back(n + piece);
    }
    names.insert(names.end(), next.begin(), next.end());
    level = std::move(next);
  }
  std::map<std::string, std::string> seen;  // encoding -> name
  for (const auto& name : names) {
    const std::string enc = EncodeBlobSegment(name);
    auto [it, fresh] = seen.emplace(enc, name);
    if (!fresh && it->second != name) {
      ADD_FAILURE() << "two names share the encoding " << enc;
      return;
    }
    ASSERT_TRUE(IsWellFormedUtf8(enc)) << name;
    ASSERT_NE(enc.back(), '.') << name;
    for (char ch : enc) {
      const auto c = static_cast<unsigned char>(ch);
      ASSERT_TRUE(c >= 0x20 && c != 0x7F && c != '\\') << name;
    }
  }
  EXPECT_GT(seen.size(), 60000u);
}

TEST(BlobName, PathsAreEncodedSegmentBySegment) {
  std::string out = "20261129";
  AppendBlobPath(out, "a\\b/c./d");
  EXPECT_EQ(out, "20261129/a\uFF3Cb/c\uFF0E/d");
  std::string fresh;
  AppendBlobPath(fresh, "x//y/");
  EXPECT_EQ(fresh, "x/y");

  ClaimPath c;
  c.date = "20261129";
  c.session = "run.";  // a valid session name Azure would shorten to "run"
  c.reldir = "x\\y";
  c.base = "z.";
  EXPECT_EQ(c.BlobName(), "20261129/run\uFF0E/x\uFF3Cy/z\uFF0E");
  c.session = "run";
  c.reldir = "x/y";
  c.base = "z";
  EXPECT_EQ(c.BlobName(), "20261129/run/x/y/z");
}

TEST(BlobName, AzuresLengthAndSegmentLimitsAreChecked) {
  EXPECT_TRUE(CheckBlobName(std::string(1024, 'a')).ok());
  const Status too_long = CheckBlobName(std::string(1025, 'a'));
  EXPECT_EQ(too_long.kind(), ErrorKind::kPermanent);
  EXPECT_NE(too_long.message().find("1025 characters"), std::string::npos) << too_long.message();

  // Characters, not bytes: 1,000 three-byte characters are 3,000 bytes; a character past U+FFFF
  // counts twice, as UTF-16 holds it.
  std::string cjk;
  for (int i = 0; i < 1000; ++i) cjk += "\u6587";  // 文
  EXPECT_TRUE(CheckBlobName(cjk).ok());
  std::string emoji;
  for (int i = 0; i < 512; ++i) emoji += "\U0001F600";
  EXPECT_TRUE(CheckBlobName(emoji).ok());
  EXPECT_FALSE(CheckBlobName(emoji + "a").ok());

  std::string segments = "a";
  for (int i = 1; i < 254; ++i) segments += "/a";
  EXPECT_TRUE(CheckBlobName(segments).ok());
  const Status too_deep = CheckBlobName(segments + "/a");
  EXPECT_EQ(too_deep.kind(), ErrorKind::kPermanent);
  EXPECT_NE(too_deep.message().find("255 path segments"), std::string::npos);
}

}  // namespace
}  // namespace nbu::core
