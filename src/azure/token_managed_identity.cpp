#include "azure/token_managed_identity.h"

#include "azure/retry_policy.h"
#include "azure/url.h"
#include "util/crypto.h"
#include "util/fs.h"
#include "util/log.h"

#include <algorithm>

namespace nbu::azure {
namespace {

bool Retryable(long status) {
  return status == 404 || status == 410 || status == 429 || status >= 500;
}

const char* SourceName(ManagedIdentityCredential::Source source) {
  using Source = ManagedIdentityCredential::Source;
  switch (source) {
    case Source::kAppService: return "app-service";
    case Source::kAppService2017: return "app-service-2017";
    case Source::kCloudShell: return "cloud-shell";
    case Source::kArc: return "azure-arc";
    case Source::kImds: break;
  }
  return "imds";
}

// The secret an Azure Arc challenge points to (`WWW-Authenticate: Basic realm=<path>`), after the
// Azure SDK's checks: a regular *.key file (not a link) directly in `dir`, at most
// kArcKeyMaxBytes. Anything else is refused: the path comes from the network.
Result<std::string> ReadArcKey(const HttpResponse& resp, const std::string& dir,
                               const std::string& who) {
  const std::string* challenge = resp.Header("www-authenticate");
  if (challenge == nullptr) {
    return Status(ErrorKind::kAuth, who + ": HTTP 401 without a WWW-Authenticate challenge");
  }
  const size_t eq = challenge->find('=');
  if (eq == std::string::npos || challenge->find('=', eq + 1) != std::string::npos) {
    return Status(ErrorKind::kAuth, who + ": unexpected WWW-Authenticate challenge");
  }
  const std::string path = challenge->substr(eq + 1);
  const std::string refused = who + ": refusing the challenge's key file " + path + ": ";
  if (fs::Dirname(path) != dir || path.size() <= 4 || !path.ends_with(".key")) {
    return Status(ErrorKind::kAuth, refused + "not a *.key file in " + dir);
  }
  // Not a link, a FIFO (opening one would wait for a writer) or a device: lstat first.
  auto st = fs::Stat(path);
  if (!st.ok()) return Status(ErrorKind::kAuth, refused + st.status().message());
  if (!st->is_regular) return Status(ErrorKind::kAuth, refused + "not a regular file");
  auto key = fs::ReadSmallFile(path, kArcKeyMaxBytes);  // refuses a larger one
  if (!key.ok()) return Status(ErrorKind::kAuth, refused + key.status().message());
  // It goes into a header line: a final line break is dropped, any other control character is
  // refused (it would end the header early).
  while (!key->empty() && (key->back() == '\n' || key->back() == '\r')) key->pop_back();
  if (std::any_of(key->begin(), key->end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return Status(ErrorKind::kAuth, refused + "it holds control characters");
  }
  return *key;
}

}  // namespace

ManagedIdentityCredential::ManagedIdentityCredential(Source source, std::string base_url,
                                                     std::string secret,
                                                     ManagedIdentityOptions options)
    : TokenCredential(*options.source.clock),
      source_(source),
      base_url_(std::move(base_url)),
      secret_(std::move(secret)),
      options_(std::move(options)),
      transport_(TokenTransport(options_.source)),
      probe_pending_(options_.probe) {}

Result<std::shared_ptr<ManagedIdentityCredential>> ManagedIdentityCredential::FromEnv(
    const EnvLookup& env, ManagedIdentityOptions options) {
  // The caller's choice, else the environment's; more than one is ambiguous.
  const struct {
    std::string* value;
    const char* var;
  } ids[] = {{&options.client_id, kClientIdVar},
             {&options.object_id, kObjectIdVar},
             {&options.resource_id, kResourceIdVar}};
  if (options.client_id.empty() && options.object_id.empty() && options.resource_id.empty()) {
    for (const auto& id : ids) {
      if (auto v = env(id.var); v && !v->empty()) *id.value = *v;
    }
  }
  std::string chosen;  // the variables that name a user-assigned identity
  for (const auto& id : ids) {
    if (!id.value->empty()) chosen += std::string(chosen.empty() ? "" : ", ") + id.var;
  }
  if (chosen.find(',') != std::string::npos) {
    return Status(
        ErrorKind::kAuth,
        "managed identity: a user-assigned identity is chosen by one id, not several: " + chosen);
  }
  auto make = [&](Source source, std::string url, std::string secret) {
    return std::shared_ptr<ManagedIdentityCredential>(
        new ManagedIdentityCredential(source, std::move(url), std::move(secret), options));
  };
  const auto endpoint = env("IDENTITY_ENDPOINT");
  const auto msi_endpoint = env("MSI_ENDPOINT");
  if (auto header = env("IDENTITY_HEADER"); endpoint && header) {
    // Service Fabric sets these two and its endpoint's certificate thumbprint: its endpoint
    // takes another protocol (and a self-signed certificate), which is not implemented here.
    if (env("IDENTITY_SERVER_THUMBPRINT")) {
      return Status(ErrorKind::kAuth,
                    "managed identity: Service Fabric (IDENTITY_SERVER_THUMBPRINT is set) is not "
                    "supported; use a service principal or workload identity");
    }
    return make(Source::kAppService, *endpoint, *header);
  }
  if (auto secret = env("MSI_SECRET"); msi_endpoint && secret) {
    return make(Source::kAppService2017, *msi_endpoint, *secret);
  }
  const bool cloud_shell = msi_endpoint.has_value();
  if (cloud_shell || (endpoint && env("IMDS_ENDPOINT"))) {
    const char* where = cloud_shell ? "Cloud Shell" : "Azure Arc";
    if (!chosen.empty()) {
      return Status(ErrorKind::kAuth, std::string("managed identity: ") + where +
                                          " has only the system-assigned identity; unset " +
                                          chosen);
    }
    return cloud_shell ? make(Source::kCloudShell, *msi_endpoint, "")
                       : make(Source::kArc, *endpoint, "");
  }
  std::string authority = std::string("http://") + kImdsDefaultHost;
  if (auto host = env("AZURE_POD_IDENTITY_AUTHORITY_HOST")) {
    authority = host->find("://") == std::string::npos ? "http://" + *host : *host;
    while (!authority.empty() && authority.back() == '/') authority.pop_back();
  }
  return make(Source::kImds, authority + "/metadata/identity/oauth2/token", "");
}

std::string ManagedIdentityCredential::Describe() const {
  std::string who = !options_.client_id.empty()     ? "client_id=" + options_.client_id
                    : !options_.object_id.empty()   ? "object_id=" + options_.object_id
                    : !options_.resource_id.empty() ? "resource_id=" + options_.resource_id
                                                    : "system-assigned";
  return std::string("managed-identity(") + SourceName(source_) + ", " + who + ")";
}

HttpRequest ManagedIdentityCredential::BuildRequest() const {
  HttpRequest req;
  req.timeout = options_.source.timeout;
  req.connect_timeout = options_.source.connect_timeout;
  const std::string resource = UrlEncodeQueryValue(kStorageResource);
  if (source_ == Source::kCloudShell) {  // a form, like Entra ID's token endpoint
    req.method = "POST";
    req.url = base_url_;
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}, {"Metadata", "true"}};
    req.body = "resource=" + resource;
    return req;
  }
  const char* version = kImdsApiVersion;
  // The query parameters that pick a user-assigned identity: App Service calls the object id
  // principal_id and the resource id mi_res_id, IMDS object_id and msi_res_id.
  const char* client_param = "client_id";
  const char* object_param = "principal_id";
  const char* resource_param = "mi_res_id";
  switch (source_) {
    case Source::kAppService:
      version = kAppServiceApiVersion;
      req.headers.emplace_back("X-IDENTITY-HEADER", secret_);
      break;
    case Source::kAppService2017:
      version = kAppService2017ApiVersion;
      client_param = "clientid";
      req.headers.emplace_back("secret", secret_);
      break;
    case Source::kArc:
      version = kArcApiVersion;
      req.headers.emplace_back("Metadata", "true");
      break;
    case Source::kCloudShell:
    case Source::kImds:
      object_param = "object_id";
      resource_param = "msi_res_id";
      req.headers.emplace_back("Metadata", "true");
      break;
  }
  req.method = "GET";
  req.url = base_url_ + (base_url_.find('?') == std::string::npos ? "?" : "&") +
            "api-version=" + version + "&resource=" + resource;
  for (const auto& [param, value] :
       {std::pair{client_param, &options_.client_id}, std::pair{object_param, &options_.object_id},
        std::pair{resource_param, &options_.resource_id}}) {
    if (!value->empty()) req.url += std::string("&") + param + "=" + UrlEncodeQueryValue(*value);
  }
  return req;
}

