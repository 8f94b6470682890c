// Managed identity tokens from the first source the environment names, in the Azure SDK's order
// (AZURE.md §12.5): App Service (IDENTITY_ENDPOINT + IDENTITY_HEADER, api-version 2019-08-01),
// App Service 2017 (MSI_ENDPOINT + MSI_SECRET), Cloud Shell (MSI_ENDPOINT alone), Azure Arc
// (IDENTITY_ENDPOINT + IMDS_ENDPOINT: a challenge answered from a local key file), else the Azure
// Instance Metadata Service (IMDS) on VMs, VM scale sets and AKS nodes.
#pragma once

#include "azure/token_credential.h"

#include <cstddef>
#include <memory>
#include <string>

namespace nbu::azure {

// The Azure Instance Metadata Service: a link-local address that answers only inside Azure
// (non-routable, reached without a gateway). The only place this address appears; tests and pod
// identity redirect it with AZURE_POD_IDENTITY_AUTHORITY_HOST.
inline constexpr const char* kImdsDefaultHost = "169.254.169.254";
inline constexpr const char* kImdsApiVersion = "2018-02-01";
inline constexpr const char* kAppServiceApiVersion = "2019-08-01";
inline constexpr const char* kAppService2017ApiVersion = "2017-09-01";
inline constexpr const char* kArcApiVersion = "2019-11-01";
// Where the Azure Connected Machine agent writes the key files its challenges name (Linux).
inline constexpr const char* kArcKeyDir = "/var/opt/azcmagent/tokens";
inline constexpr size_t kArcKeyMaxBytes = 4096;
// The variables that choose a user-assigned identity (at most one may be set).
inline constexpr const char* kClientIdVar = "AZURE_CLIENT_ID";
inline constexpr const char* kObjectIdVar = "APP_AZURE_MANAGED_IDENTITY_OBJECT_ID";
inline constexpr const char* kResourceIdVar = "APP_AZURE_MANAGED_IDENTITY_RESOURCE_ID";

struct ManagedIdentityOptions {
  TokenSourceOptions source;
  // A user-assigned identity, by at most one of these (else the environment's: AZURE_CLIENT_ID,
  // APP_AZURE_MANAGED_IDENTITY_OBJECT_ID, APP_AZURE_MANAGED_IDENTITY_RESOURCE_ID); none: the
  // system-assigned identity.
  std::string client_id;
  std::string object_id;    // the identity's object (principal) id
  std::string resource_id;  // its ARM resource id (/subscriptions/.../userAssignedIdentities/x)
  // Retries of 404 (identity endpoint updating), 410 (IMDS upgrading, back within 70 s), 429 and
  // 5xx, with exponential backoff and jitter (or Retry-After); other statuses fail at once.
  int max_attempts = 5;
  Duration base_delay = std::chrono::seconds(1);
  Duration max_delay = std::chrono::seconds(30);
  Duration min_delay_410 = std::chrono::seconds(10);
  Duration imds_upgrade_window = std::chrono::seconds(70);  // 410s are retried at least this long
  // DefaultAzureCredential's probe: the first IMDS request gets a 1 s connect timeout and, if it
  // gets no answer, no retries, so start-up off Azure is not held up. An HTTP answer shows IMDS is
  // there: a retryable one is retried as without the probe; 400 (no such identity) fails at once.
  bool probe = false;
  std::chrono::milliseconds probe_connect_timeout{1000};
  // Azure Arc: a challenge's key file must be a *.key file of at most kArcKeyMaxBytes directly in
  // this directory (tests point it at a temporary one).
  std::string arc_key_dir = kArcKeyDir;
};

class ManagedIdentityCredential final : public TokenCredential {
 public:
  enum class Source { kAppService, kAppService2017, kCloudShell, kArc, kImds };

  // The first source the environment names (see the file comment); IMDS at
  // AZURE_POD_IDENTITY_AUTHORITY_HOST ("host:port" or a URL) or kImdsDefaultHost. A user-assigned
  // identity from the options, else from the environment (kClientIdVar, kObjectIdVar or
  // kResourceIdVar; two of them are an error); Cloud Shell and Azure Arc have only the
  // system-assigned one, and any of them there is an error. Does no I/O.
  static Result<std::shared_ptr<ManagedIdentityCredential>> FromEnv(
      const EnvLookup& env, ManagedIdentityOptions options = {});
  // "managed-identity(imds, client_id=...)"; secrets are never shown.
  std::string Describe() const override;
  Source source() const { return source_; }

 private:
  ManagedIdentityCredential(Source source, std::string base_url, std::string secret,
                            ManagedIdentityOptions options);
  Result<AccessToken> FetchToken(std::stop_token stop) override;
  HttpRequest BuildRequest() const;
  // One request; for Azure Arc, its challenge answered with the key file's secret (scrubbed from
  // errors through `arc_secret`).
  Result<HttpResponse> Send(const HttpRequest& req, std::string* arc_secret) const;
  Duration RetryDelay(int attempt, const HttpResponse* resp) const;

  const Source source_;
  const std::string base_url_;  // token endpoint without query
  const std::string secret_;    // IDENTITY_HEADER or MSI_SECRET; never logged
  const ManagedIdentityOptions options_;
  const std::shared_ptr<HttpTransport> transport_;
  bool probe_pending_;  // touched only inside FetchToken (one fetch at a time)
};

}  // namespace nbu::azure
