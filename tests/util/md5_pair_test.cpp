#include "util/md5_pair.h"

#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace nbu {
namespace {

// Feeds `data` in uneven pieces of up to `max_piece` bytes, cut into blocks of `block_size` (0:
// none), and checks every block's MD5 and the file's against OpenSSL's one-shot digests.
template <typename Hasher>
void ExpectBlocksAndFile(Hasher& h, std::string_view data, size_t block_size, std::mt19937_64& rng,
                         size_t max_piece = 150) {
  size_t off = 0;
  do {
    const size_t n = block_size == 0 ? data.size() : std::min(block_size, data.size() - off);
    for (size_t fed = 0; fed < n;) {
      const size_t k = std::min<size_t>(n - fed, rng() % max_piece + 1);
      h.Update(data.data() + off + fed, k);
      fed += k;
    }
    if (block_size != 0) {
      ASSERT_EQ(h.FinishBlock(), Md5::Of(data.substr(off, n)))
          << "block at " << off << " of " << data.size();
    }
    off += n;
  } while (off < data.size());
  ASSERT_EQ(h.FinishFile(), Md5::Of(data)) << "file of " << data.size();
}

constexpr Md5Pair::Kernel kKernels[] = {Md5Pair::Kernel::kBest, Md5Pair::Kernel::kPortable,
                                        Md5Pair::Kernel::kScalar, Md5Pair::Kernel::kAvx512};

TEST(Md5PairTest, EveryKernelMatchesOpenSslForEveryLengthAndBlockSize) {
  std::mt19937_64 rng(7);
  std::string data(1500, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (auto kernel : kKernels) {
    if (!Md5Pair::Available(kernel)) continue;
    for (size_t len = 0; len <= 700; ++len) {
      for (size_t block : {size_t{64}, size_t{128}, size_t{192}, size_t{640}}) {
        Md5Pair pair(kernel);
        ExpectBlocksAndFile(pair, std::string_view(data.data() + 1, len), block, rng);
      }
    }
    // Long blocks: thousands of chunks per call into the kernel.
    std::string big((2 << 20) + 5, '\0');
    for (char& c : big) c = static_cast<char>(rng());
    Md5Pair pair(kernel);
    ExpectBlocksAndFile(pair, big, 256 << 10, rng, /*max_piece=*/300'000);
  }
}

// The tests above run each build the CPU can run and pass over the others; this one says so
// where the AVX-512VL build (chosen only where the CPU has it) goes untested, rather than
// letting it pass unseen.
TEST(Md5PairTest, TheAvx512BuildRunsWhereTheCpuHasIt) {
  if (!Md5Pair::Available(Md5Pair::Kernel::kAvx512)) {
    GTEST_SKIP() << "no AVX-512VL on this CPU: its MD5 build is untested here (and never chosen)";
  }
  Md5Pair pair(Md5Pair::Kernel::kAvx512);
  std::mt19937_64 rng(5);
  std::string data(100'000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  ExpectBlocksAndFile(pair, data, 4096, rng);
}

// kBest runs, for every pass width, one of the builds, and AVX-512VL only where the CPU has it.
TEST(Md5PairTest, ChoosesAnAvailableBuildForEveryPassWidth) {
  const Md5Pair::Choice& c = Md5Pair::Chosen();
  for (int n = 1; n <= Md5Pair::kMaxTogether; ++n) {
    ASSERT_NE(c.by_count[n], nullptr) << n;
    const std::string name = c.by_count[n];
    EXPECT_TRUE(name == "scalar" || name == "portable" || name == "avx512") << name;
    if (!Md5Pair::Available(Md5Pair::Kernel::kAvx512)) {
      EXPECT_NE(name, "avx512");
    }
  }
}

// Two, three and four pairs in one pass, in every build (three, in the SIMD builds: the third's
// bytes run twice, into a scratch state).
TEST(Md5PairTest, PairsInOnePassMatchOpenSsl) {
  std::mt19937_64 rng(11);
  std::vector<std::string> data(Md5Pair::kMaxTogether, std::string(70'000, '\0'));
  for (auto& d : data) {
    for (char& c : d) c = static_cast<char>(rng());
  }
  for (auto kernel : kKernels) {
    if (!Md5Pair::Available(kernel)) continue;
    SCOPED_TRACE(static_cast<int>(kernel));
    for (size_t count = 2; count <= data.size(); ++count) {
      SCOPED_TRACE(count);
      std::vector<Md5Pair> pairs(count, Md5Pair(kernel));
      auto together = [&](size_t off, size_t len) {
        std::vector<Md5Pair::Feed> f;
        for (size_t k = 0; k < count; ++k) f.push_back({&pairs[k], data[k].data() + off});
        return Md5Pair::UpdateTogether(f, len);
      };
      auto expect_blocks = [&](size_t from, size_t len) {
        for (size_t k = 0; k < count; ++k) {
          ASSERT_EQ(pairs[k].FinishBlock(), Md5::Of(std::string_view(data[k]).substr(from, len)));
        }
      };
      // Blocks of 4,096 bytes fed in pieces of 64 x 1..40 bytes (together), then a short tail
      // (separately: pairs with bytes pending are not passed together).
      size_t off = 0, block_start = 0;
      while (block_start < 65'536) {
        const size_t k = std::min<size_t>(64 * (rng() % 40 + 1), block_start + 4096 - off);
        ASSERT_TRUE(together(off, k));  // whole chunks, nothing pending: one pass
        off += k;
        if (off == block_start + 4096) {
          expect_blocks(block_start, 4096);
          block_start = off;
        }
      }
      EXPECT_FALSE(together(off, 100));
      expect_blocks(off, 100);
      for (size_t k = 0; k < count; ++k) {
        EXPECT_EQ(pairs[k].FinishFile(), Md5::Of(std::string_view(data[k]).substr(0, off + 100)));
      }
    }
  }
}

// Every kernel build computes the same digests, so pairs built for different kernels may share a
// pass (in the first one's build).
TEST(Md5PairTest, PairsOfDifferentKernelsShareAPass) {
  std::string x(1024, 'x'), y(1024, 'y');
  Md5Pair a(Md5Pair::Kernel::kPortable), b(Md5Pair::Kernel::kBest);
  const Md5Pair::Feed ab[] = {{&a, x.data()}, {&b, y.data()}};
  const Md5Pair::Feed ba[] = {{&b, y.data()}, {&a, x.data()}};
  EXPECT_TRUE(Md5Pair::UpdateTogether(ab, x.size()));
  EXPECT_TRUE(Md5Pair::UpdateTogether(ba, y.size()));
  EXPECT_EQ(a.FinishFile(), Md5::Of(x + x));
  EXPECT_EQ(b.FinishFile(), Md5::Of(y + y));
}

TEST(Md5PairTest, RefusesMoreThanMaxTogetherPairsInOnePass) {
  static_assert(Md5Pair::kMaxTogether == 4);
  std::vector<Md5Pair> p(5);
  const std::string x(64, 'x');
  std::vector<Md5Pair::Feed> feeds;
  for (auto& pair : p) feeds.push_back({&pair, x.data()});
  EXPECT_THROW(Md5Pair::UpdateTogether(feeds, x.size()), std::logic_error);
}

TEST(Md5PairTest, RefusesBytesAfterABlockThatEndedMidChunk) {
  Md5Pair pair;
  pair.Update("0123456789", 10);
  EXPECT_EQ(pair.FinishBlock(), Md5::Of("0123456789"));
  EXPECT_THROW(pair.Update("x", 1), std::logic_error);
  EXPECT_EQ(pair.FinishFile(), Md5::Of("0123456789"));
}

TEST(FileHasherTest, EveryBlockSize) {
  std::mt19937_64 rng(9);
  std::string data(100'000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  {
    FileHasher h(4096);  // the SIMD pair
    ExpectBlocksAndFile(h, data, 4096, rng);
  }
  {
    FileHasher h(1000);  // not a multiple of 64: two streams
    ExpectBlocksAndFile(h, data, 1000, rng);
  }
  {
    FileHasher h(0);  // one Put Blob: the file's MD5 only (in the pair with AVX-512VL)
    ExpectBlocksAndFile(h, data, 0, rng);
    FileHasher no_blocks(0);
    EXPECT_THROW(no_blocks.FinishBlock(), std::logic_error);
  }
}

// The service's hashes share passes only if FileHasher hands its large pieces to the process's
// combiner (a pair with blocks: on every CPU, with or without AVX-512).
TEST(FileHasherTest, LargePiecesGoThroughTheSharedCombiner) {
  const std::string data(Md5Pair::kCombineBytes, 'q');
  const uint64_t before = Md5Combiner::Shared().stats().passes;
  FileHasher h(Md5Pair::kCombineBytes);
  h.Update(data.data(), data.size());
  EXPECT_EQ(h.FinishBlock(), Md5::Of(data));
  EXPECT_EQ(h.FinishFile(), Md5::Of(data));
  EXPECT_EQ(Md5Combiner::Shared().stats().passes, before + 1);
}

}  // namespace
}  // namespace nbu
