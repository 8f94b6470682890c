#include "util/md5_pair.h"

#include "util/cpus.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace nbu {
namespace {

static_assert(std::endian::native == std::endian::little, "MD5 words are little-endian loads");

// Four 32-bit lanes (SSE2 on x86-64 through GCC's vector extensions), and eight for three or four
// pairs at once (two SSE2 registers, or one AVX register in the AVX-512VL build).
using V = uint32_t __attribute__((vector_size(16)));
using V8 = uint32_t __attribute__((vector_size(32)));
// Every function taking or returning a V8 is forced inline, so no call passes one: GCC's note
// that such calls change ABI with AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// RFC 1321: K[i] = floor(|sin(i + 1)| * 2^32).
constexpr uint32_t kK[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
constexpr uint32_t kInit[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};

// Everything the kernel calls is forced inline, so that the builds below (one with a target
// attribute) hold the whole kernel, and so that an unoptimised build stays usable.
#define NBU_INLINE __attribute__((always_inline)) inline

template <int S, typename Vec>
NBU_INLINE Vec Rotl(Vec x) {
  return (x << S) | (x >> (32 - S));
}
struct F {
  template <typename Vec>
  NBU_INLINE static Vec Of(Vec b, Vec c, Vec d) {
    return ((c ^ d) & b) ^ d;
  }
};
struct G {
  template <typename Vec>
  NBU_INLINE static Vec Of(Vec b, Vec c, Vec d) {
    return ((b ^ c) & d) ^ c;
  }
};
struct H {
  template <typename Vec>
  NBU_INLINE static Vec Of(Vec b, Vec c, Vec d) {
    return b ^ c ^ d;
  }
};
struct I {
  template <typename Vec>
  NBU_INLINE static Vec Of(Vec b, Vec c, Vec d) {
    return c ^ (b | ~d);
  }
};

// One MD5 step: a = b + rotl(a + fn(b, c, d) + w[g] + K[i], s).
template <typename Fn, int S, typename Vec>
NBU_INLINE Vec Step(Vec a, Vec b, Vec c, Vec d, Vec wk) {
  return Rotl<S>(a + Fn::Of(b, c, d) + wk) + b;
}

// The message words of one chunk for every lane, plus K[i]. One pair reads the same words in
// every lane; several pairs (lanes 2k and 2k + 1 the k-th) each read their own chunk, from p[k].
struct OneChunk {
  using Vec = V;
  uint32_t m[16];
  NBU_INLINE void Load(const unsigned char* const* p, size_t at) { std::memcpy(m, p[0] + at, 64); }
  NBU_INLINE Vec Wk(int g, int i) const { return Vec{} + (m[g] + kK[i]); }
};
// Two pairs: lanes 0-1 the first, 2-3 the second. Built per step from the words and K[i].
struct TwoChunks {
  using Vec = V;
  static constexpr size_t kPairs = 2;
  uint32_t m[2][16];
  NBU_INLINE void Load(const unsigned char* const* p, size_t at) {
    std::memcpy(m[0], p[0] + at, 64);
    std::memcpy(m[1], p[1] + at, 64);
  }
  NBU_INLINE Vec Wk(int g, int i) const {
    const uint32_t x = m[0][g] + kK[i], y = m[1][g] + kK[i];
    return Vec{x, x, y, y};
  }
};
// Four pairs (eight lanes): word g of the k-th pair's chunk in lanes 2k and 2k + 1 of w[g],
// gathered once per chunk from whole-register loads by shuffles (in the AVX-512VL build one
// two-source permute per word). Built per step from scalars as TwoChunks builds its four lanes,
// the pass ran at 1.53 GB/s instead of 2.79 (a variant measured with `make bench-micro`); for
// two pairs, shuffles measured no faster than TwoChunks (1.41-1.46 against 1.55-1.70 GB/s).
struct FourChunks {
  using Vec = V8;
  static constexpr size_t kPairs = 4;
  Vec w[16];
  NBU_INLINE void Load(const unsigned char* const* p, size_t at) {
    for (size_t j = 0; j < 4; ++j) Spread(p, at + 16 * j, &w[4 * j]);
  }
  NBU_INLINE Vec Wk(int g, int i) const { return w[g] + kK[i]; }

 private:
  // Words 4j..4j+3 of each pair's chunk (the 16 bytes at `at`) into out[0..3].
  NBU_INLINE static void Spread(const unsigned char* const* p, size_t at, Vec* out) {
    V a, b, c, d;
    std::memcpy(&a, p[0] + at, 16);
    std::memcpy(&b, p[1] + at, 16);
    std::memcpy(&c, p[2] + at, 16);
    std::memcpy(&d, p[3] + at, 16);
    const V8 ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
    const V8 cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7);
    out[0] = __builtin_shufflevector(ab, cd, 0, 0, 4, 4, 8, 8, 12, 12);
    out[1] = __builtin_shufflevector(ab, cd, 1, 1, 5, 5, 9, 9, 13, 13);
    out[2] = __builtin_shufflevector(ab, cd, 2, 2, 6, 6, 10, 10, 14, 14);
    out[3] = __builtin_shufflevector(ab, cd, 3, 3, 7, 7, 11, 11, 15, 15);
  }
};

// The 64 steps over n chunks (the k-th pair's at p[k]) for every lane. Inlined into the builds
// below.
template <typename Chunk, typename Vec = typename Chunk::Vec>
NBU_INLINE void CompressChunks(Vec& a, Vec& b, Vec& c, Vec& d, const unsigned char* const* p,
                               size_t n) {
  Chunk m;
  for (size_t at = 0; at < 64 * n; at += 64) {
    m.Load(p, at);
    const Vec a0 = a, b0 = b, c0 = c, d0 = d;
    // clang-format off
    a = Step<F, 7>(a, b, c, d, m.Wk(0, 0));    d = Step<F, 12>(d, a, b, c, m.Wk(1, 1));
    c = Step<F, 17>(c, d, a, b, m.Wk(2, 2));   b = Step<F, 22>(b, c, d, a, m.Wk(3, 3));
    a = Step<F, 7>(a, b, c, d, m.Wk(4, 4));    d = Step<F, 12>(d, a, b, c, m.Wk(5, 5));
    c = Step<F, 17>(c, d, a, b, m.Wk(6, 6));   b = Step<F, 22>(b, c, d, a, m.Wk(7, 7));
    a = Step<F, 7>(a, b, c, d, m.Wk(8, 8));    d = Step<F, 12>(d, a, b, c, m.Wk(9, 9));
    c = Step<F, 17>(c, d, a, b, m.Wk(10, 10)); b = Step<F, 22>(b, c, d, a, m.Wk(11, 11));
    a = Step<F, 7>(a, b, c, d, m.Wk(12, 12));  d = Step<F, 12>(d, a, b, c, m.Wk(13, 13));
    c = Step<F, 17>(c, d, a, b, m.Wk(14, 14)); b = Step<F, 22>(b, c, d, a, m.Wk(15, 15));

    a = Step<G, 5>(a, b, c, d, m.Wk(1, 16));   d = Step<G, 9>(d, a, b, c, m.Wk(6, 17));
    c = Step<G, 14>(c, d, a, b, m.Wk(11, 18)); b = Step<G, 20>(b, c, d, a, m.Wk(0, 19));
    a = Step<G, 5>(a, b, c, d, m.Wk(5, 20));   d = Step<G, 9>(d, a, b, c, m.Wk(10, 21));
    c = Step<G, 14>(c, d, a, b, m.Wk(15, 22)); b = Step<G, 20>(b, c, d, a, m.Wk(4, 23));
    a = Step<G, 5>(a, b, c, d, m.Wk(9, 24));   d = Step<G, 9>(d, a, b, c, m.Wk(14, 25));
    c = Step<G, 14>(c, d, a, b, m.Wk(3, 26));  b = Step<G, 20>(b, c, d, a, m.Wk(8, 27));
    a = Step<G, 5>(a, b, c, d, m.Wk(13, 28));  d = Step<G, 9>(d, a, b, c, m.Wk(2, 29));
    c = Step<G, 14>(c, d, a, b, m.Wk(7, 30));  b = Step<G, 20>(b, c, d, a, m.Wk(12, 31));

    a = Step<H, 4>(a, b, c, d, m.Wk(5, 32));   d = Step<H, 11>(d, a, b, c, m.Wk(8, 33));
    c = Step<H, 16>(c, d, a, b, m.Wk(11, 34)); b = Step<H, 23>(b, c, d, a, m.Wk(14, 35));
    a = Step<H, 4>(a, b, c, d, m.Wk(1, 36));   d = Step<H, 11>(d, a, b, c, m.Wk(4, 37));
    c = Step<H, 16>(c, d, a, b, m.Wk(7, 38));  b = Step<H, 23>(b, c, d, a, m.Wk(10, 39));
    a = Step<H, 4>(a, b, c, d, m.Wk(13, 40));  d = Step<H, 11>(d, a, b, c, m.Wk(0, 41));
    c = Step<H, 16>(c, d, a, b, m.Wk(3, 42));  b = Step<H, 23>(b, c, d, a, m.Wk(6, 43));
    a = Step<H, 4>(a, b, c, d, m.Wk(9, 44));   d = Step<H, 11>(d, a, b, c, m.Wk(12, 45));
    c = Step<H, 16>(c, d, a, b, m.Wk(15, 46)); b = Step<H, 23>(b, c, d, a, m.Wk(2, 47));

    a = Step<I, 6>(a, b, c, d, m.Wk(0, 48));   d = Step<I, 10>(d, a, b, c, m.Wk(7, 49));
    c = Step<I, 15>(c, d, a, b, m.Wk(14, 50)); b = Step<I, 21>(b, c, d, a, m.Wk(5, 51));
    a = Step<I, 6>(a, b, c, d, m.Wk(12, 52));  d = Step<I, 10>(d, a, b, c, m.Wk(3, 53));
    c = Step<I, 15>(c, d, a, b, m.Wk(10, 54)); b = Step<I, 21>(b, c, d, a, m.Wk(1, 55));
    a = Step<I, 6>(a, b, c, d, m.Wk(8, 56));   d = Step<I, 10>(d, a, b, c, m.Wk(15, 57));
    c = Step<I, 15>(c, d, a, b, m.Wk(6, 58));  b = Step<I, 21>(b, c, d, a, m.Wk(13, 59));
    a = Step<I, 6>(a, b, c, d, m.Wk(4, 60));   d = Step<I, 10>(d, a, b, c, m.Wk(11, 61));
    c = Step<I, 15>(c, d, a, b, m.Wk(2, 62));  b = Step<I, 21>(b, c, d, a, m.Wk(9, 63));
    // clang-format on
    a += a0;
    b += b0;
    c += c0;
    d += d0;
  }
}

// One pair: its four lanes as they are.
NBU_INLINE void CompressOne(Md5Lanes& s, const unsigned char* p, size_t n) {
  V v[4];
  std::memcpy(v, s, sizeof v);
  CompressChunks<OneChunk>(v[0], v[1], v[2], v[3], &p, n);
  std::memcpy(s, v, sizeof v);
}

// kPairs pairs: lanes 0-1 of each (file and block) side by side in one register per word.
template <typename Chunk, size_t kPairs = Chunk::kPairs>
NBU_INLINE void CompressPairs(Md5Lanes* const* s, const unsigned char* const* p, size_t n) {
  typename Chunk::Vec v[4];
  for (int w = 0; w < 4; ++w) {
    for (size_t k = 0; k < kPairs; ++k) {
      v[w][2 * k] = (*s[k])[w][0];
      v[w][2 * k + 1] = (*s[k])[w][1];
    }
  }
  CompressChunks<Chunk>(v[0], v[1], v[2], v[3], p, n);
  for (int w = 0; w < 4; ++w) {
    for (size_t k = 0; k < kPairs; ++k) {
      (*s[k])[w][0] = v[w][2 * k];
      (*s[k])[w][1] = v[w][2 * k + 1];
    }
  }
}

// Two to four pairs (Md5Pair::kMaxTogether) in one pass.
NBU_INLINE void CompressMany(Md5Lanes* const* s, const unsigned char* const* p, int count,
                             size_t n) {
  if (count == 2) return CompressPairs<TwoChunks>(s, p, n);
  if (count == 4) return CompressPairs<FourChunks>(s, p, n);
  // Three: the third pair's bytes again in the fourth pair's lanes, into a state thrown away.
  Md5Lanes scratch = {};
  Md5Lanes* const s4[4] = {s[0], s[1], s[2], &scratch};
  const unsigned char* const p4[4] = {p[0], p[1], p[2], p[2]};
  CompressPairs<FourChunks>(s4, p4, n);
}

void CompressDefault(Md5Lanes& s, const unsigned char* p, size_t n) { CompressOne(s, p, n); }
void CompressManyDefault(Md5Lanes* const* s, const unsigned char* const* p, int count, size_t n) {
  CompressMany(s, p, count, n);
}

#if defined(__x86_64__)
// With AVX-512VL the rotations are single instructions (vprold) and the boolean functions fuse
// (vpternlogd): 0.42 -> 0.27 s per 256 MiB for the pair (two OpenSSL MD5 passes: 0.62 s), from
// `make bench-micro` on the 2-core VM of bench/RESULTS.md.
__attribute__((target("avx512f,avx512vl"))) void CompressAvx512(Md5Lanes& s, const unsigned char* p,
                                                                size_t n) {
  CompressOne(s, p, n);
}
__attribute__((target("avx512f,avx512vl"))) void CompressManyAvx512(Md5Lanes* const* s,
                                                                    const unsigned char* const* p,
                                                                    int count, size_t n) {
  CompressMany(s, p, count, n);
}

bool HaveAvx512() {
  static const bool have = __builtin_cpu_supports("avx512vl") != 0;
  return have;
}
#endif

}  // namespace

