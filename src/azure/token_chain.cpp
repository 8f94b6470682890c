#include "azure/token_chain.h"

#include "azure/token_cli.h"
#include "azure/token_client_credential.h"
#include "azure/token_managed_identity.h"
#include "util/log.h"
#include "util/text.h"

#include <algorithm>
#include <functional>

namespace nbu::azure {
namespace {

using Factory = std::function<Result<std::shared_ptr<TokenCredential>>()>;

struct ChainEntry {
  const char* name;  // the SDK's class name, as AZURE_TOKEN_CREDENTIALS spells it
  const char* mode;  // the APP_AZURE_AUTH value that pins it
  Factory make;
  // Whether the operator set a variable meant for this source alone: its secret, certificate or
  // federated token file (null for the sources that are probed). Then a failure to make it (a
  // tenant or client id missing, say misspelt) or to get a token ends the chain.
  std::function<bool()> configured;
};

template <typename T>
Result<std::shared_ptr<TokenCredential>> Upcast(Result<std::shared_ptr<T>> r) {
  if (!r.ok()) return r.status();
  return std::shared_ptr<TokenCredential>(*r);
}

std::vector<ChainEntry> AllSources(const EnvLookup& env, const TokenSourceOptions& options,
                                   bool probe_imds) {
  return {
      {"EnvironmentCredential", "environment",
       [=] { return EnvironmentCredentialFromEnv(env, options); },
       [=] { return env("AZURE_CLIENT_SECRET") || env("AZURE_CLIENT_CERTIFICATE_PATH"); }},
      {"WorkloadIdentityCredential", "workload-identity",
       [=] { return Upcast(WorkloadIdentityCredential::FromEnv(env, options)); },
       [=] { return env("AZURE_FEDERATED_TOKEN_FILE").has_value(); }},
      {"ManagedIdentityCredential", "managed-identity",
       [=] {
         ManagedIdentityOptions mi;
         mi.source = options;
         mi.probe = probe_imds;
         return Upcast(ManagedIdentityCredential::FromEnv(env, mi));
       },
       // Not AZURE_CLIENT_ID: the environment and workload identity read it too.
       [=] { return env(kObjectIdVar) || env(kResourceIdVar); }},
      {"AzureCliCredential", "azure-cli",
       [=] {
         AzureCliOptions cli;
         cli.clock = options.clock;
         return Result<std::shared_ptr<TokenCredential>>(
             std::shared_ptr<TokenCredential>(AzureCliCredential::FromEnv(env, cli)));
       },
       nullptr},
  };
}

// Applies AZURE_TOKEN_CREDENTIALS to the chain; false with an error line for an unknown value.
bool FilterChain(const EnvLookup& env, std::vector<ChainEntry>* chain,
                 std::vector<std::string>* errors) {
  const auto selector = env("AZURE_TOKEN_CREDENTIALS");
  if (!selector || LowerAscii(*selector) == "dev") return true;
  if (LowerAscii(*selector) == "prod") {
    std::erase_if(*chain, [](const ChainEntry& e) { return std::string(e.mode) == "azure-cli"; });
    return true;
  }
  std::erase_if(*chain,
                [&](const ChainEntry& e) { return LowerAscii(e.name) != LowerAscii(*selector); });
  if (chain->empty()) {
    errors->push_back(
        "AZURE_TOKEN_CREDENTIALS: must be prod, dev, EnvironmentCredential, "
        "WorkloadIdentityCredential, ManagedIdentityCredential or AzureCliCredential");
    return false;
  }
  return true;
}

// Creates the source and fetches one token; the error line names the credential.
Result<std::shared_ptr<TokenCredential>> TryOne(const ChainEntry& e, std::stop_token stop) {
  Result<std::shared_ptr<TokenCredential>> cred = e.make();
  if (!cred.ok()) {
    return Status(cred.status().kind(), std::string(e.name) + ": " + cred.status().message());
  }
  Result<std::string> token = (*cred)->GetToken(stop);
  if (!token.ok()) {
    return Status(token.status().kind(), std::string(e.name) + ": " + token.status().message());
  }
  return cred;
}

}  // namespace

bool IsTokenMode(const std::string& mode) {
  return mode == "auto" || mode == "environment" || mode == "workload-identity" ||
         mode == "managed-identity" || mode == "azure-cli";
}

Result<std::shared_ptr<TokenCredential>> EnvironmentCredentialFromEnv(const EnvLookup& env,
                                                                      TokenSourceOptions options) {
  if (env("AZURE_CLIENT_SECRET")) return Upcast(ClientSecretCredential::FromEnv(env, options));
  if (env("AZURE_CLIENT_CERTIFICATE_PATH")) {
    return Upcast(ClientCertificateCredential::FromEnv(env, options));
  }
  return Status(ErrorKind::kAuth,
                "not configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET "
                "(or AZURE_CLIENT_CERTIFICATE_PATH)");
}

namespace {

// The sources `mode` tries, in order (AZURE_TOKEN_CREDENTIALS applied to "auto"); false with an
// error line when there are none.
bool SourcesOf(const std::string& mode, const EnvLookup& env, const TokenSourceOptions& options,
               std::vector<ChainEntry>* chain, std::vector<std::string>* errors) {
  const bool chain_mode = mode == "auto";
  // The probe (one try, a short connect timeout) keeps a chain off Azure from waiting on IMDS.
  // Managed identity named alone is the one source, so it retries as its own mode does (as the
  // SDKs do since 2025); so does one chosen by its object or resource id, whose failure ends the
  // chain anyway: one IMDS hiccup at start-up must not stop the service.
  const auto selector = env("AZURE_TOKEN_CREDENTIALS");
  const bool alone = (selector && LowerAscii(*selector) == "managedidentitycredential") ||
                     env(kObjectIdVar) || env(kResourceIdVar);
  *chain = AllSources(env, options, /*probe_imds=*/chain_mode && !alone);
  if (chain_mode) {
    if (!FilterChain(env, chain, errors)) return false;
  } else {
    std::erase_if(*chain, [&](const ChainEntry& e) { return mode != e.mode; });
  }
  if (chain->empty()) {
    errors->push_back("APP_AZURE_AUTH: \"" + mode + "\" is not a token mode");
    return false;
  }
  return true;
}

std::string LinePrefix(const std::string& mode) {
  return mode == "auto" ? "DefaultAzureCredential: " : "APP_AZURE_AUTH=" + mode + ": ";
}

}  // namespace

void CheckTokenCredential(const std::string& mode, const EnvLookup& env,
                          const TokenSourceOptions& options, std::vector<std::string>* errors) {
  std::vector<ChainEntry> chain;
  if (!SourcesOf(mode, env, options, &chain, errors)) return;
  for (const ChainEntry& e : chain) {
    // The chain moves past a source that is not configured: only one that is can fail it.
    if (mode == "auto" && !(e.configured && e.configured())) continue;
    if (Result<std::shared_ptr<TokenCredential>> cred = e.make(); !cred.ok()) {
      errors->push_back(LinePrefix(mode) + e.name + ": " + cred.status().message());
    }
    return;  // the chain ends at a configured source, whether it gives a token or not
  }
}

bool ResolveTokenCredential(const std::string& mode, const EnvLookup& env,
                            const TokenSourceOptions& options,
                            std::shared_ptr<TokenCredential>* out, std::vector<std::string>* errors,
                            std::stop_token stop) {
  const bool chain_mode = mode == "auto";
  std::vector<ChainEntry> chain;
  if (!SourcesOf(mode, env, options, &chain, errors)) return false;
  std::vector<std::string> failures;
  for (const ChainEntry& e : chain) {
    Result<std::shared_ptr<TokenCredential>> cred = TryOne(e, stop);
    if (cred.ok()) {
      LogInfo("token credential selected",
              {{"credential", (*cred)->Describe()}, {"source", e.name}, {"mode", mode}});
      *out = *cred;
      return true;
    }
    failures.push_back(cred.status().message());
    if (stop.stop_requested()) break;
    if (chain_mode) LogInfo("token credential unavailable", {{"error", failures.back()}});
    // A credential the operator configured that fails (a secret expired, Entra unreachable)
    // ends the chain, as in the Azure SDKs: a later source would run the service under an
    // identity nobody chose for it (the node's managed identity, a developer's az login).
    if (chain_mode && e.configured && e.configured()) {
      failures.back() += " (configured, so the chain stops here; later sources not tried)";
      break;
    }
  }
  for (const auto& f : failures) errors->push_back(LinePrefix(mode) + f);
  return false;
}

}  // namespace nbu::azure
