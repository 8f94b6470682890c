// SAS credential: appends a shared access signature token to each request URL.
#pragma once

#include "azure/credential.h"

#include <string>

namespace nbu::azure {

class SasCredential final : public Credential {
 public:
  // `token` as given by the portal or a connection string; a leading '?' is dropped.
  explicit SasCredential(std::string token);

  // Appends the token to the query (after '?' or '&'). Thread-safe.
  Status Authorize(HttpRequest& req, const std::string& account, bool path_style) override;
  // "sas(sv=..., sp=..., se=...)": the non-secret fields only; the signature is never shown.
  std::string Describe() const override;

 private:
  const std::string token_;
};

}  // namespace nbu::azure
