#include "azure/token_client_credential.h"

#include "azure/retry_policy.h"
#include "azure/url.h"
#include "util/crypto.h"
#include "util/log.h"

#include <fstream>
#include <sstream>

namespace nbu::azure {
namespace {

constexpr const char* kJwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
constexpr auto kAssertionLifetime = std::chrono::minutes(10);
// A token request while no valid token is cached, as the Azure SDKs retry it: three retries,
// 0.8 s exponential backoff with jitter, the endpoint's Retry-After honoured up to 60 s.
constexpr RetryOptions kTokenRetry{.max_attempts = 4,
                                   .base_delay = std::chrono::milliseconds(800),
                                   .max_delay = std::chrono::milliseconds(60000)};

// POSTs a client-credentials form to `url` and parses the answer; `secrets` are scrubbed from
// every error message. With `retry`, what may pass (no answer, 408, 429, 5xx but 501 and 505) is
// tried kTokenRetry.max_attempts times in all, after backoff or the endpoint's Retry-After, as
// the Azure SDKs do; without it (a refresh while the cached token still works), once.
Result<AccessToken> PostForm(HttpTransport& transport, const TokenSourceOptions& options,
                             const std::string& url, std::string body, const std::string& who,
                             const std::vector<std::string>& secrets, bool retry,
                             std::stop_token stop) {
  HttpRequest req;
  req.method = "POST";
  req.url = url;
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                 {"Accept", "application/json"}};
  req.body = std::move(body);
  req.timeout = options.timeout;
  req.connect_timeout = options.connect_timeout;
  req.stop = stop;
  RetryOptions policy = kTokenRetry;
  if (!retry) policy.max_attempts = 1;
  for (int attempt = 1;; ++attempt) {
    Result<HttpResponse> resp = transport.Send(req);
    if (!resp.ok() && resp.status().kind() == ErrorKind::kCancelled) {
      return Status(ErrorKind::kCancelled, who + ": stopped");
    }
    if (resp.ok() && resp->status == 200) {
      return ParseTokenResponse(*resp, options.clock->WallNow(), who, secrets);
    }
    // Its messages quote the answer only through fields it scrubs of `secrets`.
    Status failed = resp.ok()
                        ? ParseTokenResponse(*resp, options.clock->WallNow(), who, secrets).status()
                        : Status(ErrorKind::kUnavailable,
                                 ScrubSecrets(who + ": " + resp.status().message(), secrets));
    const auto delay = RetryDelay(policy, attempt, resp, FastRandom01());
    if (!delay) return AfterAttempts(failed, attempt);
    LogWarn("token request failed; retrying", {{"credential", who},
                                               {"attempt", attempt},
                                               {"delay_s", ToSeconds(*delay)},
                                               {"error", failed.message()}});
    if (!options.clock->SleepFor(*delay, stop)) {
      return Status(ErrorKind::kCancelled, who + ": stopped");
    }
  }
}

bool ValidTenant(const std::string& t) {
  return !t.empty() && t.find_first_not_of(
                           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                           "0123456789.-_") == std::string::npos;
}

Result<std::string> ReadWholeFile(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status(ErrorKind::kAuth, what + ": cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<std::string> EntraTokenUrl(const EntraApp& app) {
  if (!ValidTenant(app.tenant_id)) {
    return Status(ErrorKind::kAuth, "AZURE_TENANT_ID: empty or not a tenant id or domain");
  }
  std::string authority = app.authority_host.empty() ? kDefaultAuthorityHost : app.authority_host;
  if (Status s = CheckSecureUrl(authority, "AZURE_AUTHORITY_HOST"); !s.ok()) return s;
  while (!authority.empty() && authority.back() == '/') authority.pop_back();
  // ADFS has no v2.0 endpoint.
  const char* path = app.tenant_id == "adfs" ? "/oauth2/token" : "/oauth2/v2.0/token";
  return authority + "/" + app.tenant_id + path;
}

Result<EntraApp> EntraAppFromEnv(const EnvLookup& env) {
  EntraApp app;
  std::string missing;
  if (auto v = env("AZURE_TENANT_ID"))
    app.tenant_id = *v;
  else
    missing += " AZURE_TENANT_ID";
  if (auto v = env("AZURE_CLIENT_ID"))
    app.client_id = *v;
  else
    missing += " AZURE_CLIENT_ID";
  if (auto v = env("AZURE_AUTHORITY_HOST")) app.authority_host = *v;
  if (!missing.empty()) return Status(ErrorKind::kAuth, "not set:" + missing);
  return app;
}

// --- client secret ---

ClientSecretCredential::ClientSecretCredential(EntraApp app, std::string token_url,
                                               std::string secret, TokenSourceOptions options)
    : TokenCredential(*options.clock),
      app_(std::move(app)),
      token_url_(std::move(token_url)),
      secret_(std::move(secret)),
      options_(options),
      transport_(TokenTransport(options)) {}

Result<std::shared_ptr<ClientSecretCredential>> ClientSecretCredential::Create(
    EntraApp app, std::string secret, TokenSourceOptions options) {
  if (secret.empty()) return Status(ErrorKind::kAuth, "AZURE_CLIENT_SECRET: empty");
  Result<std::string> url = EntraTokenUrl(app);
  if (!url.ok()) return url.status();
  return std::shared_ptr<ClientSecretCredential>(
      new ClientSecretCredential(std::move(app), *url, std::move(secret), options));
}

Result<std::shared_ptr<ClientSecretCredential>> ClientSecretCredential::FromEnv(
    const EnvLookup& env, TokenSourceOptions options) {
  Result<EntraApp> app = EntraAppFromEnv(env);
  auto secret = env("AZURE_CLIENT_SECRET");
  if (!app.ok() || !secret) {
    std::string m = app.ok() ? "not set:" : app.status().message();
    if (!secret) m += " AZURE_CLIENT_SECRET";
    return Status(ErrorKind::kAuth, m);
  }
  return Create(*app, *secret, options);
}

std::string ClientSecretCredential::Describe() const {
  return "client-secret(tenant=" + app_.tenant_id + ", client_id=" + app_.client_id + ")";
}

Result<AccessToken> ClientSecretCredential::FetchToken(std::stop_token stop) {
  std::string body = FormEncode({{"grant_type", "client_credentials"},
                                 {"client_id", app_.client_id},
                                 {"client_secret", secret_},
                                 {"scope", kStorageScope}});
  return PostForm(*transport_, options_, token_url_, std::move(body), Describe(),
                  {secret_, UrlEncodeQueryValue(secret_)}, !HoldsAValidToken(), std::move(stop));
}

// --- client certificate ---

ClientCertificateCredential::ClientCertificateCredential(EntraApp app, std::string token_url,
                                                         std::string pem_path,
                                                         std::shared_ptr<RsaSigner> signer,
                                                         TokenSourceOptions options)
    : TokenCredential(*options.clock),
      app_(std::move(app)),
      token_url_(std::move(token_url)),
      pem_path_(std::move(pem_path)),
      signer_(std::move(signer)),
      options_(options),
      transport_(TokenTransport(options)) {}

Result<std::shared_ptr<ClientCertificateCredential>> ClientCertificateCredential::Create(
    EntraApp app, const std::string& pem_path, TokenSourceOptions options,
    const std::string& password) {
  Result<std::string> url = EntraTokenUrl(app);
  if (!url.ok()) return url.status();
  Result<std::string> pem = ReadWholeFile(pem_path, "AZURE_CLIENT_CERTIFICATE_PATH");
  if (!pem.ok()) return pem.status();
  bool locked = false;
  auto signer = RsaSigner::FromPem(*pem, password, &locked);
  if (locked) {
    return Status(
        ErrorKind::kAuth,
        std::string("AZURE_CLIENT_CERTIFICATE_PASSWORD: ") +
            (password.empty() ? "not set, and the private key in " + pem_path + " is encrypted"
                              : "does not open the encrypted private key in " + pem_path));
  }
  if (!signer.ok()) {
    return Status(ErrorKind::kAuth,
                  "AZURE_CLIENT_CERTIFICATE_PATH: " + pem_path + ": " + signer.status().message());
  }
  if (!(*signer)->has_certificate()) {
    return Status(ErrorKind::kAuth,
                  "AZURE_CLIENT_CERTIFICATE_PATH: " + pem_path + ": no certificate in the PEM");
  }
  return std::shared_ptr<ClientCertificateCredential>(
      new ClientCertificateCredential(std::move(app), *url, pem_path, *signer, options));
}

Result<std::shared_ptr<ClientCertificateCredential>> ClientCertificateCredential::FromEnv(
    const EnvLookup& env, TokenSourceOptions options) {
  Result<EntraApp> app = EntraAppFromEnv(env);
  auto path = env("AZURE_CLIENT_CERTIFICATE_PATH");
  if (!app.ok() || !path) {
    std::string m = app.ok() ? "not set:" : app.status().message();
    if (!path) m += " AZURE_CLIENT_CERTIFICATE_PATH";
    return Status(ErrorKind::kAuth, m);
  }
  return Create(*app, *path, options, env("AZURE_CLIENT_CERTIFICATE_PASSWORD").value_or(""));
}

std::string ClientCertificateCredential::Describe() const {
  return "client-certificate(tenant=" + app_.tenant_id + ", client_id=" + app_.client_id +
         ", thumbprint=" + HexEncode(signer_->thumbprint_sha1()) + ")";
}

Result<AccessToken> ClientCertificateCredential::FetchToken(std::stop_token stop) {
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(options_.clock->WallNow().time_since_epoch())
          .count();
  const nlohmann::json header = {{"x5t", Base64UrlEncode(signer_->thumbprint_sha1())}};
  const nlohmann::json claims = {
      {"aud", token_url_},
      {"iss", app_.client_id},
      {"sub", app_.client_id},
      {"jti", HexEncode(RandomBytes(16))},
      {"nbf", now},
      {"iat", now},
      {"exp", now + std::chrono::duration_cast<std::chrono::seconds>(kAssertionLifetime).count()}};
  Result<std::string> assertion = MakeJwtRs256(header, claims, *signer_);
  if (!assertion.ok())
    return Status(ErrorKind::kAuth, Describe() + ": " + assertion.status().message());
  std::string body = FormEncode({{"grant_type", "client_credentials"},
                                 {"client_assertion_type", kJwtBearer},
                                 {"client_id", app_.client_id},
                                 {"scope", kStorageScope},
                                 {"client_assertion", *assertion}});
  return PostForm(*transport_, options_, token_url_, std::move(body), Describe(),
                  {*assertion, UrlEncodeQueryValue(*assertion)}, !HoldsAValidToken(),
                  std::move(stop));
}

// --- workload identity ---

WorkloadIdentityCredential::WorkloadIdentityCredential(EntraApp app, std::string token_url,
                                                       std::string token_file,
                                                       TokenSourceOptions options)
    : TokenCredential(*options.clock),
      app_(std::move(app)),
      token_url_(std::move(token_url)),
      token_file_(std::move(token_file)),
      options_(options),
      transport_(TokenTransport(options)) {}

Result<std::shared_ptr<WorkloadIdentityCredential>> WorkloadIdentityCredential::Create(
    EntraApp app, std::string token_file, TokenSourceOptions options) {
  if (token_file.empty()) return Status(ErrorKind::kAuth, "AZURE_FEDERATED_TOKEN_FILE: empty");
  Result<std::string> url = EntraTokenUrl(app);
  if (!url.ok()) return url.status();
  return std::shared_ptr<WorkloadIdentityCredential>(
      new WorkloadIdentityCredential(std::move(app), *url, std::move(token_file), options));
}

Result<std::shared_ptr<WorkloadIdentityCredential>> WorkloadIdentityCredential::FromEnv(
    const EnvLookup& env, TokenSourceOptions options) {
  Result<EntraApp> app = EntraAppFromEnv(env);
  auto file = env("AZURE_FEDERATED_TOKEN_FILE");
  if (!app.ok() || !file) {
    std::string m = app.ok() ? "not set:" : app.status().message();
    if (!file) m += " AZURE_FEDERATED_TOKEN_FILE";
    return Status(ErrorKind::kAuth, m);
  }
  return Create(*app, *file, options);
}

std::string WorkloadIdentityCredential::Describe() const {
  return "workload-identity(tenant=" + app_.tenant_id + ", client_id=" + app_.client_id +
         ", token_file=" + token_file_ + ")";
}

Result<AccessToken> WorkloadIdentityCredential::FetchToken(std::stop_token stop) {
  // Re-read on every fetch: the kubelet rotates the projected token.
  Result<std::string> assertion = ReadWholeFile(token_file_, Describe());
  if (!assertion.ok()) return assertion.status();
  const std::string jwt = Trim(*assertion);
  if (jwt.empty()) return Status(ErrorKind::kAuth, Describe() + ": the token file is empty");
  std::string body = FormEncode({{"grant_type", "client_credentials"},
                                 {"client_assertion_type", kJwtBearer},
                                 {"client_id", app_.client_id},
                                 {"scope", kStorageScope},
                                 {"client_assertion", jwt}});
  return PostForm(*transport_, options_, token_url_, std::move(body), Describe(),
                  {jwt, UrlEncodeQueryValue(jwt)}, !HoldsAValidToken(), std::move(stop));
}

}  // namespace nbu::azure