struct Md5Kernels {
  void (*one)(Md5Lanes&, const unsigned char*, size_t);
  // count (2..Md5Pair::kMaxTogether) pairs' states s[k], each advanced over n chunks at p[k]
  void (*many)(Md5Lanes* const* s, const unsigned char* const* p, int count, size_t n);
};

namespace {
constexpr Md5Kernels kPortableKernels{CompressDefault, CompressManyDefault};
#if defined(__x86_64__)
constexpr Md5Kernels kAvx512Kernels{CompressAvx512, CompressManyAvx512};
#endif
}  // namespace

Md5Pair::Md5Pair(Kernel kernel, Md5Combiner* combiner)
    : kernels_(&kPortableKernels), combiner_(combiner) {
#if defined(__x86_64__)
  if (kernel == Kernel::kBest && HaveAvx512()) kernels_ = &kAvx512Kernels;
#else
  (void)kernel;
#endif
  for (int w = 0; w < 4; ++w) {
    for (int lane = 0; lane < 4; ++lane) state_[w][lane] = kInit[w];
  }
}

void Md5Pair::Compress(const unsigned char* chunks, size_t n) {
  if (n == 0) return;
  if (combiner_ != nullptr && n * 64 >= kCombineBytes) return combiner_->Compress(*this, chunks, n);
  kernels_->one(state_, chunks, n);
}

