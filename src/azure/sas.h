// SAS credential: appends a shared access signature token to each request URL.
#pragma once

#include "azure/credential.h"

#include <string>
#include <vector>

namespace nbu::azure {

// What is wrong with a SAS token as given (a leading '?' is fine), one line per problem, or
// nothing: a whole SAS URL pasted in its place (then that alone), no signature (or an empty
// one), permissions (sp) without write or read, a scope without blobs, or an expiry (se) already
// past. Each fails every upload with 403. No line repeats the signature.
std::vector<std::string> SasTokenProblems(const std::string& token);

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
