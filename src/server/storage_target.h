// Chooses the storage endpoint and credential from the configuration: explicit secrets win
// (connection string, account name + key, SAS token), else Entra ID tokens (the
// DefaultAzureCredential chain); APP_AZURE_AUTH pins one mode.
#pragma once

#include "azure/credential.h"
#include "azure/http.h"
#include "azure/token_credential.h"
#include "core/config.h"
#include "util/clock.h"

#include <memory>
#include <stop_token>
#include <string>
#include <vector>

namespace nbu::server {

struct StorageTarget {
  std::string endpoint;  // blob service endpoint, no trailing slash
  std::string account;  // signs Shared Key requests; empty with a SAS or tokens, which never use it
  std::shared_ptr<azure::Credential> credential;
};

// On failure `errors` gets one line per problem, naming variables but never their values: every
// problem the checks without network I/O find (the CA file, the connection string, key or SAS,
// the account URL), not just the first. A variable that a line already in `errors` names (as
// ParseConfig words them, "NAME: ...") is not judged again. Token modes (environment,
// workload-identity, managed-identity, azure-cli, and auto when no connection string, key or SAS
// is configured) read AZURE_*, IDENTITY_* and PATH from `env` (nullptr: the process environment)
// and fetch a first token, so they do network I/O bounded by the token sources' timeouts; not
// when `errors` already holds a line (start-up fails anyway). A stop request ends that fetch
// (false, with a line saying so). Explicit secrets never touch any token endpoint.
bool ResolveStorageTarget(const core::Config& config, Clock& clock, StorageTarget* out,
                          std::vector<std::string>* errors, const core::EnvMap* env = nullptr,
                          std::stop_token stop = {});
// HTTP options for storage and token requests alike: the CA bundle from APP_AZURE_CA_FILE, else
// SSL_CERT_FILE, else the system store.
azure::HttpTransportOptions StorageTransportOptions(const core::Config& config,
                                                    const azure::EnvLookup& env);

}  // namespace nbu::server
