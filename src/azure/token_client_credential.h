// Entra ID application credentials (OAuth 2.0 client credentials grant against
// {authority}/{tenant}/oauth2/v2.0/token): client secret, client certificate (RS256 assertion) and
// AKS workload identity (federated token file as the assertion). AZURE.md §12.2–12.4.
// While no valid token is cached, a request nothing answers, or that gets 408, 429, 500, 502, 503
// or 504, is tried up to 4 times in all (backoff with jitter, or Retry-After up to 60 s); a
// refresh while the cached token still works is tried once.
#pragma once

#include "azure/token_credential.h"
#include "azure/token_jwt.h"

#include <memory>
#include <string>

namespace nbu::azure {

inline constexpr const char* kDefaultAuthorityHost = "https://login.microsoftonline.com/";

// Where and as whom to ask for tokens.
struct EntraApp {
  std::string tenant_id;
  std::string client_id;
  std::string authority_host;  // empty: kDefaultAuthorityHost; must be https unless loopback
};

// Checks `app` (tenant characters, authority scheme) and returns its token URL; kAuth error naming
// the variable otherwise (AZURE_TENANT_ID, AZURE_AUTHORITY_HOST).
Result<std::string> EntraTokenUrl(const EntraApp& app);

// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_AUTHORITY_HOST from `env`; kAuth error naming the missing
// variables when tenant or client id is unset.
Result<EntraApp> EntraAppFromEnv(const EnvLookup& env);

class ClientSecretCredential final : public TokenCredential {
 public:
  static Result<std::shared_ptr<ClientSecretCredential>> Create(EntraApp app, std::string secret,
                                                                TokenSourceOptions options = {});
  // AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET (+ AZURE_AUTHORITY_HOST).
  static Result<std::shared_ptr<ClientSecretCredential>> FromEnv(const EnvLookup& env,
                                                                 TokenSourceOptions options = {});
  // "client-secret(tenant=..., client_id=...)"
  std::string Describe() const override;

 private:
  ClientSecretCredential(EntraApp app, std::string token_url, std::string secret,
                         TokenSourceOptions options);
  Result<AccessToken> FetchToken(std::stop_token stop) override;

  const EntraApp app_;
  const std::string token_url_;
  const std::string secret_;  // never logged
  const TokenSourceOptions options_;
  const std::shared_ptr<HttpTransport> transport_;
};

// Signs a fresh client assertion (RS256, x5t = SHA-1 thumbprint, aud = token URL, 10 min) per
// fetch.
class ClientCertificateCredential final : public TokenCredential {
 public:
  // `pem_path`: a PEM file with the certificate and its private key, unencrypted or encrypted
  // with `password` (a secret: never in messages; empty = none).
  static Result<std::shared_ptr<ClientCertificateCredential>> Create(
      EntraApp app, const std::string& pem_path, TokenSourceOptions options = {},
      const std::string& password = {});
  // AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_CERTIFICATE_PATH (+ AZURE_AUTHORITY_HOST,
  // AZURE_CLIENT_CERTIFICATE_PASSWORD for an encrypted key).
  static Result<std::shared_ptr<ClientCertificateCredential>> FromEnv(
      const EnvLookup& env, TokenSourceOptions options = {});
  std::string Describe() const override;

 private:
  ClientCertificateCredential(EntraApp app, std::string token_url, std::string pem_path,
                              std::shared_ptr<RsaSigner> signer, TokenSourceOptions options);
  Result<AccessToken> FetchToken(std::stop_token stop) override;

  const EntraApp app_;
  const std::string token_url_;
  const std::string pem_path_;
  const std::shared_ptr<RsaSigner> signer_;
  const TokenSourceOptions options_;
  const std::shared_ptr<HttpTransport> transport_;
};

// Reads the federated token file on every fetch (the kubelet rotates it) and sends its content as
// client_assertion (jwt-bearer).
class WorkloadIdentityCredential final : public TokenCredential {
 public:
  static Result<std::shared_ptr<WorkloadIdentityCredential>> Create(
      EntraApp app, std::string token_file, TokenSourceOptions options = {});
  // AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_FEDERATED_TOKEN_FILE (+ AZURE_AUTHORITY_HOST).
  static Result<std::shared_ptr<WorkloadIdentityCredential>> FromEnv(
      const EnvLookup& env, TokenSourceOptions options = {});
  std::string Describe() const override;

 private:
  WorkloadIdentityCredential(EntraApp app, std::string token_url, std::string token_file,
                             TokenSourceOptions options);
  Result<AccessToken> FetchToken(std::stop_token stop) override;

  const EntraApp app_;
  const std::string token_url_;
  const std::string token_file_;
  const TokenSourceOptions options_;
  const std::shared_ptr<HttpTransport> transport_;
};

}  // namespace nbu::azure
