#include "util/crc64.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace nbu {
namespace {

// The definition, one bit at a time: the reference both implementations must equal.
uint64_t BitwiseCrc64(const unsigned char* p, size_t n) {
  uint64_t r = ~uint64_t{0};
  for (size_t i = 0; i < n; ++i) {
    r ^= p[i];
    for (int bit = 0; bit < 8; ++bit) r = (r >> 1) ^ ((r & 1) != 0 ? 0x9A6C9329AC4BC9B5ULL : 0);
  }
  return ~r;
}

std::vector<unsigned char> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(gen());
  return v;
}

TEST(Crc64Test, KnownVectors) {
  // CRC-64/NVME's check value, and the header values of AZURE.md section 8.
  const std::string check = "123456789";
  EXPECT_EQ(Crc64(0, check.data(), check.size()), 0xAE8B14860A799888ULL);
  EXPECT_EQ(Crc64Base64(Crc64(0, check.data(), check.size())), "iJh5CoYUi64=");
  EXPECT_EQ(Crc64Base64(Crc64(0, "", 0)), "AAAAAAAAAAA=");
  EXPECT_EQ(Crc64Base64(Crc64(0, "hello", 5)), "V0JSBnCFdzM=");
}

// Every length up to a few fold groups (each path and each tail length of both), at every
// alignment of the first byte, and some large lengths.
TEST(Crc64Test, BothImplementationsEqualTheDefinition) {
  const auto data = RandomBytes((1 << 20) + 64, 7);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 600; ++n) lengths.push_back(n);
  for (size_t n : {1000UL, 4095UL, 4096UL, 4097UL, 65536UL, 65537UL, 1UL << 20})
    lengths.push_back(n);
  for (size_t n : lengths) {
    for (size_t at = 0; at < (n < 1000 ? 16U : 3U); ++at) {
      const uint64_t want = BitwiseCrc64(data.data() + at, n);
      ASSERT_EQ(Crc64(0, data.data() + at, n), want) << "length " << n << " at " << at;
      ASSERT_EQ(Crc64Portable(0, data.data() + at, n), want) << "length " << n << " at " << at;
    }
  }
  RecordProperty("clmul", Crc64UsesClmul() ? "yes" : "no");
}

// Pieces of any sizes chain to the CRC of the whole, whichever path each piece takes.
TEST(Crc64Test, ChainedPiecesEqualTheWhole) {
  const auto data = RandomBytes(300'000, 11);
  const uint64_t whole = BitwiseCrc64(data.data(), data.size());
  std::mt19937 gen(3);
  for (int round = 0; round < 50; ++round) {
    uint64_t crc = 0;
    for (size_t at = 0; at < data.size();) {
      const size_t n = std::min<size_t>(data.size() - at, gen() % (round < 25 ? 300 : 70'000));
      crc = Crc64(crc, data.data() + at, n);
      at += n;
    }
    ASSERT_EQ(crc, whole) << "round " << round;
  }
}

// A change anywhere changes the CRC (one flipped bit is always caught by a CRC).
TEST(Crc64Test, EveryFlippedBitChangesIt) {
  auto data = RandomBytes(4096, 5);
  const uint64_t before = Crc64(0, data.data(), data.size());
  for (size_t i = 0; i < data.size(); i += 37) {
    for (int bit = 0; bit < 8; ++bit) {
      data[i] ^= static_cast<unsigned char>(1 << bit);
      EXPECT_NE(Crc64(0, data.data(), data.size()), before) << i << ":" << bit;
      data[i] ^= static_cast<unsigned char>(1 << bit);
    }
  }
}

}  // namespace
}  // namespace nbu