Result<HttpResponse> ManagedIdentityCredential::Send(const HttpRequest& req,
                                                     std::string* arc_secret) const {
  Result<HttpResponse> resp = transport_->Send(req);
  if (source_ != Source::kArc || !resp.ok() || resp->status != 401) return resp;
  auto key = ReadArcKey(*resp, options_.arc_key_dir, Describe());
  if (!key.ok()) return key.status();
  *arc_secret = std::move(*key);
  HttpRequest answered = req;
  answered.headers.emplace_back("Authorization", "Basic " + *arc_secret);
  return transport_->Send(answered);
}

Duration ManagedIdentityCredential::RetryDelay(int attempt, const HttpResponse* resp) const {
  // The endpoint's hint, read as the blob client reads storage's (seconds or an HTTP date);
  // else backoff, jittered so that the pods of a node (which share its IMDS) do not retry in step.
  const auto hint = resp != nullptr ? ServerRetryHint(*resp) : std::nullopt;
  Duration d =
      hint ? std::min<Duration>(*hint, options_.max_delay)
           : ExponentialBackoff(attempt, options_.base_delay, options_.max_delay, FastRandom01());
  // A 410 is retried for as long as the upgrade window lasts, counted in waits: each wait has a
  // floor, or a "Retry-After: 0" would retry at once, and without end.
  if (resp != nullptr && resp->status == 410) d = std::max(d, options_.min_delay_410);
  return d;
}

