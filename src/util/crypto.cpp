#include "util/crypto.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstring>
#include <random>
#include <stdexcept>

namespace nbu {

namespace {

// Algorithms fetched once (EVP_md5() and friends make OpenSSL 3 look them up on every init).
const EVP_MD* FetchedMd5() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "MD5", nullptr);
  return md;
}

EVP_MAC* FetchedHmac() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return mac;
}

}  // namespace

struct Md5::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Md5::Md5() : impl_(std::make_unique<Impl>()) {
  if (impl_->ctx == nullptr || FetchedMd5() == nullptr ||
      EVP_DigestInit_ex2(impl_->ctx, FetchedMd5(), nullptr) != 1) {
    throw std::runtime_error("EVP md5 init failed");
  }
}
Md5::~Md5() = default;
Md5::Md5(Md5&&) noexcept = default;
Md5& Md5::operator=(Md5&&) noexcept = default;

void Md5::Update(const void* data, size_t len) { EVP_DigestUpdate(impl_->ctx, data, len); }

Md5Digest Md5::Final() {
  Md5Digest out{};
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, out.data(), &n);
  EVP_DigestInit_ex2(impl_->ctx, FetchedMd5(), nullptr);
  return out;
}

Md5Digest Md5::Of(std::string_view data) {
  Md5 m;
  m.Update(data);
  return m.Final();
}

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    const bool pad = c == '=' && i + 2 >= text.size();
    if (!alnum && c != '+' && c != '/' && !pad) return std::nullopt;
    if (c != '=' && i > 0 && text[i - 1] == '=') return std::nullopt;
  }
  std::string out(3 * text.size() / 4, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  size_t len = static_cast<size_t>(n);
  if (!text.empty() && text.back() == '=') --len;
  if (text.size() > 1 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

struct HmacSha256Key::Impl {
  EVP_MAC_CTX* keyed = nullptr;  // initialized with the key; only ever copied
  ~Impl() { EVP_MAC_CTX_free(keyed); }
};

HmacSha256Key::HmacSha256Key(std::string_view key) : impl_(std::make_unique<Impl>()) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                               OSSL_PARAM_construct_end()};
  impl_->keyed = FetchedHmac() == nullptr ? nullptr : EVP_MAC_CTX_new(FetchedHmac());
  if (impl_->keyed == nullptr ||
      EVP_MAC_init(impl_->keyed, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                   params) != 1) {
    throw std::runtime_error("HMAC-SHA256 init failed");
  }
}

HmacSha256Key::~HmacSha256Key() = default;

std::string HmacSha256Key::Sign(std::string_view data) const {
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(impl_->keyed);
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t len = 0;
  const bool ok =
      ctx != nullptr &&
      EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1 &&
      EVP_MAC_final(ctx, out, &len, sizeof out) == 1;
  EVP_MAC_CTX_free(ctx);
  if (!ok) throw std::runtime_error("HMAC-SHA256 failed");
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string Sha256Hex(std::string_view data) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(out), sizeof out));
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xF]);
  }
  return out;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return out;
}

uint64_t RandomU64() {
  const std::string b = RandomBytes(8);
  uint64_t v = 0;
  std::memcpy(&v, b.data(), sizeof v);
  return v;
}

uint64_t FastRandomU64() {
  thread_local std::mt19937_64 gen(RandomU64());
  return gen();
}

double FastRandom01() {
  return static_cast<double>(FastRandomU64() >> 11) / static_cast<double>(1ULL << 53);
}

std::string FastRandomHex(size_t bytes) {
  std::string raw;
  raw.reserve(bytes + 8);
  while (raw.size() < bytes) {
    const uint64_t v = FastRandomU64();
    raw.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  raw.resize(bytes);
  return HexEncode(raw);
}

}  // namespace nbu
