#include "util/crypto.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace nbu {
namespace {

TEST(Md5Test, KnownVectors) {
  EXPECT_EQ(HexEncode(std::string_view(reinterpret_cast<const char*>(Md5::Of("").data()), 16)),
            "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Base64Encode(Md5::Of("hello")), "XUFAKrxLKna5cZ2REBfFkg==");
}

TEST(Md5Test, IncrementalEqualsOneShot) {
  Md5 m;
  m.Update("hel");
  m.Update("lo");
  EXPECT_EQ(m.Final(), Md5::Of("hello"));
}

TEST(Base64Test, RoundTripAndStrictness) {
  for (const std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    const auto enc = Base64Encode(s);
    const auto dec = Base64Decode(enc);
    ASSERT_TRUE(dec.has_value()) << enc;
    EXPECT_EQ(*dec, s);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_FALSE(Base64Decode("Zm9v-mFy").has_value());  // base64url alphabet
  EXPECT_FALSE(Base64Decode("Zm9").has_value());       // bad length
  EXPECT_FALSE(Base64Decode("Zg=a").has_value());      // data after padding
}

TEST(HmacTest, Rfc4231Case2) {
  EXPECT_EQ(HexEncode(HmacSha256Key("Jefe").Sign("what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

// RFC 4231 case 6: a key longer than the block size (it is hashed first).
TEST(HmacTest, KeyedStateIsReusedAcrossCallsAndThreads) {
  const HmacSha256Key long_key(std::string(131, '\xaa'));
  const std::string msg = "Test Using Larger Than Block-Size Key - Hash Key First";
  const std::string want = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54";
  EXPECT_EQ(HexEncode(long_key.Sign(msg)), want);
  EXPECT_EQ(HexEncode(long_key.Sign(msg)), want) << "signing does not consume the key";
  const HmacSha256Key jefe("Jefe");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (size_t t = 0; t < mismatches.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string data = "message " + std::to_string(i);
        if (jefe.Sign(data) != HmacSha256Key("Jefe").Sign(data)) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(RandomTest, BytesDiffer) {
  EXPECT_EQ(RandomBytes(16).size(), 16u);
  EXPECT_NE(RandomBytes(16), RandomBytes(16));
}

}  // namespace
}  // namespace nbu

namespace nbu {
namespace {

TEST(FastRandomTest, HexWidthAndDistinctValuesAcrossThreads) {
  EXPECT_EQ(FastRandomHex(8).size(), 16u);
  EXPECT_EQ(FastRandomHex(13).size(), 26u);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(FastRandomHex(8));
  std::string other;
  std::thread([&] { other = FastRandomHex(8); }).join();
  seen.insert(other);
  EXPECT_EQ(seen.size(), 1001u);
}

}  // namespace
}  // namespace nbu
