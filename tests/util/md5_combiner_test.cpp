// Md5Combiner under several threads at once: every digest right, and pairs hashed together.
#include "util/md5_pair.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <optional>
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
  // Rounds until some pass advanced more than one pair; in practice the first round does.
  for (int round = 0; round < 20 && combiner.stats().pairs_passed == combiner.stats().passes;
       ++round) {
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
  EXPECT_GT(combiner.stats().pairs_passed, combiner.stats().passes);
}

// One long pass, and `n` pieces of kCombineBytes handed in (each on its own thread) while it runs;
// every digest checked. Returns how many pieces were done while a pass still ran: the long one,
// unless a piece waited for it to end (a piece that waited is run only once no pass runs).
size_t PiecesBehindALongPass(Md5Combiner& combiner, size_t n) {
  const std::string big(128 << 20, 'b');  // long enough for every piece to arrive meanwhile
  const std::string piece(Md5Pair::kCombineBytes, 'p');
  Md5Pair first(Md5Pair::Kernel::kBest, &combiner);
  std::vector<Md5Pair> pairs(n, Md5Pair(Md5Pair::Kernel::kBest, &combiner));
  std::atomic<size_t> done_beside_a_pass = 0;
  {
    std::jthread long_pass([&] { first.Update(big.data(), big.size()); });
    while (combiner.stats().passes == 0) std::this_thread::yield();
    std::vector<std::jthread> threads;
    for (auto& p : pairs) {
      threads.emplace_back([&] {
        p.Update(piece.data(), piece.size());
        if (combiner.stats().running > 0) ++done_beside_a_pass;
      });
    }
  }
  EXPECT_EQ(combiner.stats().active, n + 1);  // none has finished its file
  EXPECT_EQ(first.FinishFile(), Md5::Of(big));
  for (auto& p : pairs) EXPECT_EQ(p.FinishFile(), Md5::Of(piece));
  EXPECT_EQ(combiner.stats().active, 0U);
  return done_beside_a_pass;
}

// No more pairs active than passes may run: each gets a pass at once, beside the running one.
TEST(Md5CombinerTest, WhileCpusSufficeEachPairGetsAPassAtOnce) {
  Md5Combiner combiner(2);
  EXPECT_EQ(PiecesBehindALongPass(combiner, 1), 1U);
  EXPECT_EQ(combiner.stats().passes, 2U);
}

// More pairs active than passes may run: a lone one waits for company or for the running pass
// to end rather than take another CPU for itself. The first piece (two active) gets its own
// pass; the next two (three and four active) share one.
TEST(Md5CombinerTest, WhenPairsOutnumberCpusALonePairWaitsForCompany) {
  Md5Combiner combiner(2);
  EXPECT_EQ(PiecesBehindALongPass(combiner, 3), 3U);
  EXPECT_EQ(combiner.stats().passes, 3U);
  EXPECT_EQ(combiner.stats().pairs_passed, 4U);
}

// Pieces that wait share the next pass, up to Md5Pair::kMaxTogether of them.
TEST(Md5CombinerTest, UpToMaxTogetherWaitingPairsShareAPass) {
  Md5Combiner combiner(1);
  PiecesBehindALongPass(combiner, Md5Pair::kMaxTogether + 1);
  EXPECT_EQ(combiner.stats().passes, 3U);  // the long one, four together, the fifth
  EXPECT_EQ(combiner.stats().pairs_passed, 1U + Md5Pair::kMaxTogether + 1);
}

// A pair counts as active from its first piece through the combiner until it finishes its file
// or is destroyed; a move carries the count, a copy is not counted.
TEST(Md5CombinerTest, APairIsActiveFromItsFirstPieceToItsEnd) {
  Md5Combiner combiner(2);
  const std::string small(64, 'x'), piece(Md5Pair::kCombineBytes, 'a');
  std::optional<Md5Pair> pair(std::in_place, Md5Pair::Kernel::kBest, &combiner);
  pair->Update(small.data(), small.size());  // not through the combiner
  EXPECT_EQ(combiner.stats().active, 0U);
  pair->Update(piece.data(), piece.size());
  EXPECT_EQ(combiner.stats().active, 1U);
  Md5Pair copy = *pair;
  Md5Pair moved = std::move(*pair);
  EXPECT_EQ(combiner.stats().active, 1U);
  pair.reset();
  EXPECT_EQ(combiner.stats().active, 1U);  // `moved` holds the count
  copy.Update(piece.data(), piece.size());
  EXPECT_EQ(combiner.stats().active, 2U);
  EXPECT_EQ(copy.FinishFile(), Md5::Of(small + piece + piece));
  EXPECT_EQ(combiner.stats().active, 1U);
  { const Md5Pair gone = std::move(moved); }
  EXPECT_EQ(combiner.stats().active, 0U);
}

