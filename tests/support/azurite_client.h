// Test support: a Shared Key BlobClient for a test Azurite (header-only: only tests that already
// link the azure layer include it).
#pragma once

#include "azure/blob_client.h"
#include "azure/shared_key.h"
#include "support/azurite.h"

#include <memory>
#include <string>

namespace nbu::test {

// `endpoint`: the Azurite account's blob endpoint, or a proxy's in front of it.
// `stall_time`: as HttpTransportOptions'.
inline std::unique_ptr<azure::BlobClient> MakeBlobClient(
    const std::string& endpoint, const std::string& container,
    const azure::RetryOptions& retry = {},
    std::chrono::seconds stall_time = azure::HttpTransportOptions{}.stall_time) {
  azure::BlobClientOptions o;
  o.retry = retry;
  o.endpoint = endpoint;
  o.account = kAzuriteAccount;
  o.container = container;
  auto cred = azure::SharedKeyCredential::Create(kAzuriteAccount, kAzuriteKey);
  azure::HttpTransportOptions t;
  t.max_response_body = 64 << 20;  // tests download whole blobs to compare them
  t.stall_time = stall_time;
  return std::make_unique<azure::BlobClient>(o, *cred, std::make_shared<azure::HttpTransport>(t),
                                             RealClock::Instance());
}

// The Azurite account's blob endpoint through a proxy listening on 127.0.0.1:`proxy_port`.
inline std::string BlobEndpointVia(int proxy_port) {
  return "http://127.0.0.1:" + std::to_string(proxy_port) + "/" + kAzuriteAccount;
}

inline std::unique_ptr<azure::BlobClient> MakeBlobClient(const Azurite& azurite,
                                                         const std::string& container) {
  return MakeBlobClient(azurite.BlobEndpoint(), container);
}

}  // namespace nbu::test