void Md5Pair::Update(const void* data, size_t len) {
  if (len == 0) return;
  if (tail_seen_) throw std::logic_error("Md5Pair: bytes after a block that ended mid-chunk");
  const auto* p = static_cast<const unsigned char*>(data);
  file_len_ += len;
  block_len_ += len;
  if (pending_len_ > 0) {
    const size_t take = std::min(len, sizeof pending_ - pending_len_);
    std::memcpy(pending_ + pending_len_, p, take);
    pending_len_ += take;
    p += take;
    len -= take;
    if (pending_len_ < sizeof pending_) return;
    Compress(pending_, 1);
    pending_len_ = 0;
  }
  Compress(p, len / 64);
  pending_len_ = len % 64;
  std::memcpy(pending_, p + len - pending_len_, pending_len_);
}

bool Md5Pair::UpdateTogether(std::span<const Feed> feeds, size_t len) {
  if (feeds.size() > kMaxTogether) throw std::logic_error("Md5Pair: too many pairs together");
  Md5Pair* pairs[kMaxTogether];
  const unsigned char* data[kMaxTogether];
  int count = 0;
  bool together = len % 64 == 0;
  for (const Feed& f : feeds) {
    together = together && f.pair->pending_len_ == 0 && !f.pair->tail_seen_;
    pairs[count] = f.pair;
    data[count++] = static_cast<const unsigned char*>(f.data);
  }
  if (!together || count < 2) {
    for (int k = 0; k < count; ++k) pairs[k]->Update(data[k], len);
    return false;
  }
  for (int k = 0; k < count; ++k) {
    pairs[k]->file_len_ += len;
    pairs[k]->block_len_ += len;
  }
  PassTogether(pairs, data, count, len / 64);
  return true;
}

