#include "azure/token_managed_identity.h"

#include "azure/url.h"
#include "util/log.h"

#include <algorithm>
#include <cstdlib>

namespace nbu::azure {
namespace {

bool Retryable(long status) {
  return status == 404 || status == 410 || status == 429 || status >= 500;
}

}  // namespace

ManagedIdentityCredential::ManagedIdentityCredential(Source source, std::string base_url,
                                                     std::string identity_header,
                                                     ManagedIdentityOptions options)
    : TokenCredential(*options.source.clock),
      source_(source),
      base_url_(std::move(base_url)),
      identity_header_(std::move(identity_header)),
      options_(std::move(options)),
      transport_(TokenTransport(options_.source)),
      probe_pending_(options_.probe) {}

Result<std::shared_ptr<ManagedIdentityCredential>> ManagedIdentityCredential::FromEnv(
    const EnvLookup& env, ManagedIdentityOptions options) {
  if (options.client_id.empty()) {
    if (auto id = env("AZURE_CLIENT_ID")) options.client_id = *id;
  }
  auto endpoint = env("IDENTITY_ENDPOINT");
  auto header = env("IDENTITY_HEADER");
  if (endpoint && header) {
    return std::shared_ptr<ManagedIdentityCredential>(
        new ManagedIdentityCredential(Source::kAppService, *endpoint, *header, options));
  }
  std::string authority = std::string("http://") + kImdsDefaultHost;
  if (auto host = env("AZURE_POD_IDENTITY_AUTHORITY_HOST")) {
    authority = host->find("://") == std::string::npos ? "http://" + *host : *host;
    while (!authority.empty() && authority.back() == '/') authority.pop_back();
  }
  return std::shared_ptr<ManagedIdentityCredential>(new ManagedIdentityCredential(
      Source::kImds, authority + "/metadata/identity/oauth2/token", "", options));
}

std::string ManagedIdentityCredential::Describe() const {
  std::string d =
      source_ == Source::kAppService ? "managed-identity(app-service" : "managed-identity(imds";
  d += options_.client_id.empty() ? ", system-assigned" : ", client_id=" + options_.client_id;
  return d + ")";
}

HttpRequest ManagedIdentityCredential::BuildRequest() const {
  HttpRequest req;
  req.method = "GET";
  const bool app_service = source_ == Source::kAppService;
  req.url = base_url_ + (base_url_.find('?') == std::string::npos ? "?" : "&") +
            "api-version=" + (app_service ? kAppServiceApiVersion : kImdsApiVersion) +
            "&resource=" + UrlEncodeQueryValue(kStorageResource);
  if (!options_.client_id.empty())
    req.url += "&client_id=" + UrlEncodeQueryValue(options_.client_id);
  if (app_service) {
    req.headers.emplace_back("X-IDENTITY-HEADER", identity_header_);
  } else {
    req.headers.emplace_back("Metadata", "true");
  }
  req.timeout = options_.source.timeout;
  req.connect_timeout = options_.source.connect_timeout;
  return req;
}

Duration ManagedIdentityCredential::RetryDelay(int attempt, const HttpResponse* resp) const {
  if (resp != nullptr) {
    if (const std::string* ra = resp->Header("retry-after")) {
      const long secs = std::strtol(ra->c_str(), nullptr, 10);
      if (secs > 0) return std::min<Duration>(std::chrono::seconds(secs), options_.max_delay);
    }
  }
  Duration d = options_.base_delay * (int64_t{1} << std::min(attempt - 1, 20));
  d = std::min(d, options_.max_delay);
  if (resp != nullptr && resp->status == 410) d = std::max(d, options_.min_delay_410);
  return d;
}

Result<AccessToken> ManagedIdentityCredential::FetchToken() {
  const bool probe = probe_pending_ && source_ == Source::kImds;
  probe_pending_ = false;
  HttpRequest req = BuildRequest();
  if (probe) req.connect_timeout = options_.probe_connect_timeout;
  const int attempts = probe ? 1 : std::max(1, options_.max_attempts);
  const std::string who = Describe();
  Status last;
  int made = 0;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    made = attempt;
    Result<HttpResponse> resp = transport_->Send(req);
    if (resp.ok() && resp->status == 200) {
      return ParseTokenResponse(*resp, options_.source.clock->WallNow(), who);
    }
    if (!resp.ok()) {
      last = Status(ErrorKind::kUnavailable,
                    who + ": endpoint not reachable: " +
                        ScrubSecrets(resp.status().message(), {identity_header_}));
    } else {
      Result<AccessToken> err = ParseTokenResponse(*resp, options_.source.clock->WallNow(), who);
      last = Status(err.status().kind(), ScrubSecrets(err.status().message(), {identity_header_}));
      if (!Retryable(resp->status)) return last;
    }
    if (attempt == attempts) break;
    const Duration delay = RetryDelay(attempt, resp.ok() ? &*resp : nullptr);
    LogWarn("managed identity token request failed; retrying", {{"credential", who},
                                                                {"attempt", attempt},
                                                                {"delay_s", ToSeconds(delay)},
                                                                {"error", last.message()}});
    if (!options_.source.clock->SleepFor(delay, std::stop_token{})) break;
  }
  if (made > 1) {
    return Status(last.kind(), last.message() + " (after " + std::to_string(made) + " attempts)");
  }
  return last;
}

}  // namespace nbu::azure
