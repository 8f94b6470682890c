// Md5Combiner under several threads at once: every digest right, and pairs hashed together.
#include "util/md5_pair.h"

#include "support/process.h"

#include <gtest/gtest.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace nbu {
namespace {

using namespace std::chrono_literals;

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

// Bytes whose first page cannot be read until Release(): a thread that reads them stops at that
// page (its SIGSEGV is handled by waiting, at most 120 s) and goes on once they are released. So
// a pass over them is under way, and stays so, for as long as a test needs: no guess at how long
// a pass takes. One at a time.
class HeldBytes {
 public:
  HeldBytes(size_t size, char fill) : page_(static_cast<size_t>(::sysconf(_SC_PAGESIZE))) {
    size_ = size;
    mapped_ = (size + page_ - 1) / page_ * page_;
    void* m = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("HeldBytes: mmap failed");
    base_ = static_cast<char*>(m);
    std::memset(base_, fill, size_);
    ::sem_init(&released_, 0, 0);
    if (::mprotect(base_, page_, PROT_NONE) != 0) throw std::runtime_error("HeldBytes: mprotect");
    current_ = this;
    struct sigaction sa = {};
    sa.sa_sigaction = &HeldBytes::OnSegv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &previous_);
  }
  // Only once no thread reads them any more.
  ~HeldBytes() {
    Release();
    ::sigaction(SIGSEGV, &previous_, nullptr);
    current_ = nullptr;
    ::mprotect(base_, page_, PROT_READ | PROT_WRITE);
    ::munmap(base_, mapped_);
    ::sem_destroy(&released_);
  }
  HeldBytes(const HeldBytes&) = delete;
  HeldBytes& operator=(const HeldBytes&) = delete;

  std::string_view bytes() const { return {base_, size_}; }
  bool reached() const { return reached_.load(); }  // a reader waits at them
  void Release() {
    if (!posted_.exchange(true)) ::sem_post(&released_);
  }

 private:
  static void OnSegv(int /*sig*/, siginfo_t* info, void* /*context*/) {
    const int saved_errno = errno;
    HeldBytes* h = current_.load();
    const char* at = static_cast<const char*>(info->si_addr);
    if (h == nullptr || at < h->base_ || at >= h->base_ + h->page_) {
      // Not a read of the held page: back to the handler before, which the fault meets again.
      struct sigaction dfl = {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(SIGSEGV, h != nullptr ? &h->previous_ : &dfl, nullptr);
      errno = saved_errno;
      return;
    }
    h->reached_ = true;
    timespec deadline = {};
    ::clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 120;
    while (::sem_timedwait(&h->released_, &deadline) != 0 && errno == EINTR) {
    }
    ::mprotect(h->base_, h->page_, PROT_READ | PROT_WRITE);  // the read is repeated, and succeeds
    errno = saved_errno;
  }

  static inline std::atomic<HeldBytes*> current_{nullptr};
  const size_t page_;
  size_t size_ = 0;
  size_t mapped_ = 0;
  char* base_ = nullptr;
  sem_t released_;
  std::atomic<bool> reached_{false};
  std::atomic<bool> posted_{false};
  struct sigaction previous_ = {};
};

// A long pass is started and held under way (HeldBytes) while `n` pieces of kCombineBytes are
// handed in, each on its own thread. It is let go once every piece has arrived (n + 1 pairs
// active), no other pass runs, and `done_while_held` pieces are done: those the combiner runs
// beside the long pass; the rest wait for it to end. Both waits are bounded, and fail the test.
// Every digest is checked.
void PiecesBesideAHeldPass(Md5Combiner& combiner, size_t n, size_t done_while_held) {
  HeldBytes big(1 << 20, 'b');
  const std::string piece(Md5Pair::kCombineBytes, 'p');
  Md5Pair first(Md5Pair::Kernel::kBest, &combiner);
  std::vector<Md5Pair> pairs(n, Md5Pair(Md5Pair::Kernel::kBest, &combiner));
  std::atomic<size_t> done = 0;
  {
    std::vector<std::jthread> threads;
    struct LetGo {  // before the threads are joined, on every way out
      HeldBytes& held;
      ~LetGo() { held.Release(); }
    } let_go{big};
    threads.emplace_back([&] { first.Update(big.bytes().data(), big.bytes().size()); });
    ASSERT_TRUE(test::WaitFor([&] { return big.reached(); }, 30s)) << "the long pass never read";
    const auto at_start = combiner.stats();
    ASSERT_EQ(at_start.passes, 1U);
    ASSERT_EQ(at_start.running, 1U) << "the long pass is not held in its pass";
    for (auto& p : pairs) {
      threads.emplace_back([&] {
        p.Update(piece.data(), piece.size());
        ++done;
      });
    }
    Md5Combiner::Stats held;
    ASSERT_TRUE(test::WaitFor(
        [&] {
          held = combiner.stats();
          return held.active == n + 1 && held.running == 1 && done == done_while_held;
        },
        30s))
        << "while the long pass is held: " << held.active << " pairs active (want " << n + 1
        << "), " << held.running << " passes running (want 1), " << done.load()
        << " pieces done (want " << done_while_held << ")";
  }
  EXPECT_EQ(done, n);
  EXPECT_EQ(combiner.stats().active, n + 1);  // none has finished its file
  EXPECT_EQ(first.FinishFile(), Md5::Of(big.bytes()));
  for (auto& p : pairs) EXPECT_EQ(p.FinishFile(), Md5::Of(piece));
  EXPECT_EQ(combiner.stats().active, 0U);
}

// No more pairs active than passes may run: each gets a pass at once, beside the running one.
TEST(Md5CombinerTest, WhileCpusSufficeEachPairGetsAPassAtOnce) {
  Md5Combiner combiner(2);
  ASSERT_NO_FATAL_FAILURE(PiecesBesideAHeldPass(combiner, 1, /*done_while_held=*/1));
  EXPECT_EQ(combiner.stats().passes, 2U);
}

// More pairs active than passes may run: a lone one waits for company or for the running pass
// to end rather than take another CPU for itself. The first piece (two active) gets its own
// pass; the next two (three and four active) share one. All beside the long pass.
TEST(Md5CombinerTest, WhenPairsOutnumberCpusALonePairWaitsForCompany) {
  Md5Combiner combiner(2);
  ASSERT_NO_FATAL_FAILURE(PiecesBesideAHeldPass(combiner, 3, /*done_while_held=*/3));
  EXPECT_EQ(combiner.stats().passes, 3U);
  EXPECT_EQ(combiner.stats().pairs_passed, 4U);
}

// Pieces that wait share the next pass, up to Md5Pair::kMaxTogether of them.
TEST(Md5CombinerTest, UpToMaxTogetherWaitingPairsShareAPass) {
  Md5Combiner combiner(1);
  ASSERT_NO_FATAL_FAILURE(
      PiecesBesideAHeldPass(combiner, Md5Pair::kMaxTogether + 1, /*done_while_held=*/0));
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