void Md5Pair::PassTogether(Md5Pair* const* pairs, const unsigned char* const* data, int count,
                           size_t n) {
  if (n == 0) return;
  Md5Lanes* states[kMaxTogether];
  for (int k = 0; k < count; ++k) states[k] = &pairs[k]->state_;
  pairs[0]->kernels_->many(states, data, count, n);
}

Md5Digest Md5Pair::Finish(int lane, uint64_t len) {
  uint32_t saved[4][4];
  std::memcpy(saved, state_, sizeof saved);
  // The standard padding after the pending bytes: 0x80, zeros, the bit length (little-endian).
  unsigned char tail[128] = {};
  std::memcpy(tail, pending_, pending_len_);
  tail[pending_len_] = 0x80;
  const size_t total = pending_len_ + 9 <= 64 ? 64 : 128;
  const uint64_t bits = len * 8;
  std::memcpy(tail + total - 8, &bits, 8);
  Compress(tail, total / 64);
  Md5Digest out{};
  for (size_t w = 0; w < 4; ++w) {
    std::memcpy(out.data() + 4 * w, &state_[w][lane], 4);
    for (int other = 0; other < 4; ++other) {
      if (other != lane) state_[w][other] = saved[w][other];
    }
  }
  return out;
}

Md5Digest Md5Pair::FinishBlock() {
  const Md5Digest d = Finish(1, block_len_);
  for (int w = 0; w < 4; ++w) state_[w][1] = kInit[w];
  block_len_ = 0;
  if (pending_len_ > 0) tail_seen_ = true;  // the next block would start inside a chunk
  return d;
}

