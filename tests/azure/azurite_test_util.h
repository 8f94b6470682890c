// Helpers shared by the Azurite-backed tests: clients on the emulator and SAS tokens minted with
// the well-known emulator key.
#pragma once

#include "azure/blob_client.h"
#include "azure/connection_string.h"
#include "azure/sas.h"
#include "azure/shared_key.h"
#include "azure/url.h"
#include "support/azurite.h"

#include <string>

namespace nbu::azure::test {

// Account SAS (AZURE.md §6.1, sv >= 2020-12-06): 10 lines, each ending in '\n'.
inline std::string MakeAccountSas(const std::string& account, const std::string& key_base64,
                                  const std::string& permissions) {
  const std::string sv = "2021-06-08", ss = "b", srt = "sco", se = "2099-01-01T00:00:00Z",
                    spr = "https,http";
  const std::string sts = account + "\n" + permissions + "\n" + ss + "\n" + srt + "\n" +
                          /*st*/ "\n" + se + "\n" + /*sip*/ "\n" + spr + "\n" + sv + "\n" +
                          /*ses*/ "\n";
  const std::string sig = SharedKeySignature(HmacSha256Key(*Base64Decode(key_base64)), sts);
  return "sv=" + sv + "&ss=" + ss + "&srt=" + srt + "&sp=" + permissions +
         "&se=" + UrlEncodeQueryValue(se) + "&spr=" + UrlEncodeQueryValue(spr) +
         "&sig=" + UrlEncodeQueryValue(sig);
}

// Service SAS on one container (sr=c; sv 2018-11-09 to 2020-10-02 sign these 15 lines): what
// `az storage container generate-sas` gives. It can use blobs in the container, not create it.
inline std::string MakeContainerSas(const std::string& account, const std::string& key_base64,
                                    const std::string& container, const std::string& permissions) {
  const std::string sv = "2019-12-12", se = "2099-01-01T00:00:00Z";
  const std::string sts = permissions + "\n" + /*st*/ "\n" + se + "\n" + "/blob/" + account + "/" +
                          container + "\n" + /*si*/ "\n" + /*sip*/ "\n" + /*spr*/ "\n" + sv + "\n" +
                          "c\n" + /*snapshot*/ "\n" + /*rscc, rscd, rsce, rscl*/ "\n\n\n\n" +
                          /*rsct*/ "";
  const std::string sig = SharedKeySignature(HmacSha256Key(*Base64Decode(key_base64)), sts);
  return "sv=" + sv + "&sr=c&sp=" + permissions + "&se=" + UrlEncodeQueryValue(se) +
         "&sig=" + UrlEncodeQueryValue(sig);
}

inline BlobClientOptions AzuriteOptions(const nbu::test::Azurite& azurite,
                                        const std::string& container) {
  BlobClientOptions o;
  o.endpoint = azurite.BlobEndpoint();
  o.account = nbu::test::kAzuriteAccount;
  o.container = container;
  o.retry.max_attempts = 3;
  o.retry.base_delay = std::chrono::milliseconds(50);
  return o;
}

}  // namespace nbu::azure::test
