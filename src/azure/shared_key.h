// Shared Key authorization: signs each request with HMAC-SHA256 of the account key over the
// canonical string-to-sign of the Blob service (versions >= 2015-02-21).
#pragma once

#include "azure/credential.h"
#include "util/clock.h"
#include "util/crypto.h"

#include <memory>
#include <string>
#include <string_view>

namespace nbu::azure {

// The string-to-sign of `req` (12 standard header lines, canonicalized x-ms-* headers,
// canonicalized resource "/<account><path as sent><\nname:value for sorted decoded query>").
// Pure: reads `req` only; `x-ms-date` must already be set for a real request.
std::string SharedKeyStringToSign(const HttpRequest& req, const std::string& account);

// base64(HMAC-SHA256(key, string_to_sign)); `key` holds the decoded (raw) account key.
std::string SharedKeySignature(const HmacSha256Key& key, std::string_view string_to_sign);

// RFC 1123 date as used by x-ms-date, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string FormatRfc1123(WallTime t);

class SharedKeyCredential final : public Credential {
 public:
  // `account_key_base64` as shown by the portal; kAuth error (without the key) if not base64.
  static Result<std::shared_ptr<SharedKeyCredential>> Create(std::string account,
                                                             std::string_view account_key_base64,
                                                             Clock& clock = RealClock::Instance());

  // Sets a fresh x-ms-date and the Authorization header. Thread-safe (no mutable state).
  Status Authorize(HttpRequest& req, const std::string& account, bool path_style) override;
  std::string Describe() const override;

 private:
  SharedKeyCredential(std::string account, std::string_view key, Clock& clock)
      : account_(std::move(account)), key_(key), clock_(clock) {}

  const std::string account_;
  const HmacSha256Key key_;  // never logged
  Clock& clock_;
};

}  // namespace nbu::azure
