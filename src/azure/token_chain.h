// Picks the token credential for a mode: one pinned source, or the DefaultAzureCredential chain
// (environment -> workload identity -> managed identity -> Azure CLI) tried once at start-up.
#pragma once

#include "azure/token_credential.h"

#include <memory>
#include <stop_token>
#include <string>
#include <vector>

namespace nbu::azure {

// The token modes of APP_AZURE_AUTH: "environment", "workload-identity", "managed-identity",
// "azure-cli", and "auto" (the chain).
bool IsTokenMode(const std::string& mode);

// EnvironmentCredential: a client secret (AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET)
// or else a client certificate (... + AZURE_CLIENT_CERTIFICATE_PATH, and for an encrypted key
// AZURE_CLIENT_CERTIFICATE_PASSWORD). No I/O beyond reading the certificate file.
Result<std::shared_ptr<TokenCredential>> EnvironmentCredentialFromEnv(const EnvLookup& env,
                                                                      TokenSourceOptions options);

// Builds the credential for `mode` from `env` and fetches a first token with it (network I/O,
// bounded by the sources' timeouts). "auto" tries the chain in order — honouring
// AZURE_TOKEN_CREDENTIALS (prod: no Azure CLI; dev or unset: all; a credential name such as
// ManagedIdentityCredential: only that one) — probing IMDS with a 1 s connect timeout and no
// retries while nothing answers; the first source that yields a token is returned (with that token
// cached). A source configured by its own variables (environment, workload identity, managed
// identity by its object or resource id) that fails ends the chain. On failure returns false and
// appends one line per credential tried, naming it and why (never a secret). A stop request ends
// the fetch under way, and the chain (false, the fetch's line saying it was cancelled).
bool ResolveTokenCredential(const std::string& mode, const EnvLookup& env,
                            const TokenSourceOptions& options,
                            std::shared_ptr<TokenCredential>* out, std::vector<std::string>* errors,
                            std::stop_token stop = {});

// What ResolveTokenCredential would refuse without a request, for a start-up that fails anyway
// (and so does not fetch): AZURE_TOKEN_CREDENTIALS, and the source `mode` names, or the first
// configured one of the chain, made but not asked for a token. Appends one line per problem.
void CheckTokenCredential(const std::string& mode, const EnvLookup& env,
                          const TokenSourceOptions& options, std::vector<std::string>* errors);

}  // namespace nbu::azure
