#include "util/checksum.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace nbu {
namespace {

// CRC-64/NVME one bit at a time, straight from its definition (normal-form polynomial, input
// and output reflected, init and xorout all ones): the reference the table version must match.
uint64_t ReferenceCrc64(std::string_view data) {
  constexpr uint64_t kNormalPoly = 0xAD93D23594C93659;
  auto reflect = [](uint64_t v, int bits) {
    uint64_t r = 0;
    for (int i = 0; i < bits; ++i) r |= ((v >> i) & 1) << (bits - 1 - i);
    return r;
  };
  uint64_t crc = ~uint64_t{0};
  for (char ch : data) {
    crc ^= reflect(static_cast<unsigned char>(ch), 8) << 56;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & (uint64_t{1} << 63)) != 0 ? (crc << 1) ^ kNormalPoly : crc << 1;
    }
  }
  return reflect(crc, 64) ^ ~uint64_t{0};
}

std::string Base64Of(const Crc64Digest& d) {
  return Base64Encode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

TEST(Crc64Test, KnownVectors) {
  EXPECT_EQ(Crc64::Of("123456789"), 0xAE8B14860A799888u);  // the catalogued check value
  EXPECT_EQ(ReferenceCrc64("123456789"), 0xAE8B14860A799888u);
  // x-ms-content-crc64 values: little-endian bytes, base64.
  EXPECT_EQ(Base64Of(Crc64Bytes(Crc64::Of("123456789"))), "iJh5CoYUi64=");
  EXPECT_EQ(Base64Of(Crc64Bytes(Crc64::Of(""))), "AAAAAAAAAAA=");
  EXPECT_EQ(Base64Of(Crc64Bytes(Crc64::Of("hello"))), "V0JSBnCFdzM=");
}

TEST(Crc64Test, MatchesTheBitwiseDefinitionForEveryLengthAlignmentAndSplit) {
  std::mt19937_64 rng(42);
  std::string data(1100, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t len = 0; len <= 300; ++len) {
    for (size_t start : {size_t{0}, size_t{1}, size_t{3}, size_t{7}}) {
      const std::string_view piece(data.data() + start, len);
      const uint64_t want = ReferenceCrc64(piece);
      ASSERT_EQ(Crc64::Of(piece), want) << "len " << len << " start " << start;
      // Any split into two updates gives the same value.
      const size_t cut = len == 0 ? 0 : rng() % (len + 1);
      Crc64 c;
      c.Update(piece.substr(0, cut));
      c.Update(piece.substr(cut));
      ASSERT_EQ(c.Value(), want) << "len " << len << " cut " << cut;
    }
  }
  EXPECT_EQ(Crc64::Of(data), ReferenceCrc64(data));
  // Long inputs (the folding loop runs thousands of times) in uneven updates.
  std::string big(200'003, '\0');
  for (char& c : big) c = static_cast<char>(rng());
  const uint64_t want = ReferenceCrc64(big);
  EXPECT_EQ(Crc64::Of(big), want);
  Crc64 pieces;
  for (size_t off = 0; off < big.size();) {
    const size_t n = std::min<size_t>(big.size() - off, rng() % 70'000);
    pieces.Update(big.data() + off, n);
    off += n;
  }
  EXPECT_EQ(pieces.Value(), want);
}

TEST(Crc64Test, DetectsEverySingleBitFlip) {
  std::string data(64, 'x');
  const uint64_t clean = Crc64::Of(data);
  for (size_t bit = 0; bit < data.size() * 8; ++bit) {
    std::string flipped = data;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
    ASSERT_NE(Crc64::Of(flipped), clean) << "bit " << bit;
  }
}

TEST(ChecksummerTest, GivesTheChosenAlgorithmsDigest) {
  Checksummer md5(ChecksumKind::kMd5);
  md5.Update("hel", 3);
  md5.Update("lo", 2);
  const Checksum m = md5.Final();
  ASSERT_TRUE(std::holds_alternative<Md5Digest>(m));
  EXPECT_EQ(std::get<Md5Digest>(m), Md5::Of("hello"));
  EXPECT_EQ(ChecksumBytes(m).size(), 16u);

  Checksummer crc(ChecksumKind::kCrc64);
  crc.Update("hel", 3);
  crc.Update("lo", 2);
  const Checksum c = crc.Final();
  ASSERT_TRUE(std::holds_alternative<Crc64Digest>(c));
  EXPECT_EQ(std::get<Crc64Digest>(c), Crc64Bytes(Crc64::Of("hello")));
  EXPECT_EQ(ChecksumBytes(c).size(), 8u);
}

}  // namespace
}  // namespace nbu
