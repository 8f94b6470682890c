// Hashing and encoding helpers on OpenSSL: streaming MD5, HMAC-SHA256, base64, hex, random bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace nbu {

using Md5Digest = std::array<unsigned char, 16>;

// Incremental MD5. Not thread-safe; one per stream.
class Md5 {
 public:
  Md5();
  ~Md5();
  Md5(Md5&&) noexcept;
  Md5& operator=(Md5&&) noexcept;
  void Update(const void* data, size_t len);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  Md5Digest Final();

  static Md5Digest Of(std::string_view data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Base64Encode(std::string_view bytes);
inline std::string Base64Encode(const Md5Digest& d) {
  return Base64Encode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}
// Strict standard-alphabet base64 with padding; nullopt on any invalid input.
std::optional<std::string> Base64Decode(std::string_view text);
// HMAC-SHA256 under one fixed key: the keyed state is built once and copied per Sign() (a
// one-shot HMAC() fetches the algorithms from OpenSSL's provider store on every call, which
// showed in profiles with many threads signing). Sign() is thread-safe.
class HmacSha256Key {
 public:
  explicit HmacSha256Key(std::string_view key);
  ~HmacSha256Key();
  HmacSha256Key(const HmacSha256Key&) = delete;
  HmacSha256Key& operator=(const HmacSha256Key&) = delete;
  std::string Sign(std::string_view data) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
std::string Sha256Hex(std::string_view data);
std::string HexEncode(std::string_view bytes);
// Cryptographically random bytes (RAND_bytes).
std::string RandomBytes(size_t n);
uint64_t RandomU64();
// Unpredictable-enough ids without a syscall per call: a per-thread generator seeded from
// RAND_bytes. For span ids and claim nonces, not for keys.
uint64_t FastRandomU64();
// Uniform in [0, 1) from FastRandomU64: jitter for backoffs and sampling.
double FastRandom01();
std::string FastRandomHex(size_t bytes);

}  // namespace nbu