// A lone piece that would start the only pass while another pair is between two of its pieces
// waits for that pair's next piece, and both go in one pass.
TEST(Md5CombinerTest, ALonePieceWaitsForAnActivePairsNextPiece) {
  Md5Combiner combiner(2, std::chrono::seconds(60));  // the company comes long before that
  const std::string a1(Md5Pair::kCombineBytes, '1'), a2(Md5Pair::kCombineBytes, '2');
  const std::string b1(Md5Pair::kCombineBytes * 2, '3');
  Md5Pair a(Md5Pair::Kernel::kBest, &combiner), b(Md5Pair::Kernel::kBest, &combiner);
  a.Update(a1.data(), a1.size());  // alone: no other pair is active yet
  EXPECT_EQ(combiner.stats().company_waits, 0U);
  std::jthread other([&] { b.Update(b1.data(), b1.size()); });
  for (int i = 0; i < 5000 && combiner.stats().company_waits == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(combiner.stats().company_waits, 1U);
  EXPECT_EQ(combiner.stats().passes, 1U);  // b's piece is waiting, not hashed
  a.Update(a2.data(), a2.size());
  other.join();
  EXPECT_EQ(combiner.stats().passes, 2U);
  EXPECT_EQ(combiner.stats().pairs_passed, 3U);
  EXPECT_EQ(combiner.stats().vain_waits, 0U);
  EXPECT_EQ(a.FinishFile(), Md5::Of(a1 + a2));
  EXPECT_EQ(b.FinishFile(), Md5::Of(b1));
}

// A pair hashing alone never waits.
TEST(Md5CombinerTest, APairAloneNeverWaitsForCompany) {
  Md5Combiner combiner(2, std::chrono::seconds(60));
  Md5Pair pair(Md5Pair::Kernel::kBest, &combiner);
  const std::string piece(Md5Pair::kCombineBytes, 'q');
  for (int i = 0; i < 3; ++i) pair.Update(piece.data(), piece.size());
  EXPECT_EQ(combiner.stats().passes, 3U);
  EXPECT_EQ(combiner.stats().company_waits, 0U);
  EXPECT_EQ(pair.FinishFile(), Md5::Of(piece + piece + piece));
}

// A partner that stays active but sends nothing: after each vain wait the next 1, 3, 7, ...
// lone pieces go at once.
TEST(Md5CombinerTest, VainWaitsForCompanyBackOff) {
  Md5Combiner combiner(2, std::chrono::milliseconds(1));
  const std::string piece(Md5Pair::kCombineBytes, 'v');
  Md5Pair idle(Md5Pair::Kernel::kBest, &combiner), busy(Md5Pair::Kernel::kBest, &combiner);
  idle.Update(piece.data(), piece.size());  // active from here on, and never again
  std::string all;
  for (int i = 1; i <= 8; ++i) {
    busy.Update(piece.data(), piece.size());
    all += piece;
  }
  EXPECT_EQ(combiner.stats().company_waits, 3U);  // pieces 1, 3 and 7
  EXPECT_EQ(combiner.stats().vain_waits, 3U);
  EXPECT_EQ(combiner.stats().passes, 9U);
  EXPECT_EQ(busy.FinishFile(), Md5::Of(all));
  EXPECT_EQ(idle.FinishFile(), Md5::Of(piece));
}

// A patient piece waits for company even while the back-off after a vain wait would send it
// at once, and shares a pass with the piece that comes.
TEST(Md5CombinerTest, APatientPieceWaitsForCompanyDespiteTheBackOff) {
  Md5Combiner combiner(2, std::chrono::milliseconds(1), std::chrono::seconds(60));
  const std::string a1(Md5Pair::kCombineBytes, '1'), a2(Md5Pair::kCombineBytes, '2');
  const std::string b1(Md5Pair::kCombineBytes, '3'), b2(Md5Pair::kCombineBytes, '4');
  Md5Pair a(Md5Pair::Kernel::kBest, &combiner), b(Md5Pair::Kernel::kBest, &combiner);
  a.Update(a1.data(), a1.size());  // alone: no other pair is active yet
  b.Update(b1.data(), b1.size());  // lone beside `a`: a vain wait, so the next lone piece goes
  ASSERT_EQ(combiner.stats().vain_waits, 1U);
  std::jthread patient([&] { b.Update(b2.data(), b2.size(), /*patient=*/true); });
  for (int i = 0; i < 5000 && combiner.stats().patient_waits == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(combiner.stats().patient_waits, 1U);
  EXPECT_EQ(combiner.stats().passes, 2U);  // b2 is waiting, not hashed
  a.Update(a2.data(), a2.size());
  patient.join();
  EXPECT_EQ(combiner.stats().passes, 3U);
  EXPECT_EQ(combiner.stats().pairs_passed, 4U);
  EXPECT_EQ(a.FinishFile(), Md5::Of(a1 + a2));
  EXPECT_EQ(b.FinishFile(), Md5::Of(b1 + b2));
}

TEST(Md5CombinerTest, OnlyPiecesOfAtLeastCombineBytesGoThroughIt) {
  Md5Combiner combiner(1);
  Md5Pair pair(Md5Pair::Kernel::kBest, &combiner);
  const std::string bytes(Md5Pair::kCombineBytes - 64, 'z');
  pair.Update(bytes.data(), bytes.size());
  EXPECT_EQ(combiner.stats().passes, 0U);
  const std::string more(Md5Pair::kCombineBytes, 'y');
  pair.Update(more.data(), more.size());
  EXPECT_EQ(combiner.stats().passes, 1U);
  EXPECT_EQ(pair.FinishFile(), Md5::Of(bytes + more));
}

}  // namespace
}  // namespace nbu
