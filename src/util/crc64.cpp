#include "util/crc64.h"

#include "util/crypto.h"

#include <array>
#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace nbu {
namespace {

static_assert(std::endian::native == std::endian::little, "8-byte loads are read little-endian");

constexpr uint64_t kPolyReflected = 0x9A6C9329AC4BC9B5ULL;
constexpr uint64_t kPolyNormal = 0xAD93D23594C93659ULL;  // x^64 is implied

// tables[k][b]: the register after byte b and then k zero bytes, from a zero register.
constexpr std::array<std::array<uint64_t, 256>, 8> MakeTables() {
  std::array<std::array<uint64_t, 256>, 8> t{};
  for (uint64_t b = 0; b < 256; ++b) {
    uint64_t c = b;
    for (int bit = 0; bit < 8; ++bit) c = (c >> 1) ^ ((c & 1) != 0 ? kPolyReflected : 0);
    t[0][b] = c;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  }
  return t;
}
constexpr auto kTables = MakeTables();

uint64_t Load64(const unsigned char* p) {
  uint64_t w = 0;
  std::memcpy(&w, p, sizeof w);
  return w;
}

// The register (not inverted) after `n` more bytes.
uint64_t TableUpdate(uint64_t r, const unsigned char* p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    r ^= Load64(p);
    r = kTables[7][r & 0xff] ^ kTables[6][(r >> 8) & 0xff] ^ kTables[5][(r >> 16) & 0xff] ^
        kTables[4][(r >> 24) & 0xff] ^ kTables[3][(r >> 32) & 0xff] ^ kTables[2][(r >> 40) & 0xff] ^
        kTables[1][(r >> 48) & 0xff] ^ kTables[0][r >> 56];
  }
  for (; n > 0; ++p, --n) r = kTables[0][(r ^ *p) & 0xff] ^ (r >> 8);
  return r;
}

#if defined(__x86_64__)
// Folding. A 16-byte piece loaded little-endian holds the polynomial whose x^127 coefficient is
// the first byte's lowest bit (the reflected order), and so does each 8-byte half of it with
// x^63. A carry-less product of two such halves A and B, read as 16 bytes, is A*B*x. Moving
// a piece S = H*x^64 + L forward by F bits, S*x^F mod P, is therefore
// clmul(H, x^(F+63) mod P) + clmul(L, x^(F-1) mod P): 128 bits again, congruent mod P.
constexpr uint64_t XPowMod(int k) {  // x^k mod P, in the normal order (bit i = x^i)
  uint64_t r = 1;
  for (int i = 0; i < k; ++i) r = (r >> 63) != 0 ? (r << 1) ^ kPolyNormal : r << 1;
  return r;
}
constexpr uint64_t Reflect(uint64_t v) {
  uint64_t r = 0;
  for (int i = 0; i < 64; ++i) r |= ((v >> i) & 1) << (63 - i);
  return r;
}
constexpr uint64_t kFold512Hi = Reflect(XPowMod(512 + 63));
constexpr uint64_t kFold512Lo = Reflect(XPowMod(512 - 1));
constexpr uint64_t kFold128Hi = Reflect(XPowMod(128 + 63));
constexpr uint64_t kFold128Lo = Reflect(XPowMod(128 - 1));

__attribute__((target("pclmul"))) __m128i Fold(__m128i s, __m128i k, __m128i next) {
  return _mm_xor_si128(
      _mm_xor_si128(_mm_clmulepi64_si128(s, k, 0x00), _mm_clmulepi64_si128(s, k, 0x11)), next);
}

// n >= 64. Four pieces are folded 64 bytes forward at a time, then into one, which then
// takes the remaining 16-byte pieces; the tables finish from its 16 bytes and the tail.
__attribute__((target("pclmul"))) uint64_t ClmulUpdate(uint64_t r, const unsigned char* p,
                                                       size_t n) {
  auto load = [](const unsigned char* q) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  };
  const __m128i k512 =
      _mm_set_epi64x(static_cast<long long>(kFold512Lo), static_cast<long long>(kFold512Hi));
  const __m128i k128 =
      _mm_set_epi64x(static_cast<long long>(kFold128Lo), static_cast<long long>(kFold128Hi));
  // The register goes into the first 8 bytes, as the table loop XORs it into each word.
  __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi64_si128(static_cast<long long>(r)));
  __m128i x1 = load(p + 16);
  __m128i x2 = load(p + 32);
  __m128i x3 = load(p + 48);
  for (p += 64, n -= 64; n >= 64; p += 64, n -= 64) {
    x0 = Fold(x0, k512, load(p));
    x1 = Fold(x1, k512, load(p + 16));
    x2 = Fold(x2, k512, load(p + 32));
    x3 = Fold(x3, k512, load(p + 48));
  }
  __m128i x = Fold(Fold(Fold(x0, k128, x1), k128, x2), k128, x3);
  for (; n >= 16; p += 16, n -= 16) x = Fold(x, k128, load(p));
  unsigned char folded[16];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(folded), x);
  return TableUpdate(TableUpdate(0, folded, sizeof folded), p, n);
}

bool HasClmul() {
  static const bool has = (__builtin_cpu_init(), __builtin_cpu_supports("pclmul") != 0);
  return has;
}
#else
bool HasClmul() { return false; }
#endif

}  // namespace

uint64_t Crc64Portable(uint64_t crc, const void* data, size_t len) {
  return ~TableUpdate(~crc, static_cast<const unsigned char*>(data), len);
}

uint64_t Crc64(uint64_t crc, const void* data, size_t len) {
#if defined(__x86_64__)
  // Below a few pieces the tables are as quick (the fold finishes with 16 bytes of them).
  if (len >= 128 && HasClmul()) {
    return ~ClmulUpdate(~crc, static_cast<const unsigned char*>(data), len);
  }
#endif
  return Crc64Portable(crc, data, len);
}

bool Crc64UsesClmul() { return HasClmul(); }

std::string Crc64Base64(uint64_t crc) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  return Base64Encode(std::string_view(bytes, sizeof bytes));
}

}  // namespace nbu