Md5Digest Md5Pair::FinishFile() {
  const Md5Digest d = Finish(0, file_len_);  // padding: under kCombineBytes, never combined
  active_.Leave();
  return d;
}

Md5Pair::Active& Md5Pair::Active::operator=(const Active& other) noexcept {
  if (this != &other) Leave();
  return *this;
}

Md5Pair::Active::Active(Active&& other) noexcept
    : combiner_(std::exchange(other.combiner_, nullptr)) {}

Md5Pair::Active& Md5Pair::Active::operator=(Active&& other) noexcept {
  if (this != &other) {
    Leave();
    combiner_ = std::exchange(other.combiner_, nullptr);
  }
  return *this;
}

void Md5Pair::Active::Leave() noexcept {
  if (combiner_ != nullptr) std::exchange(combiner_, nullptr)->Leave();
}

bool Md5Pair::Accelerated() {
#if defined(__x86_64__)
  return HaveAvx512();
#else
  return false;
#endif
}

FileHasher::FileHasher(uint64_t block_size) : blocks_(block_size != 0) {
  // Without blocks the pair's second lane idles, but its AVX-512VL build is still the faster
  // MD5: 65 against OpenSSL's 76-77 us per 64 KiB (`make bench-micro`; the portable build: ~105).
  if (block_size % 64 == 0 && (blocks_ || Md5Pair::Accelerated())) {
    pair_.emplace(Md5Pair::Kernel::kBest, &Md5Combiner::Shared());
    return;
  }
  whole_.emplace();
  if (blocks_) block_.emplace();
}

void FileHasher::Update(const void* data, size_t len) {
  if (pair_) return pair_->Update(data, len);
  whole_->Update(data, len);
  if (block_) block_->Update(data, len);
}

