// Md5Combiner under several threads at once: every digest right, and pairs hashed together.
#include "util/md5_pair.h"

#include <gtest/gtest.h>

#include <barrier>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace nbu {
namespace {

// One file per thread: 1 MiB blocks fed in 512 KiB pieces (each over Md5Pair::kCombineBytes,
// so each goes through the combiner), then a tail shorter than a chunk.
struct File {
  std::string bytes;
  std::vector<Md5Digest> blocks;
  Md5Digest whole{};
};

void Hash(File& f, Md5Combiner& combiner) {
  constexpr size_t kBlock = 1 << 20, kPiece = 512 << 10;
  Md5Pair pair(Md5Pair::Kernel::kBest, &combiner);
  for (size_t off = 0; off < f.bytes.size(); off += kBlock) {
    const size_t end = std::min(f.bytes.size(), off + kBlock);
    for (size_t at = off; at < end; at += kPiece) {
      pair.Update(f.bytes.data() + at, std::min(kPiece, end - at));
    }
    f.blocks.push_back(pair.FinishBlock());
  }
  f.whole = pair.FinishFile();
}

TEST(Md5CombinerTest, ThreadsHashingAtOnceGetTheirOwnDigestsAndShareSomePasses) {
  constexpr int kThreads = 4;
  Md5Combiner combiner(1);  // one pass at a time: the others queue up and pair
  std::mt19937_64 rng(5);
  std::vector<File> files(kThreads);
  for (size_t t = 0; t < files.size(); ++t) {
    files[t].bytes.resize((3 << 20) + 17 * t + 5);
    for (char& c : files[t].bytes) c = static_cast<char>(rng());
  }
  // Rounds until some pass advanced two pairs; in practice the first round does.
  for (int round = 0; round < 20 && combiner.passes_together() == 0; ++round) {
    std::barrier start(kThreads);
    std::vector<std::jthread> threads;
    for (auto& f : files) {
      f.blocks.clear();
      threads.emplace_back([&] {
        start.arrive_and_wait();
        Hash(f, combiner);
      });
    }
    threads.clear();
    for (const auto& f : files) {
      ASSERT_EQ(f.whole, Md5::Of(f.bytes));
      ASSERT_EQ(f.blocks.size(), 4U);
      for (size_t i = 0; i < f.blocks.size(); ++i) {
        ASSERT_EQ(f.blocks[i], Md5::Of(std::string_view(f.bytes).substr(i << 20, 1 << 20)));
      }
    }
  }
  EXPECT_GT(combiner.passes_together(), 0U);
}

TEST(Md5CombinerTest, OnlyPiecesOfAtLeastCombineBytesGoThroughIt) {
  Md5Combiner combiner(1);
  Md5Pair pair(Md5Pair::Kernel::kBest, &combiner);
  const std::string bytes(Md5Pair::kCombineBytes - 64, 'z');
  pair.Update(bytes.data(), bytes.size());
  EXPECT_EQ(combiner.passes(), 0U);
  const std::string more(Md5Pair::kCombineBytes, 'y');
  pair.Update(more.data(), more.size());
  EXPECT_EQ(combiner.passes(), 1U);
  EXPECT_EQ(pair.FinishFile(), Md5::Of(bytes + more));
}

}  // namespace
}  // namespace nbu
