// Azure Storage connection strings: parsed into endpoint, account and credential without ever
// putting the key or SAS token into an error message.
#pragma once

#include "azure/credential.h"
#include "util/clock.h"
#include "util/status.h"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nbu::azure {

enum class CredentialKind { kSharedKey, kSas };

struct ConnectionInfo {
  std::string endpoint;  // blob endpoint, no trailing slash
  std::string account;   // AccountName: signs Shared Key requests; a SAS needs none
  CredentialKind kind = CredentialKind::kSharedKey;
  std::string account_key;  // base64, as given (kSharedKey)
  std::string sas_token;    // without leading '?' (kSas)
};

// Parses "Key=Value;..." (split on ';', each pair at the first '='). Keys: DefaultEndpointsProtocol
// (http|https, default https), AccountName, AccountKey, BlobEndpoint, EndpointSuffix (default
// core.windows.net), SharedAccessSignature; other keys are ignored. Without BlobEndpoint the
// endpoint is <proto>://<account>.blob.<suffix>. AccountKey and SharedAccessSignature together
// are refused (which is meant cannot be told). With `endpoint_elsewhere` (an account URL
// replaces the string's endpoint) a string without BlobEndpoint leaves `endpoint` empty, and its
// AccountName, which then only signs, and EndpointSuffix are not judged as parts of a host.
// Every problem found goes to `problems`, one line each (an endpoint's first, the rest all),
// naming its field, never its value; `info` is usable only when there is none.
ConnectionInfo ParseConnectionString(std::string_view text, bool endpoint_elsewhere,
                                     std::vector<std::string>* problems);
// The same, its first problem as the error (kPermanent).
Result<ConnectionInfo> ParseConnectionString(std::string_view text,
                                             bool endpoint_elsewhere = false);

// What is wrong with an account name that makes the blob host (<name>.blob.<suffix>), or
// nothing: it must be one DNS label, or the URL is malformed and every request fails for ever.
// A name beside an endpoint only signs (an emulator's may be any), and is not judged.
std::optional<std::string> AccountHostProblem(const std::string& name);

// What is wrong when the host of `url` is an Azure blob host for another account than `name`,
// which signs Shared Key requests: storage would refuse every request (403), for ever. Hosts
// of Azure's suffixes only (<account>.blob.core.windows.net, a private endpoint's
// <account>.privatelink.blob..., a sovereign cloud's, a DNS zone's <account>.z<nn>.blob.storage
// .azure.net); an emulator, a proxy or a custom domain may carry any name.
std::optional<std::string> AccountHostMismatch(const std::string& name, std::string_view url);

// Builds the credential the connection string describes (SharedKeyCredential or SasCredential).
Result<std::shared_ptr<Credential>> MakeCredential(const ConnectionInfo& info,
                                                   Clock& clock = RealClock::Instance());

}  // namespace nbu::azure
