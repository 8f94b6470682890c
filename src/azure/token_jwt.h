// JSON Web Tokens signed with RS256 (OpenSSL): the client assertion of the certificate credential,
// and the stand-in tokens the tests mint for Azurite.
#pragma once

#include "util/status.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace nbu::azure {

// RFC 4648 §5 base64url without padding.
std::string Base64UrlEncode(std::string_view bytes);

// An RSA private key and (optionally) its certificate, from PEM text. Thread-safe after Load.
class RsaSigner {
 public:
  // `pem` holds a private key ("PRIVATE KEY" or "RSA PRIVATE KEY", or either encrypted) and
  // optionally the first certificate. An encrypted key is opened with `password` (empty: the
  // empty password); OpenSSL never prompts on a terminal. kAuth error (without any key material
  // or password) when no RSA key is found or the password does not open it; `*locked` (if
  // given) says whether it was the latter.
  static Result<std::shared_ptr<RsaSigner>> FromPem(std::string_view pem,
                                                    std::string_view password = {},
                                                    bool* locked = nullptr);
  ~RsaSigner();
  RsaSigner(const RsaSigner&) = delete;
  RsaSigner& operator=(const RsaSigner&) = delete;

  // RSASSA-PKCS1-v1_5 with SHA-256 over `data` (raw signature bytes).
  Result<std::string> SignRs256(std::string_view data) const;
  bool has_certificate() const { return !thumbprint_sha1_.empty(); }
  // SHA-1 of the certificate's DER (raw bytes; base64url of it is the JWT "x5t").
  const std::string& thumbprint_sha1() const { return thumbprint_sha1_; }

 private:
  struct Keys;
  explicit RsaSigner(std::unique_ptr<Keys> keys, std::string thumbprint);
  std::unique_ptr<Keys> keys_;
  std::string thumbprint_sha1_;
};

// "<b64url(header)>.<b64url(payload)>.<b64url(RS256 signature)>"; `header` gets alg=RS256, typ=JWT.
Result<std::string> MakeJwtRs256(nlohmann::json header, const nlohmann::json& payload,
                                 const RsaSigner& signer);

}  // namespace nbu::azure
