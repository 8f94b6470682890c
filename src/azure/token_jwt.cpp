#include "azure/token_jwt.h"

#include "util/crypto.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstring>

namespace nbu::azure {

struct RsaSigner::Keys {
  EVP_PKEY* key = nullptr;
  ~Keys() { EVP_PKEY_free(key); }
};

std::string Base64UrlEncode(std::string_view bytes) {
  std::string s = Base64Encode(bytes);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return s;
}

namespace {

struct Passphrase {
  std::string_view password;
  bool asked = false;  // the key is encrypted
};

// In place of OpenSSL's default, which reads a passphrase from the terminal (and waits there).
int GivePassphrase(char* buf, int size, int /*rwflag*/, void* user) {
  auto* p = static_cast<Passphrase*>(user);
  p->asked = true;
  if (size < 0 || p->password.size() > static_cast<size_t>(size)) return -1;
  std::memcpy(buf, p->password.data(), p->password.size());
  return static_cast<int>(p->password.size());
}

}  // namespace

RsaSigner::RsaSigner(std::unique_ptr<Keys> keys, std::string thumbprint)
    : keys_(std::move(keys)), thumbprint_sha1_(std::move(thumbprint)) {}

RsaSigner::~RsaSigner() = default;

Result<std::shared_ptr<RsaSigner>> RsaSigner::FromPem(std::string_view pem,
                                                      std::string_view password, bool* locked) {
  auto bio_for = [&] {
    return std::unique_ptr<BIO, decltype(&BIO_free)>(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  };
  auto keys = std::make_unique<Keys>();
  Passphrase passphrase{password};
  {
    auto bio = bio_for();
    keys->key = PEM_read_bio_PrivateKey(bio.get(), nullptr, &GivePassphrase, &passphrase);
  }
  ERR_clear_error();  // a wrong password leaves errors on this thread's queue
  if (locked != nullptr) *locked = keys->key == nullptr && passphrase.asked;
  if (keys->key == nullptr && passphrase.asked) {
    return Status(ErrorKind::kAuth,
                  "the private key is encrypted and the password does not open it");
  }
  if (keys->key == nullptr || EVP_PKEY_base_id(keys->key) != EVP_PKEY_RSA) {
    return Status(ErrorKind::kAuth, "PEM holds no RSA private key");
  }
  std::string thumbprint;
  {
    auto bio = bio_for();
    if (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr); cert != nullptr) {
      unsigned char md[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      if (X509_digest(cert, EVP_sha1(), md, &len) == 1) {
        thumbprint.assign(reinterpret_cast<const char*>(md), len);
      }
      X509_free(cert);
    }
  }
  return std::shared_ptr<RsaSigner>(new RsaSigner(std::move(keys), std::move(thumbprint)));
}

Result<std::string> RsaSigner::SignRs256(std::string_view data) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, keys_->key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    return Status(ErrorKind::kAuth, "RS256 signing failed");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    return Status(ErrorKind::kAuth, "RS256 signing failed");
  }
  sig.resize(len);
  return sig;
}

Result<std::string> MakeJwtRs256(nlohmann::json header, const nlohmann::json& payload,
                                 const RsaSigner& signer) {
  header["alg"] = "RS256";
  header["typ"] = "JWT";
  const std::string signing_input =
      Base64UrlEncode(header.dump()) + "." + Base64UrlEncode(payload.dump());
  Result<std::string> sig = signer.SignRs256(signing_input);
  if (!sig.ok()) return sig.status();
  return signing_input + "." + Base64UrlEncode(*sig);
}

}  // namespace nbu::azure