Md5Digest FileHasher::FinishBlock() {
  if (!blocks_) throw std::logic_error("FileHasher: no blocks");
  if (pair_) return pair_->FinishBlock();
  return block_->Final();  // and starts the next block
}

Md5Digest FileHasher::FinishFile() { return pair_ ? pair_->FinishFile() : whole_->Final(); }

Md5Combiner::Md5Combiner(unsigned threads, std::chrono::microseconds company_wait)
    : threads_(std::max(1U, threads)), company_wait_(company_wait) {}

Md5Combiner& Md5Combiner::Shared() {
  static Md5Combiner shared(UsableCpus());
  return shared;
}

void Md5Combiner::Compress(Md5Pair& pair, const unsigned char* chunks, size_t n) {
  Job mine{&pair, chunks, n};
  std::unique_lock lock(mu_);
  if (pair.active_.combiner_ == nullptr) {
    pair.active_.combiner_ = this;
    ++stats_.active;
  }
  queue_.push_back(&mine);
  if (awaiting_company_ > 0) cv_.notify_all();
  // Whoever may start a pass takes the oldest jobs (up to Md5Pair::kMaxTogether). A pass may
  // start while fewer than `threads_` run; when more pairs are active than that, a lone job
  // starts one only if none runs (it waits for company or for the running pass to end). So a
  // job waits at most for the passes ahead of it, and once for company. Any pairs can share a
  // pass: every kernel build computes the same digests (the first job's build runs).
  bool waited = false;
  while (!mine.done) {
    const bool contended = stats_.active > threads_;
    if (stats_.running == threads_ || queue_.empty() ||
        (contended && stats_.running > 0 && queue_.size() < 2)) {
      cv_.wait(lock);
      continue;
    }
    if (!waited && LoneBesideAnActivePair(mine)) {
      waited = true;  // one chance per job
      if (skip_waits_ > 0) {
        --skip_waits_;
        continue;
      }
      ++awaiting_company_;
      ++stats_.company_waits;
      const bool company =
          cv_.wait_for(lock, company_wait_, [&] { return !LoneBesideAnActivePair(mine); });
      --awaiting_company_;
      if (company) {
        vain_streak_ = 0;
      } else {
        ++stats_.vain_waits;
        vain_streak_ = std::min(vain_streak_ + 1, 6U);
        skip_waits_ = (1U << vain_streak_) - 1;
      }
      continue;
    }
    Job* jobs[Md5Pair::kMaxTogether];
    int count = 0;
    for (; count < Md5Pair::kMaxTogether && !queue_.empty(); ++count) {
      jobs[count] = queue_.front();
      queue_.pop_front();
    }
    ++stats_.running;
    ++stats_.passes;
    stats_.pairs_passed += static_cast<uint64_t>(count);
    lock.unlock();
    Run(jobs, count);
    lock.lock();
    --stats_.running;
    for (int k = 0; k < count; ++k) jobs[k]->done = true;
    cv_.notify_all();
  }
}

bool Md5Combiner::LoneBesideAnActivePair(const Job& mine) const {
  return stats_.running == 0 && queue_.size() == 1 && queue_.front() == &mine && stats_.active >= 2;
}

void Md5Combiner::Run(Job* const* jobs, int count) {
  // The chunks every job has in one pass; each one's remaining chunks on their own.
  size_t together = count > 1 ? jobs[0]->n : 0;
  Md5Pair* pairs[Md5Pair::kMaxTogether];
  const unsigned char* data[Md5Pair::kMaxTogether];
  for (int k = 0; k < count; ++k) {
    together = std::min(together, jobs[k]->n);
    pairs[k] = jobs[k]->pair;
    data[k] = jobs[k]->chunks;
  }
  Md5Pair::PassTogether(pairs, data, count, together);
  for (int k = 0; k < count; ++k) {
    const Job& j = *jobs[k];
    if (j.n > together)
      j.pair->kernels_->one(j.pair->state_, j.chunks + 64 * together, j.n - together);
  }
}

void Md5Combiner::Leave() {
  std::lock_guard lock(mu_);
  --stats_.active;
  cv_.notify_all();  // a lone job may no longer need company
}

Md5Combiner::Stats Md5Combiner::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace nbu
