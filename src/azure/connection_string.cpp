// Connection string parsing (see connection_string.h and AZURE.md §7).
#include "azure/connection_string.h"

#include "azure/sas.h"
#include "azure/shared_key.h"
#include "azure/url.h"
#include "util/crypto.h"
#include "util/text.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace nbu::azure {
namespace {

constexpr const char* kLabelChars =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";

// One label of a DNS name: letters, digits and inner hyphens, at most 63.
bool IsHostLabel(std::string_view label) {
  return !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-' &&
         label.find_first_not_of(kLabelChars) == std::string_view::npos;
}

// Dot-separated labels, and a port after ':' if any (an emulator's, as the SDKs take it).
bool IsHostName(std::string_view host) {
  if (!PortIsNumeric(host)) return false;
  host = host.substr(0, host.rfind(':'));
  while (true) {
    const std::string_view label = host.substr(0, host.find('.'));
    if (!IsHostLabel(label)) return false;
    if (label.size() == host.size()) return true;
    host.remove_prefix(label.size() + 1);
  }
}

}  // namespace

std::optional<std::string> AccountHostProblem(const std::string& name) {
  if (IsHostLabel(name)) return std::nullopt;
  return "makes the blob host's name, so it must be letters, digits and inner hyphens (at most "
         "63)";
}

std::optional<std::string> AccountHostMismatch(const std::string& name, std::string_view url) {
  bool v6 = false;
  const std::string host = LowerAscii(AuthorityHost(SplitUrl(url).authority, &v6));
  if (v6) return std::nullopt;
  constexpr std::string_view kSuffixes[] = {".core.windows.net", ".core.chinacloudapi.cn",
                                            ".core.usgovcloudapi.net", ".storage.azure.net"};
  const bool azure = std::any_of(std::begin(kSuffixes), std::end(kSuffixes),
                                 [&](std::string_view suffix) { return host.ends_with(suffix); });
  const size_t dot = host.find('.');
  if (!azure || dot == std::string::npos || host.find(".blob.") == std::string::npos) {
    return std::nullopt;
  }
  std::string account = host.substr(0, dot);
  if (account.ends_with("-secondary")) account.resize(account.size() - 10);  // RA-GRS's
  if (account == LowerAscii(name)) return std::nullopt;
  return "the blob host is account \"" + account + "\"'s, while the account name that signs is \"" +
         name + "\": storage would refuse every request (403)";
}

