#include "server/storage_target.h"

#include "azure/connection_string.h"
#include "azure/http.h"
#include "azure/sas.h"
#include "azure/shared_key.h"
#include "azure/token_chain.h"
#include "azure/url.h"
#include "util/crypto.h"
#include "util/text.h"

namespace nbu::server {
namespace {

std::string TrimSlash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

// The variables as `env` has them (null: the process's).
azure::EnvLookup LookupOf(const core::EnvMap* env) {
  if (env == nullptr) return azure::ProcessEnv();
  return [env](const std::string& name) -> std::optional<std::string> {
    auto it = env->find(name);
    if (it == env->end() || it->second.empty()) return std::nullopt;
    // This service's own (APP_AZURE_MANAGED_IDENTITY_*) are trimmed, and blank is unset, as for
    // every APP_ variable. The SDKs' AZURE_* go as given: a secret or a key's password may hold
    // spaces, and a blank secret is a configured one that fails, not one to pass by.
    if (!name.starts_with("APP_")) return it->second;
    const std::string_view value = TrimSpaceAscii(it->second);
    if (value.empty()) return std::nullopt;
    return std::string(value);
  };
}

// Entra ID token modes: needs APP_AZURE_ACCOUNT_URL (https, or http to loopback for tests).
// The first token is fetched only while `errors` is empty: start-up fails anyway otherwise, and
// need not wait on the network to say so; what the credential's own variables get wrong is told
// either way.
bool ResolveTokenTarget(const core::Config& c, const std::string& mode, Clock& clock,
                        const core::EnvMap* env, StorageTarget* out,
                        std::vector<std::string>* errors, std::stop_token stop) {
  if (c.azure_account_url.empty()) {
    errors->push_back(
        "APP_AZURE_ACCOUNT_URL: required for token credentials (APP_AZURE_AUTH=" + mode +
        (mode == "auto" ? "; or set APP_AZURE_CONNECTION_STRING, "
                          "APP_AZURE_ACCOUNT_NAME + APP_AZURE_ACCOUNT_KEY, or "
                          "APP_AZURE_SAS_TOKEN)"
                        : ")"));
  } else if (!core::ErrorNames(*errors, "APP_AZURE_ACCOUNT_URL")) {
    if (Status s = azure::CheckSecureUrl(c.azure_account_url, "APP_AZURE_ACCOUNT_URL"); !s.ok()) {
      errors->push_back(s.message() + " for bearer tokens");
    }
  }
  const azure::EnvLookup lookup = LookupOf(env);
  azure::TokenSourceOptions options;
  options.clock = &clock;
  azure::HttpTransportOptions token_transport = StorageTransportOptions(c, lookup);
  token_transport.send_limit = nullptr;  // the cap is for what goes to storage
  options.transport = std::make_shared<azure::HttpTransport>(std::move(token_transport));
  if (!errors->empty()) {
    azure::CheckTokenCredential(mode, lookup, options, errors);
    return false;
  }
  std::shared_ptr<azure::TokenCredential> cred;
  if (!azure::ResolveTokenCredential(mode, lookup, options, &cred, errors, stop)) return false;
  out->endpoint = TrimSlash(c.azure_account_url);
  out->credential = std::move(cred);
  return true;
}

}  // namespace

azure::HttpTransportOptions StorageTransportOptions(const core::Config& config,
                                                    const azure::EnvLookup& env) {
  azure::HttpTransportOptions o;
  o.ca_file =
      config.azure_ca_file.empty() ? env("SSL_CERT_FILE").value_or("") : config.azure_ca_file;
  if (config.upload_cap_mbps > 0) {
    o.send_limit =
        std::make_shared<RateLimiter>(config.upload_cap_mbps * 125000.0, RealClock::Instance());
  }
  return o;
}

namespace {

// The mode APP_AZURE_AUTH names, or in auto mode the one its credentials choose ("auto" still
// when none is set: the token chain).
std::string ChosenMode(const core::Config& c) {
  if (c.azure_auth != "auto") return c.azure_auth;
  if (!c.azure_connection_string.empty()) return "connection-string";
  if (!c.azure_account_key.empty()) return "shared-key";
  if (!c.azure_sas_token.empty()) return "sas";
  return c.azure_auth;
}

// Whether every request goes over plain http, so that no CA bundle is ever read: a connection
// string's, a key's or a SAS's endpoint that is http (Azurite). Token modes reach Entra ID over
// https, and a key or a SAS without an account URL reaches Azure's.
bool PlainHttpOnly(const core::Config& c) {
  const std::string mode = ChosenMode(c);
  std::string endpoint = c.azure_account_url;
  if (mode == "connection-string" && (c.azure_auth == "auto" || endpoint.empty())) {
    std::vector<std::string> ignored;  // told by the resolution
    endpoint = azure::ParseConnectionString(c.azure_connection_string, false, &ignored).endpoint;
  } else if (mode != "connection-string" && mode != "shared-key" && mode != "sas") {
    return false;
  }
  return LowerAscii(azure::SplitUrl(endpoint).scheme) == "http";
}

}  // namespace

bool ResolveStorageTarget(const core::Config& c, Clock& clock, StorageTarget* out,
                          std::vector<std::string>* errors, const core::EnvMap* env,
                          std::stop_token stop) {
  const size_t before = errors->size();
  // curl would fail every request on it (error 77), and the service would wait for ever: the
  // bundle given, or else the one SSL_CERT_FILE names, which the transports take then. An
  // inherited SSL_CERT_FILE that nothing reads (an image's stale one, beside Azurite over http)
  // is not this service's to refuse.
  if (!c.azure_ca_file.empty()) {
    if (Status s = azure::CheckCaBundle(c.azure_ca_file); !s.ok()) {
      errors->push_back("APP_AZURE_CA_FILE: " + s.message());
    }
  } else if (const auto inherited = LookupOf(env)("SSL_CERT_FILE");
             inherited && !PlainHttpOnly(c)) {
    if (Status s = azure::CheckCaBundle(*inherited); !s.ok()) {
      errors->push_back("SSL_CERT_FILE: " + s.message() + " (or set APP_AZURE_CA_FILE)");
    }
  }
  // A variable ParseConfig refused is not judged again: one line per problem (and a refused URL
  // may hold a password that a second message would print).
  if (core::ErrorNames(*errors, "APP_AZURE_AUTH")) return false;
  const bool url_refused = core::ErrorNames(*errors, "APP_AZURE_ACCOUNT_URL");
  if (c.azure_auth == "auto" && !c.azure_connection_string.empty()) {
    // Two credentials, or two endpoints, and no word on which: the Compose stack's default
    // connection string (its Azurite) beside an account key meant for Azure would send every
    // file to the emulator, and beside an account URL meant for tokens would send the emulator's
    // key to that account (refused for ever).
    for (const auto& [name, value] :
         {std::pair{"APP_AZURE_ACCOUNT_KEY", &c.azure_account_key},
          std::pair{"APP_AZURE_SAS_TOKEN", &c.azure_sas_token},
          std::pair{"APP_AZURE_ACCOUNT_URL", url_refused ? nullptr : &c.azure_account_url}}) {
      if (value != nullptr && !value->empty()) {
        errors->push_back(std::string(name) +
                          ": set beside APP_AZURE_CONNECTION_STRING, so which is meant cannot be "
                          "told: unset one, or choose the mode with APP_AZURE_AUTH");
      }
    }
  } else if (c.azure_auth == "auto" && !c.azure_account_key.empty() && !c.azure_sas_token.empty()) {
    // The same with a key and a SAS: shared key would win, silently, though the SAS (a
    // container's, for a narrower grant) may be the one meant.
    errors->push_back(
        "APP_AZURE_SAS_TOKEN: set beside APP_AZURE_ACCOUNT_KEY, so which is meant cannot be "
        "told: unset one, or choose the mode with APP_AZURE_AUTH");
  }
  const std::string mode = ChosenMode(c);
  // An account name only signs shared-key requests: one whose key came through empty (a Secret
  // that did not mount) would otherwise fall to the token chain, whose managed identity, on an
  // Azure host, nobody chose, and whose errors never name the key.
  if (mode == "auto" && !c.azure_account_name.empty()) {
    errors->push_back(
        "APP_AZURE_ACCOUNT_KEY: required with APP_AZURE_ACCOUNT_NAME (empty counts as unset); "
        "for token credentials unset the name, or choose the mode with APP_AZURE_AUTH");
    return false;
  }
  if (mode == "connection-string") {
    if (c.azure_connection_string.empty()) {
      errors->push_back(
          "APP_AZURE_CONNECTION_STRING: required when APP_AZURE_AUTH=connection-string");
      return false;
    }
    // Chosen, an account URL replaces the string's endpoint; beside a string in auto mode it is
    // refused above, and the string's own endpoint is judged.
    const bool url_replaces = c.azure_auth == "connection-string" && !c.azure_account_url.empty();
    std::vector<std::string> problems;
    const auto info =
        azure::ParseConnectionString(c.azure_connection_string, url_replaces, &problems);
    for (const std::string& problem : problems) {
      errors->push_back("APP_AZURE_CONNECTION_STRING: " + problem);
    }
    if (!problems.empty()) return false;
    auto cred = azure::MakeCredential(info, clock);
    if (!cred.ok()) {
      errors->push_back("APP_AZURE_CONNECTION_STRING: " + cred.status().message());
      return false;
    }
    out->endpoint = TrimSlash(url_replaces ? c.azure_account_url : info.endpoint);
    if (info.kind == azure::CredentialKind::kSharedKey && !(url_replaces && url_refused)) {
      if (const auto problem = azure::AccountHostMismatch(info.account, out->endpoint)) {
        errors->push_back(std::string(url_replaces ? "APP_AZURE_CONNECTION_STRING, "
                                                     "APP_AZURE_ACCOUNT_URL: "
                                                   : "APP_AZURE_CONNECTION_STRING: ") +
                          *problem);
      }
    }
    // A SAS is a bearer secret in every request's URL: like a token, never over plain http to
    // another host. (Shared Key sends only a signature.) A refused URL is not judged again.
    if (!info.sas_token.empty() && !(url_replaces && url_refused)) {
      if (Status s = azure::CheckSecureUrl(out->endpoint, "the blob endpoint"); !s.ok()) {
        errors->push_back("APP_AZURE_CONNECTION_STRING: " + s.message() + " for a SAS");
      }
    }
    out->account = info.account;
    out->credential = *cred;
    return errors->size() == before && !url_refused;
  }
  if (mode == "shared-key") {
    if (c.azure_account_name.empty()) {
      errors->push_back("APP_AZURE_ACCOUNT_NAME: required for shared-key auth");
    } else if (const auto problem = c.azure_account_url.empty()
                                        ? azure::AccountHostProblem(c.azure_account_name)
                                        : std::nullopt) {
      errors->push_back("APP_AZURE_ACCOUNT_NAME: " + *problem);
    }
    if (c.azure_account_key.empty()) {
      errors->push_back("APP_AZURE_ACCOUNT_KEY: required for shared-key auth");
    } else if (const auto key = Base64Decode(c.azure_account_key); !key || key->empty()) {
      errors->push_back("APP_AZURE_ACCOUNT_KEY: is not valid base64");
    }
    if (!c.azure_account_name.empty() && !url_refused) {
      if (const auto problem =
              azure::AccountHostMismatch(c.azure_account_name, c.azure_account_url)) {
        errors->push_back("APP_AZURE_ACCOUNT_NAME, APP_AZURE_ACCOUNT_URL: " + *problem);
      }
    }
    if (errors->size() != before || url_refused) return false;
    auto cred =
        azure::SharedKeyCredential::Create(c.azure_account_name, c.azure_account_key, clock);
    if (!cred.ok()) {
      errors->push_back("APP_AZURE_ACCOUNT_KEY: " + cred.status().message());
      return false;
    }
    out->endpoint = TrimSlash(c.azure_account_url.empty()
                                  ? "https://" + c.azure_account_name + ".blob.core.windows.net"
                                  : c.azure_account_url);
    out->account = c.azure_account_name;
    out->credential = *cred;
    return true;
  }
  if (mode == "sas") {
    if (c.azure_sas_token.empty()) {
      errors->push_back("APP_AZURE_SAS_TOKEN: required for sas auth");
    } else {
      // The service would otherwise wait for ever on 403s.
      for (const std::string& problem : azure::SasTokenProblems(c.azure_sas_token)) {
        errors->push_back("APP_AZURE_SAS_TOKEN: " + problem);
      }
    }
    if (c.azure_account_url.empty()) {
      errors->push_back("APP_AZURE_ACCOUNT_URL: required with APP_AZURE_SAS_TOKEN");
    } else if (!url_refused) {
      if (Status s = azure::CheckSecureUrl(c.azure_account_url, "APP_AZURE_ACCOUNT_URL"); !s.ok()) {
        errors->push_back(s.message() + " for a SAS");
      }
    }
    if (errors->size() != before || url_refused) return false;
    out->endpoint = TrimSlash(c.azure_account_url);
    out->credential = std::make_shared<azure::SasCredential>(c.azure_sas_token);
    return true;
  }
  if (azure::IsTokenMode(mode)) return ResolveTokenTarget(c, mode, clock, env, out, errors, stop);
  errors->push_back("APP_AZURE_AUTH: mode \"" + mode + "\" is not available in this build");
  return false;
}

}  // namespace nbu::server
