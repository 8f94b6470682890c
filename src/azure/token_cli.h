// Azure CLI credential for development: asks a logged-in `az` for a token
// (`az account get-access-token --output json --resource https://storage.azure.com`). AZURE.md
// §12.6.
#pragma once

#include "azure/token_credential.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace nbu::azure {

struct AzureCliOptions {
  Clock* clock = &RealClock::Instance();
  std::chrono::milliseconds timeout{13000};  // the process is killed after this
  std::string tenant_id;                     // optional --tenant
};

class AzureCliCredential final : public TokenCredential {
 public:
  // Finds `az` on the PATH of `env` (at fetch time, so a later `az` install is seen). No I/O here.
  static std::shared_ptr<AzureCliCredential> FromEnv(const EnvLookup& env,
                                                     AzureCliOptions options = {});
  std::string Describe() const override { return "azure-cli"; }

 private:
  AzureCliCredential(std::string path_var, AzureCliOptions options);
  Result<AccessToken> FetchToken(std::stop_token stop) override;

  const std::string path_var_;  // the PATH to search
  const AzureCliOptions options_;
};

// Parses the JSON `az account get-access-token` prints: accessToken plus expires_on (Unix seconds,
// number or string; newer CLIs) or expiresOn (local time "YYYY-MM-DD HH:MM:SS[.ffffff]").
Result<AccessToken> ParseAzureCliToken(const std::string& json_text);

// Runs `argv` (argv[0] an absolute path) with stdin from /dev/null and the process environment;
// kills it after `timeout`. Used by the CLI credential.
struct ProcessResult {
  int exit_code = -1;  // 128+signal when killed by a signal
  bool timed_out = false;
  std::string out;
  std::string err;
};
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout);

}  // namespace nbu::azure