Result<AccessToken> ManagedIdentityCredential::FetchToken(std::stop_token stop) {
  const bool probe = probe_pending_ && source_ == Source::kImds;
  probe_pending_ = false;
  HttpRequest req = BuildRequest();
  req.stop = stop;
  if (probe) req.connect_timeout = options_.probe_connect_timeout;
  // One try for an early refresh of a token that still works (the caller keeps it and tries
  // again in kRetryAfterFailure). The probe's one try is about reachability alone: once IMDS
  // answers (410 while it is upgraded, 429, 5xx), it is there, and is retried as in its own mode
  // (as the Azure SDKs do); only no answer at all moves the chain on.
  const int full = HoldsAValidToken() ? 1 : std::max(1, options_.max_attempts);
  int attempts = probe ? 1 : full;
  const std::string who = Describe();
  Status last;
  int made = 0;
  Duration waited{0};
  std::string arc_secret;
  for (int attempt = 1;; ++attempt) {
    made = attempt;
    Result<HttpResponse> resp = Send(req, &arc_secret);
    if (!resp.ok() && resp.status().kind() == ErrorKind::kCancelled) {
      return Status(ErrorKind::kCancelled, who + ": stopped");
    }
    if (resp.ok() && resp->status == 200) {
      return ParseTokenResponse(*resp, options_.source.clock->WallNow(), who);
    }
    const std::vector<std::string> secrets = {secret_, arc_secret};
    if (!resp.ok() && resp.status().kind() == ErrorKind::kAuth) {
      return Status(ErrorKind::kAuth, ScrubSecrets(resp.status().message(), secrets));
    }
    if (!resp.ok()) {
      last = Status(ErrorKind::kUnavailable, who + ": endpoint not reachable: " +
                                                 ScrubSecrets(resp.status().message(), secrets));
    } else {
      last = ParseTokenResponse(*resp, options_.source.clock->WallNow(), who, secrets).status();
      if (!Retryable(resp->status)) return last;
      if (probe && attempt == 1) {
        attempts = full;
        req.connect_timeout = options_.source.connect_timeout;
      }
    }
    // IMDS answers 410 while it is upgraded, for up to 70 s: that long is waited out in full.
    const bool upgrading =
        resp.ok() && resp->status == 410 && attempts > 1 && waited < options_.imds_upgrade_window;
    if (attempt >= attempts && !upgrading) break;
    const Duration delay = RetryDelay(attempt, resp.ok() ? &*resp : nullptr);
    waited += delay;
    LogWarn("managed identity token request failed; retrying", {{"credential", who},
                                                                {"attempt", attempt},
                                                                {"delay_s", ToSeconds(delay)},
                                                                {"error", last.message()}});
    if (!options_.source.clock->SleepFor(delay, stop)) {
      return Status(ErrorKind::kCancelled, who + ": stopped");
    }
  }
  return AfterAttempts(last, made);
}

}  // namespace nbu::azure
