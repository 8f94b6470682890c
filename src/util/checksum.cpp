#include "util/checksum.h"

#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace nbu {
namespace {

static_assert(std::endian::native == std::endian::little, "the 8- and 16-byte loads are little-endian");

// The polynomial without its x^64 term, normal form (bit i = coefficient of x^i). The reflected
// form used below is its bit reversal: bit i = coefficient of x^(63-i), the order in which a
// reflected CRC reads the bits of each byte.
constexpr uint64_t kNormalPoly = 0xAD93D23594C93659;

constexpr uint64_t Reverse64(uint64_t v) {
  uint64_t r = 0;
  for (int i = 0; i < 64; ++i) r |= ((v >> i) & 1) << (63 - i);
  return r;
}

constexpr uint64_t kPoly = Reverse64(kNormalPoly);  // 0x9A6C9329AC4BC9B5
static_assert(kPoly == 0x9A6C9329AC4BC9B5);

// t[0] is the classic byte-at-a-time table; t[k][b] is byte b's contribution k bytes further on.
constexpr std::array<std::array<uint64_t, 256>, 8> MakeTables() {
  std::array<std::array<uint64_t, 256>, 8> t{};
  for (uint64_t b = 0; b < 256; ++b) {
    uint64_t c = b;
    for (int bit = 0; bit < 8; ++bit) c = (c >> 1) ^ (kPoly & (0 - (c & 1)));
    t[0][b] = c;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  }
  return t;
}

constexpr auto kTables = MakeTables();

// Slice-by-8: eight bytes per step through eight tables (~1.5 GB/s here).
uint64_t UpdateTables(uint64_t c, const unsigned char* p, size_t len) {
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    v ^= c;
    c = kTables[7][v & 0xff] ^ kTables[6][(v >> 8) & 0xff] ^ kTables[5][(v >> 16) & 0xff] ^
        kTables[4][(v >> 24) & 0xff] ^ kTables[3][(v >> 32) & 0xff] ^
        kTables[2][(v >> 40) & 0xff] ^ kTables[1][(v >> 48) & 0xff] ^ kTables[0][v >> 56];
  }
  for (; len > 0; ++p, --len) c = (c >> 8) ^ kTables[0][(c ^ *p) & 0xff];
  return c;
}

#if defined(__x86_64__)
// Folding with carry-less multiplication (PCLMULQDQ), four 16-byte lanes at a time.
//
// In the reflected order a 16-byte chunk loaded little-endian is the polynomial of its 128
// message bits, and the CRC register XORed into the first 8 bytes of the message stands for
// the initial value. Folding keeps a 128-bit A congruent (mod P) to all the message so far, as
// a polynomial. Moving A past N more message bits: A * x^N = Ahi * x^(N+64) + Alo * x^N, where
// Ahi (the high-degree half) is the register's low quadword. A carry-less product of two
// reflected 64-bit values is the reflected 128-bit x * (product), so the constants are
// x^(N+63) mod P for Ahi and x^(N-1) mod P for Alo: both halves land as 128-bit values
// congruent to their part of A * x^N, and the next N bits are XORed in. At the end, A * x^64
// mod P (the CRC register) is what the table code computes for A's 16 bytes from a zero
// register, so no Barrett reduction is needed.
constexpr uint64_t XPowModP(int n) {  // reflected x^n mod P
  uint64_t v = 1;                      // normal form
  for (int i = 0; i < n; ++i) v = (v << 1) ^ (kNormalPoly & (0 - (v >> 63)));
  return Reverse64(v);
}

struct FoldConstants {
  uint64_t hi_half;  // for the register's low quadword: x^(N+63) mod P
  uint64_t lo_half;  // for its high quadword: x^(N-1) mod P
};
constexpr FoldConstants kFold128{XPowModP(128 + 63), XPowModP(128 - 1)};
constexpr FoldConstants kFold512{XPowModP(512 + 63), XPowModP(512 - 1)};

__attribute__((target("pclmul,sse2"))) __m128i Fold(__m128i a, __m128i k, __m128i next) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00),  // Ahi * hi_half
                                     _mm_clmulepi64_si128(a, k, 0x11)),  // Alo * lo_half
                       next);
}

__attribute__((target("pclmul,sse2"))) __m128i Constants(FoldConstants f) {
  return _mm_set_epi64x(static_cast<long long>(f.lo_half), static_cast<long long>(f.hi_half));
}

// Needs len >= 64; consumes a multiple of 16 bytes, returns how many, and sets *c.
__attribute__((target("pclmul,sse2"))) size_t UpdateFolding(uint64_t* c, const unsigned char* p,
                                                             size_t len) {
  auto load = [](const unsigned char* q) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  };
  __m128i x0 = _mm_xor_si128(load(p), _mm_set_epi64x(0, static_cast<long long>(*c)));
  __m128i x1 = load(p + 16);
  __m128i x2 = load(p + 32);
  __m128i x3 = load(p + 48);
  size_t done = 64;
  const __m128i k512 = Constants(kFold512);
  for (; len - done >= 64; done += 64) {
    x0 = Fold(x0, k512, load(p + done));
    x1 = Fold(x1, k512, load(p + done + 16));
    x2 = Fold(x2, k512, load(p + done + 32));
    x3 = Fold(x3, k512, load(p + done + 48));
  }
  const __m128i k128 = Constants(kFold128);
  __m128i x = Fold(Fold(Fold(x0, k128, x1), k128, x2), k128, x3);
  for (; len - done >= 16; done += 16) x = Fold(x, k128, load(p + done));
  unsigned char rest[16];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(rest), x);
  *c = UpdateTables(0, rest, sizeof rest);
  return done;
}

bool HavePclmul() {
  static const bool have = __builtin_cpu_supports("pclmul") != 0;
  return have;
}
#endif

}  // namespace

void Crc64::Update(const void* data, size_t len) {
  const auto* p = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  if (len >= 64 && HavePclmul()) {
    const size_t done = UpdateFolding(&state_, p, len);
    p += done;
    len -= done;
  }
#endif
  state_ = UpdateTables(state_, p, len);
}

uint64_t Crc64::Of(std::string_view data) {
  Crc64 c;
  c.Update(data);
  return c.Value();
}

Crc64Digest Crc64Bytes(uint64_t value) {
  Crc64Digest out{};
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
  return out;
}

std::string_view ChecksumBytes(const Checksum& c) {
  return std::visit(
      [](const auto& d) {
        return std::string_view(reinterpret_cast<const char*>(d.data()), d.size());
      },
      c);
}

Checksummer::Checksummer(ChecksumKind kind)
    : state_(kind == ChecksumKind::kCrc64 ? std::variant<Md5, Crc64>(std::in_place_type<Crc64>)
                                          : std::variant<Md5, Crc64>(std::in_place_type<Md5>)) {}

void Checksummer::Update(const void* data, size_t len) {
  std::visit([&](auto& s) { s.Update(data, len); }, state_);
}

Checksum Checksummer::Final() {
  if (auto* crc = std::get_if<Crc64>(&state_)) return Crc64Bytes(crc->Value());
  return std::get<Md5>(state_).Final();
}

}  // namespace nbu
