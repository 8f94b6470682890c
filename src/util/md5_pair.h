// Two MD5 streams over one byte stream: the whole file's, and one restarted at each block
// boundary. MD5 is a chain of dependent 32-bit steps, so one stream leaves most of a core's
// SIMD width idle; here both streams' states sit in lanes of the same vector registers and every
// 64-byte chunk advances both in one pass over the 64 steps. Block boundaries must fall on
// multiples of 64 bytes of the file (block sizes are), except at the end of the file.
#pragma once

#include "util/crypto.h"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>

namespace nbu {

// The MD5 state of the four lanes: [word][lane], words a, b, c, d.
using Md5Lanes = uint32_t[4][4];

class Md5Combiner;
struct Md5Kernels;  // one build of the passes over one pair and over two to four

class Md5Pair {
 public:
  // The builds of the passes: portable (GCC vectors: SSE2 on x86-64), scalar (general-purpose
  // registers, the streams interleaved), AVX-512VL (where the CPU has it: Available()). kBest:
  // for each pass width, the build that was fastest here (Chosen()).
  enum class Kernel { kBest, kPortable, kScalar, kAvx512 };
  // Updates of at least kCombineBytes go through `combiner` (nullptr: always on this thread).
  explicit Md5Pair(Kernel kernel = Kernel::kBest, Md5Combiner* combiner = nullptr);
  static constexpr size_t kCombineBytes = 256 << 10;
  static bool Available(Kernel kernel);
  // At most this many pairs advance in one pass (eight lanes).
  static constexpr int kMaxTogether = 4;
  // What kBest runs, timed once per process on first use: by_count[1] the build of a lone
  // pair's pass, by_count[2..kMaxTogether] that of a shared one; and whether a file without
  // blocks hashes faster as a pair's lane 0 than in OpenSSL.
  struct Choice {
    const char* by_count[kMaxTogether + 1] = {};
    bool file_alone_in_pair = false;
  };
  static const Choice& Chosen();
  // Feeds the bytes to both streams. `patient`: the caller can spare a moment (what it hashes
  // for is ahead of what waits on it), so a piece may wait longer for company (Md5Combiner).
  void Update(const void* data, size_t len, bool patient = false);
  struct Feed {
    Md5Pair* pair;
    const void* data;
  };
  // Feeds `len` bytes to each of up to kMaxTogether pairs (each its own `data`) in one pass over
  // the chunks, in the first pair's kernel build, as the combiner does; separately unless none
  // has bytes pending and `len` is a multiple of 64. True when they went in one pass.
  static bool UpdateTogether(std::span<const Feed> feeds, size_t len);
  // The MD5 of the bytes since the last block boundary; the block stream restarts. Between two
  // boundaries the file must have advanced by a multiple of 64 bytes, unless no more bytes come.
  Md5Digest FinishBlock();
  // The MD5 of every byte fed. Call once, last.
  Md5Digest FinishFile();

 private:
  friend class Md5Combiner;
  const Md5Kernels* kernels_;
  Md5Combiner* combiner_;
  // Lane 0 is the file, lane 1 the block; lanes 2 and 3 idle.
  Md5Lanes state_;
  unsigned char pending_[64] = {};
  size_t pending_len_ = 0;
  uint64_t file_len_ = 0;
  uint64_t block_len_ = 0;
  bool tail_seen_ = false;  // a block ended inside a chunk: no more bytes may come

  // Counts the pair among a combiner's active pairs (those that have handed it a piece and not
  // finished) while it holds a combiner. A copy is not counted; a move carries the count along.
  class Active {
   public:
    Active() = default;
    Active(const Active& /*other*/) noexcept {}
    Active& operator=(const Active& other) noexcept;
    Active(Active&& other) noexcept;
    Active& operator=(Active&& other) noexcept;
    ~Active() { Leave(); }
    void Leave() noexcept;  // out of the count; nothing when not in it

   private:
    friend class Md5Combiner;
    Md5Combiner* combiner_ = nullptr;  // counted there
  };
  Active active_;  // from its first piece through combiner_ to FinishFile

