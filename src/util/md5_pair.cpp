#include "util/md5_pair.h"

#include "util/cpus.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

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
// The scalar build stays scalar: GCC's vectorizer would pack its streams into SIMD lanes, the
// build it exists to avoid (one pair went from 1.29 to 3.26 ms per MiB that way).
#if defined(__GNUC__) && !defined(__clang__)
#define NBU_SCALAR __attribute__((optimize("no-tree-vectorize", "no-tree-slp-vectorize")))
#else
#define NBU_SCALAR
#endif

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

// kPairs pairs in general-purpose registers: 2 * kPairs independent 32-bit streams (stream 2k
// the k-th pair's file, 2k + 1 its block), each step written once for all of them so that the
// compiler interleaves the chains. On the AMD EPYC (Zen 5 by its flags) of bench/RESULTS.md a
// lone pair takes 1.29 ms per MiB this way, about OpenSSL's time for one MD5 (1.19-1.23), and
// 2.25 ms in the AVX-512VL build, whose every step waits longer on its SIMD operations there
// (`make bench-micro`). Eight streams (four pairs) run out of registers: 6.8 ms per MiB.
template <size_t kLanes>
struct Scalars {
  uint32_t v[kLanes];
  NBU_INLINE uint32_t& operator[](size_t i) { return v[i]; }
  NBU_INLINE uint32_t operator[](size_t i) const { return v[i]; }
  template <typename Op>
  NBU_INLINE friend Scalars Each(const Scalars& x, const Scalars& y, Op op) {
    Scalars r{};
    for (size_t i = 0; i < kLanes; ++i) r.v[i] = op(x.v[i], y.v[i]);
    return r;
  }
  NBU_INLINE friend Scalars operator+(const Scalars& x, const Scalars& y) {
    return Each(x, y, [](uint32_t a, uint32_t b) { return a + b; });
  }
  NBU_INLINE friend Scalars operator^(const Scalars& x, const Scalars& y) {
    return Each(x, y, [](uint32_t a, uint32_t b) { return a ^ b; });
  }
  NBU_INLINE friend Scalars operator&(const Scalars& x, const Scalars& y) {
    return Each(x, y, [](uint32_t a, uint32_t b) { return a & b; });
  }
  NBU_INLINE friend Scalars operator|(const Scalars& x, const Scalars& y) {
    return Each(x, y, [](uint32_t a, uint32_t b) { return a | b; });
  }
  NBU_INLINE friend Scalars operator~(const Scalars& x) {
    return Each(x, x, [](uint32_t a, uint32_t /*unused*/) { return ~a; });
  }
  NBU_INLINE Scalars& operator+=(const Scalars& y) { return *this = *this + y; }
};
template <int S, size_t kLanes>
NBU_INLINE Scalars<kLanes> Rotl(Scalars<kLanes> x) {
  for (uint32_t& w : x.v) w = std::rotl(w, S);
  return x;
}
template <size_t kPairs_>
struct ScalarChunks {
  static constexpr size_t kPairs = kPairs_;
  using Vec = Scalars<2 * kPairs>;
  uint32_t m[kPairs][16];
  NBU_INLINE void Load(const unsigned char* const* p, size_t at) {
    for (size_t k = 0; k < kPairs; ++k) std::memcpy(m[k], p[k] + at, 64);
  }
  NBU_INLINE Vec Wk(int g, int i) const {
    Vec r{};
    for (size_t k = 0; k < kPairs; ++k) r.v[2 * k] = r.v[2 * k + 1] = m[k][g] + kK[i];
    return r;
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

NBU_SCALAR void CompressScalar(Md5Lanes& s, const unsigned char* p, size_t n) {
  Md5Lanes* const one[1] = {&s};
  CompressPairs<ScalarChunks<1>>(one, &p, n);
}
NBU_SCALAR void CompressManyScalar(Md5Lanes* const* s, const unsigned char* const* p, int count,
                                   size_t n) {
  if (count == 2) return CompressPairs<ScalarChunks<2>>(s, p, n);
  if (count == 3) return CompressPairs<ScalarChunks<3>>(s, p, n);
  CompressPairs<ScalarChunks<4>>(s, p, n);
}

#if defined(__x86_64__)
// With AVX-512VL the rotations are single instructions (vprold) and the boolean functions fuse
// (vpternlogd): 0.42 -> 0.27 s per 256 MiB for the pair (two OpenSSL MD5 passes: 0.62 s), from
// `make bench-micro` on the Intel Xeon of bench/RESULTS.md's runs C-W.
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
#else
bool HaveAvx512() { return false; }
#endif

}  // namespace

// One build per pass width: the pass over a lone pair, and over 2..kMaxTogether pairs.
struct Md5Kernels {
  void (*one)(Md5Lanes&, const unsigned char*, size_t);
  // [count]: count pairs' states s[k], each advanced over n chunks at p[k]
  using Many = void (*)(Md5Lanes* const* s, const unsigned char* const* p, int count, size_t n);
  Many many[Md5Pair::kMaxTogether + 1];
};

namespace {

struct Build {
  const char* name;
  Md5Kernels kernels;
};
constexpr Build kPortable{
    "portable",
    {CompressDefault,
     {nullptr, nullptr, CompressManyDefault, CompressManyDefault, CompressManyDefault}}};
constexpr Build kScalar{
    "scalar",
    {CompressScalar,
     {nullptr, nullptr, CompressManyScalar, CompressManyScalar, CompressManyScalar}}};
#if defined(__x86_64__)
constexpr Build kAvx512{
    "avx512",
    {CompressAvx512,
     {nullptr, nullptr, CompressManyAvx512, CompressManyAvx512, CompressManyAvx512}}};
#endif

// Which build is fastest depends on the CPU, not just on its flags. Per MiB, one pair took 1.06
// ms in the AVX-512VL build and 1.64 in the portable one on the Intel Xeon of bench/RESULTS.md's
// earlier runs (the scalar build came later), but 2.25, 3.23 and 1.29 (scalar) on the AMD EPYC
// of its later ones; OpenSSL's MD5 took 1.2 on both. So each pass width's build is timed once
// per process, on bytes in cache, and the fastest kept. Every build computes the same digests.
struct Chosen {
  Md5Kernels kernels;
  Md5Pair::Choice choice;
};

const Chosen& Choose() {
  static const Chosen chosen = [] {
    constexpr size_t kChunks = 1024;  // 64 KiB per pair: ~0.1-0.3 ms per timed pass
    constexpr size_t kPairBytes = 64 * kChunks;
    constexpr int kRounds = 3;  // the fastest of three: a preempted run does not count
    std::vector<unsigned char> bytes(kPairBytes * Md5Pair::kMaxTogether);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 131 + 7);
    const unsigned char* data[Md5Pair::kMaxTogether];
    for (size_t k = 0; k < Md5Pair::kMaxTogether; ++k) data[k] = bytes.data() + k * kPairBytes;
    std::vector<const Build*> builds = {&kScalar, &kPortable};
#if defined(__x86_64__)
    if (HaveAvx512()) builds.insert(builds.begin(), &kAvx512);
#endif
    auto time = [&](auto&& pass) {
      int64_t best = INT64_MAX;
      for (int r = 0; r < kRounds; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        pass();
        best = std::min<int64_t>(
            best, std::chrono::nanoseconds(std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    Chosen c{};
    int64_t one_ns = INT64_MAX;
    for (int count = 1; count <= Md5Pair::kMaxTogether; ++count) {
      int64_t best = INT64_MAX;
      for (const Build* b : builds) {
        Md5Lanes states[Md5Pair::kMaxTogether] = {};
        Md5Lanes* s[Md5Pair::kMaxTogether];
        for (int k = 0; k < Md5Pair::kMaxTogether; ++k) s[k] = &states[k];
        const int64_t ns = time([&] {
          if (count == 1) return b->kernels.one(states[0], data[0], kChunks);
          b->kernels.many[count](s, data, count, kChunks);
        });
        if (ns >= best) continue;
        best = ns;
        c.choice.by_count[count] = b->name;
        if (count == 1) c.kernels.one = b->kernels.one;
        if (count > 1) c.kernels.many[count] = b->kernels.many[count];
      }
      if (count == 1) one_ns = best;
    }
    // A file without blocks needs only its own MD5: lane 0 of a pair, or OpenSSL.
    const int64_t openssl_ns = time(
        [&] { Md5::Of(std::string_view(reinterpret_cast<const char*>(data[0]), kPairBytes)); });
    c.choice.file_alone_in_pair = one_ns < openssl_ns;
    return c;
  }();
  return chosen;
}

const Md5Kernels& KernelsOf(Md5Pair::Kernel kernel) {
  switch (kernel) {
    case Md5Pair::Kernel::kBest: return Choose().kernels;
    case Md5Pair::Kernel::kScalar: return kScalar.kernels;
    case Md5Pair::Kernel::kAvx512:
#if defined(__x86_64__)
      if (HaveAvx512()) return kAvx512.kernels;
#endif
      throw std::logic_error("Md5Pair: this CPU has no AVX-512VL");
    case Md5Pair::Kernel::kPortable: break;
  }
  return kPortable.kernels;
}

}  // namespace

bool Md5Pair::Available(Kernel kernel) { return kernel != Kernel::kAvx512 || HaveAvx512(); }

const Md5Pair::Choice& Md5Pair::Chosen() { return Choose().choice; }

Md5Pair::Md5Pair(Kernel kernel, Md5Combiner* combiner)
    : kernels_(&KernelsOf(kernel)), combiner_(combiner) {
  for (int w = 0; w < 4; ++w) {
    for (int lane = 0; lane < 4; ++lane) state_[w][lane] = kInit[w];
  }
}

void Md5Pair::Compress(const unsigned char* chunks, size_t n, bool patient) {
  if (n == 0) return;
  if (combiner_ != nullptr && n * 64 >= kCombineBytes) {
    return combiner_->Compress(*this, chunks, n, patient);
  }
  kernels_->one(state_, chunks, n);
}

void Md5Pair::Update(const void* data, size_t len, bool patient) {
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
  Compress(p, len / 64, patient);
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
  pairs[0]->kernels_->many[count](states, data, count, n);
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

FileHasher::FileHasher(uint64_t block_size) : blocks_(block_size != 0) {
  // Without blocks the pair's second lane idles; it is used where its best build is still the
  // faster MD5 (the AVX-512VL one on an Intel Xeon: 65 against OpenSSL's 76-77 us per 64 KiB).
  if (block_size % 64 == 0 && (blocks_ || Md5Pair::Chosen().file_alone_in_pair)) {
    pair_.emplace(Md5Pair::Kernel::kBest, &Md5Combiner::Shared());
    return;
  }
  whole_.emplace();
  if (blocks_) block_.emplace();
}

void FileHasher::Update(const void* data, size_t len, bool patient) {
  if (pair_) return pair_->Update(data, len, patient);
  whole_->Update(data, len);
  if (block_) block_->Update(data, len);
}

Md5Digest FileHasher::FinishBlock() {
  if (!blocks_) throw std::logic_error("FileHasher: no blocks");
  if (pair_) return pair_->FinishBlock();
  return block_->Final();  // and starts the next block
}

Md5Digest FileHasher::FinishFile() { return pair_ ? pair_->FinishFile() : whole_->Final(); }

Md5Combiner::Md5Combiner(unsigned threads, std::chrono::microseconds company_wait,
                         std::chrono::microseconds patient_wait)
    : threads_(std::max(1U, threads)), company_wait_(company_wait), patient_wait_(patient_wait) {}

Md5Combiner& Md5Combiner::Shared() {
  static Md5Combiner shared(UsableCpus());
  return shared;
}

void Md5Combiner::Compress(Md5Pair& pair, const unsigned char* chunks, size_t n, bool patient) {
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
      if (patient) {
        ++awaiting_company_;
        ++stats_.patient_waits;
        cv_.wait_for(lock, patient_wait_, [&] { return !LoneBesideAnActivePair(mine); });
        --awaiting_company_;
        continue;
      }
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