ConnectionInfo ParseConnectionString(std::string_view text, bool endpoint_elsewhere,
                                     std::vector<std::string>* problems) {
  const auto bad = [&](std::string what) { problems->push_back("connection string: " + what); };
  std::map<std::string, std::string> fields;  // lower-case key -> value
  std::set<std::string> repeated;             // lower-case keys told as repeated
  size_t index = 0;
  bool malformed = false;  // an entry that is no Key=Value: it may have been the credential
  while (!text.empty()) {
    const size_t semi = text.find(';');
    const std::string_view pair = TrimSpaceAscii(text.substr(0, semi));
    text = semi == std::string_view::npos ? std::string_view() : text.substr(semi + 1);
    ++index;
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      bad("entry " + std::to_string(index) + " is not of the form Key=Value");
      malformed = true;
      continue;
    }
    const std::string key = LowerAscii(TrimSpaceAscii(pair.substr(0, eq)));
    if (!fields.emplace(key, std::string(TrimSpaceAscii(pair.substr(eq + 1)))).second &&
        repeated.insert(key).second) {  // told once, however often it comes
      bad("field " + std::string(TrimSpaceAscii(pair.substr(0, eq))) + " appears twice");
    }
  }
  auto get = [&](const char* key) {
    const auto it = fields.find(key);
    return it == fields.end() ? std::string() : it->second;
  };
  ConnectionInfo info;
  if (!get("usedevelopmentstorage").empty()) {  // another form altogether: nothing else judged
    bad("UseDevelopmentStorage is not supported; give AccountName, AccountKey and BlobEndpoint");
    return info;
  }

  info.account = get("accountname");
  std::string protocol = get("defaultendpointsprotocol");
  if (protocol.empty()) protocol = "https";
  if (protocol != "http" && protocol != "https") {
    bad("DefaultEndpointsProtocol must be http or https");
  }
  info.endpoint = get("blobendpoint");
  if (!info.endpoint.empty()) {
    // One line for the endpoint, its first problem.
    const std::string scheme = LowerAscii(SplitUrl(info.endpoint).scheme);
    if ((scheme != "http" && scheme != "https") || SplitUrl(info.endpoint).authority.empty()) {
      bad("BlobEndpoint must be an absolute http:// or https:// URL");
    } else if (info.endpoint.find_first_of("?#") != std::string::npos) {
      // As for APP_AZURE_ACCOUNT_URL: the endpoint is logged, and a SAS pasted after '?' or '#'
      // (which SplitUrl drops) or a password before '@' would be logged with it.
      bad("BlobEndpoint must not have a query or fragment (a SAS goes in "
          "SharedAccessSignature=)");
    } else if (HoldsAtBeforeQuery(info.endpoint)) {
      bad("BlobEndpoint must not hold a user name or password (user@host), nor '@' in its path");
    } else if (!PortIsNumeric(SplitUrl(info.endpoint).authority)) {
      bad("BlobEndpoint has a port that is not a number");
    }
    while (info.endpoint.size() > 1 && info.endpoint.back() == '/') info.endpoint.pop_back();
  } else if (!endpoint_elsewhere) {
    if (info.account.empty()) {
      bad("AccountName is missing (and no BlobEndpoint given)");
    } else if (const auto problem = AccountHostProblem(info.account)) {
      bad("AccountName " + *problem);
    }
    std::string suffix = get("endpointsuffix");
    if (suffix.empty()) suffix = "core.windows.net";
    if (!IsHostName(suffix)) {
      bad("EndpointSuffix must be a domain name such as core.windows.net (a port may follow)");
    }
    info.endpoint = protocol + "://" + info.account + ".blob." + suffix;
  }

  const std::string key = get("accountkey");
  std::string sas = get("sharedaccesssignature");
  if (!sas.empty() && sas.front() == '?') sas.erase(0, 1);
  // Two credentials: the key would be used and the SAS silently ignored, though it may be the
  // one meant (a key pasted from another account, say), as APP_AZURE_AUTH=auto refuses a key or
  // SAS beside a connection string.
  if (!key.empty() && !sas.empty()) {
    bad("both AccountKey and SharedAccessSignature are given, so which is meant cannot be told: "
        "remove one");
  } else if (!key.empty()) {
    // Told once: without BlobEndpoint the host's check above said so.
    if (info.account.empty() && (!get("blobendpoint").empty() || endpoint_elsewhere)) {
      bad("AccountName is missing (needed with AccountKey)");
    }
    if (const std::optional<std::string> raw = Base64Decode(key); !raw || raw->empty()) {
      bad("AccountKey is not valid base64");
    }
    info.kind = CredentialKind::kSharedKey;
    info.account_key = key;
  } else if (!sas.empty()) {
    for (const std::string& problem : SasTokenProblems(sas)) {
      bad("SharedAccessSignature " + problem);
    }
    info.kind = CredentialKind::kSas;
    info.sas_token = sas;
  } else if (!malformed) {
    bad("neither AccountKey nor SharedAccessSignature is given");
  }
  return info;
}

Result<ConnectionInfo> ParseConnectionString(std::string_view text, bool endpoint_elsewhere) {
  std::vector<std::string> problems;
  ConnectionInfo info = ParseConnectionString(text, endpoint_elsewhere, &problems);
  if (!problems.empty()) return Status(ErrorKind::kPermanent, problems.front());
  return info;
}

Result<std::shared_ptr<Credential>> MakeCredential(const ConnectionInfo& info, Clock& clock) {
  if (info.kind == CredentialKind::kSas) {
    return std::shared_ptr<Credential>(std::make_shared<SasCredential>(info.sas_token));
  }
  auto cred = SharedKeyCredential::Create(info.account, info.account_key, clock);
  if (!cred.ok()) return cred.status();
  return std::shared_ptr<Credential>(std::move(cred).value());
}

}  // namespace nbu::azure