  void Compress(const unsigned char* chunks, size_t n, bool patient = false);
  // n chunks of each pair's data in one pass (count: 2..kMaxTogether), in pairs[0]'s build.
  static void PassTogether(Md5Pair* const* pairs, const unsigned char* const* data, int count,
                           size_t n);
  // Pads `lane` and returns its digest; the other lane's state is left as it was.
  Md5Digest Finish(int lane, uint64_t len);
};

// Hashes the chunks that several threads' Md5Pairs are given at once, in shared passes. One
// pair's MD5s are a chain of dependent steps that leaves most of a core idle: a pass over two
// pairs (four lanes) or four (eight) costs little more than a pass over one (`make bench-micro`,
// AVX-512VL, 1 MiB each: one pair 0.94-0.95 GB/s, two 1.69-1.70, four 2.79-2.86). At most
// `threads` passes run at once, each over up to Md5Pair::kMaxTogether waiting pairs, the oldest
// first. A pair is active from its first piece through the combiner until its file's end.
// - While no more pairs are active than passes may run, a pair gets a pass of its own at once,
//   beside a running one.
// - When more are active, the CPUs are contended and sharing pays: a pass starts for a lone pair
//   only when no other runs, so the pair waits for company or for that pass to end.
// - A lone pair that would start the only pass while another pair is active (between two of its
//   pieces: a file's next piece follows its read) waits up to `company_wait` for that company.
//   A wait in vain makes the next lone pairs go at once: 1, then 3, 7, ... up to 63 of them
//   after consecutive vain waits, so a partner that stalls (its uploads throttled, say) costs at
//   most one wait per 64 pieces.
// - A patient lone pair (its caller is ahead of what waits on it: Md5Pair::Update) waits up to
//   `patient_wait` instead, whatever the back-off. Files uploaded to slow storage copy their
//   blocks in bursts as slots of their staging rings free, rarely at the same moment as another
//   file; while a copied block already waits for a sender the burst can wait for company.
// Bytes stay where they are: the thread that runs a pass hashes them in place.
class Md5Combiner {
 public:
  static constexpr std::chrono::microseconds kCompanyWait{2000};
  static constexpr std::chrono::microseconds kPatientWait{20000};
  explicit Md5Combiner(unsigned threads, std::chrono::microseconds company_wait = kCompanyWait,
                       std::chrono::microseconds patient_wait = kPatientWait);
  // The process's: one pass per CPU it can use (UsableCpus()).
  static Md5Combiner& Shared();
  void Compress(Md5Pair& pair, const unsigned char* chunks, size_t n, bool patient = false);
  struct Stats {
    uint64_t passes = 0;         // passes run here
    uint64_t pairs_passed = 0;   // pairs advanced by them (passes when none was shared)
    unsigned active = 0;         // pairs counted active now
    unsigned running = 0;        // passes under way now
    uint64_t company_waits = 0;  // lone pairs that waited for company
    uint64_t vain_waits = 0;     // ... and had none within company_wait
    uint64_t patient_waits = 0;  // patient lone pairs that waited for company
  };
  Stats stats() const;  // one consistent snapshot

 private:
  struct Job {
    Md5Pair* pair;
    const unsigned char* chunks;
    size_t n;
    bool done = false;
  };
  const unsigned threads_;
  const std::chrono::microseconds company_wait_;
  const std::chrono::microseconds patient_wait_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;         // waiting for a pass, oldest first
  Stats stats_;                    // stats_.running and stats_.active steer the passes
  unsigned awaiting_company_ = 0;  // lone pairs waiting for company now
  unsigned vain_streak_ = 0;       // consecutive vain waits
  unsigned skip_waits_ = 0;        // lone pairs that go at once before the next wait

  // `mine` would start the only pass alone while another pair is active.
  bool LoneBesideAnActivePair(const Job& mine) const;

  static void Run(Job* const* jobs, int count);  // in one pass
  friend class Md5Pair::Active;
  void Leave();
};

// The whole file's MD5 and each block's, from one read of the bytes: an Md5Pair when the block
// size is a multiple of 64 (it always is unless APP_AZURE_BLOCK_SIZE says otherwise), two
// OpenSSL streams if not. Without blocks, the file's alone: in an Md5Pair where that was timed
// faster (Md5Pair::Chosen()), else OpenSSL. Its pairs hash large pieces through
// Md5Combiner::Shared(). One per file.
class FileHasher {
 public:
  FileHasher() = default;                    // no streams yet: assign a FileHasher(block_size)
  explicit FileHasher(uint64_t block_size);  // 0: the file is not cut into blocks
  void Update(const void* data, size_t len, bool patient = false);  // patient: see Md5Pair
  Md5Digest FinishBlock();  // the current block's MD5; the next block starts after it
  Md5Digest FinishFile();   // once, last

 private:
  bool blocks_ = false;
  std::optional<Md5Pair> pair_;
  std::optional<Md5> whole_;  // without pair_
  std::optional<Md5> block_;  // without pair_, when there are blocks
};

}  // namespace nbu
