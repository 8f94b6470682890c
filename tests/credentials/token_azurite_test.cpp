// BlobClient with bearer tokens against a real Azurite (HTTPS with a self-signed cert for
// 127.0.0.1, --oauth basic): every token source gets a token from a stand-in that mints JWTs
// Azurite accepts, uploads a blob and reads it back; short-lived tokens are refreshed mid-run.
#include "azure/blob_client.h"
#include "azure/token_cli.h"
#include "azure/token_client_credential.h"
#include "azure/token_jwt.h"
#include "azure/token_managed_identity.h"
#include "stand_in.h"
#include "support/azurite.h"
#include "util/crypto.h"

#include <gtest/gtest.h>

#include <atomic>

namespace nbu::azure {
namespace {

using namespace std::chrono_literals;
using test::Json;
using test::MapEnv;
using test::Recorded;
using test::StandIn;

constexpr const char* kTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class TokenAzuriteTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new nbu::test::TempDir();
    ASSERT_TRUE(test::MakeSelfSignedCert(dir_->path()));
    auto signer = RsaSigner::FromPem(nbu::test::ReadFile(*dir_ / "key.pem"));
    ASSERT_TRUE(signer.ok()) << signer.status().ToString();
    signer_ = new std::shared_ptr<RsaSigner>(*signer);
    nbu::test::AzuriteOptions o;
    o.extra_args = {"--cert", *dir_ / "cert.pem", "--key", *dir_ / "key.pem", "--oauth", "basic"};
    o.scheme = "https";
    azurite_ = new nbu::test::Azurite(o);
  }
  static void TearDownTestSuite() {
    delete azurite_;
    delete signer_;
    delete dir_;
  }

  // A JWT as Entra ID would issue for Storage (Azurite checks iss, aud, nbf, iat, exp only).
  static std::string Mint(int64_t lifetime_s) {
    const int64_t now = NowSeconds();
    nlohmann::json claims = {{"iss", std::string("https://sts.windows-ppe.net/") + kTenant + "/"},
                             {"aud", "https://storage.azure.com"},
                             {"nbf", now - 60},
                             {"iat", now - 60},
                             {"exp", now + lifetime_s},
                             {"oid", "0b7a9d4e-1c2f-4a6b-9e8d-7f6a5b4c3d2e"},
                             {"tid", kTenant}};
    auto jwt = MakeJwtRs256(nlohmann::json::object(), claims, **signer_);
    EXPECT_TRUE(jwt.ok());
    return *jwt;
  }

  TokenSourceOptions Opts() {
    TokenSourceOptions o;
    o.timeout = 5000ms;
    return o;
  }

  // Uploads `n` blobs through `cred` and reads each back.
  void RoundTrip(std::shared_ptr<Credential> cred, const std::string& container, int n = 1,
                 std::chrono::milliseconds pause = 0ms) {
    HttpTransportOptions topts;
    topts.ca_file = *dir_ / "cert.pem";
    BlobClientOptions bo;
    bo.endpoint = azurite_->BlobEndpoint();
    bo.account = nbu::test::kAzuriteAccount;
    bo.container = container;
    BlobClient client(bo, std::move(cred), std::make_shared<HttpTransport>(topts),
                      RealClock::Instance());
    Status s = client.CreateContainerIfMissing();
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (int i = 0; i < n; ++i) {
      const std::string name = "dir/blob-" + std::to_string(i) + ".bin";
      const std::string data = nbu::test::PatternBytes(1000 + static_cast<size_t>(i), 7);
      s = client.PutBlob(name, Body::FromMemory(data), Md5::Of(data), {});
      ASSERT_TRUE(s.ok()) << s.ToString();
      Result<std::string> back = client.GetBlob(name);
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(*back, data);
      if (pause.count() > 0) std::this_thread::sleep_for(pause);
    }
  }

  // A stand-in identity endpoint minting tokens of `lifetime_` seconds for every protocol.
  StandIn idp_{[this](const Recorded&, httplib::Response& res) {
    ++minted_;
    Json(res, 200,
         nlohmann::json{{"access_token", Mint(lifetime_.load())}, {"expires_in", lifetime_.load()}}
             .dump());
  }};
  std::atomic<int64_t> lifetime_{3600};
  std::atomic<int> minted_{0};

  static nbu::test::TempDir* dir_;
  static std::shared_ptr<RsaSigner>* signer_;
  static nbu::test::Azurite* azurite_;
};

nbu::test::TempDir* TokenAzuriteTest::dir_ = nullptr;
std::shared_ptr<RsaSigner>* TokenAzuriteTest::signer_ = nullptr;
nbu::test::Azurite* TokenAzuriteTest::azurite_ = nullptr;

TEST_F(TokenAzuriteTest, ClientSecret) {
  auto cred = ClientSecretCredential::Create({kTenant, "app", idp_.url()}, "secret", Opts());
  ASSERT_TRUE(cred.ok());
  RoundTrip(*cred, "client-secret");
  EXPECT_EQ(minted_.load(), 1);
}

TEST_F(TokenAzuriteTest, ClientCertificate) {
  auto cred =
      ClientCertificateCredential::Create({kTenant, "app", idp_.url()}, *dir_ / "both.pem", Opts());
  ASSERT_TRUE(cred.ok()) << cred.status().ToString();
  RoundTrip(*cred, "client-cert");
}

TEST_F(TokenAzuriteTest, WorkloadIdentity) {
  nbu::test::WriteFile(*dir_ / "fed", "federated-jwt");
  auto cred =
      WorkloadIdentityCredential::Create({kTenant, "app", idp_.url()}, *dir_ / "fed", Opts());
  ASSERT_TRUE(cred.ok());
  RoundTrip(*cred, "workload");
}

TEST_F(TokenAzuriteTest, ManagedIdentityImdsAndAppService) {
  ManagedIdentityOptions o;
  o.source = Opts();
  auto imds = ManagedIdentityCredential::FromEnv(
      MapEnv({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", idp_.authority()}}), o);
  ASSERT_TRUE(imds.ok());
  RoundTrip(*imds, "imds");
  auto app = ManagedIdentityCredential::FromEnv(
      MapEnv({{"IDENTITY_ENDPOINT", idp_.url() + "/msi/token"}, {"IDENTITY_HEADER", "h"}}), o);
  ASSERT_TRUE(app.ok());
  RoundTrip(*app, "app-service");
}

TEST_F(TokenAzuriteTest, AzureCli) {
  test::WriteScript(*dir_ / "bin/az", "echo '" +
                                          nlohmann::json{{"accessToken", Mint(3600)},
                                                         {"expires_on", NowSeconds() + 3600},
                                                         {"tokenType", "Bearer"}}
                                              .dump() +
                                          "'\n");
  auto cred = AzureCliCredential::FromEnv(MapEnv({{"PATH", *dir_ / "bin"}}));
  RoundTrip(cred, "cli");
}

TEST_F(TokenAzuriteTest, ShortLivedTokensAreRefreshedDuringALongRun) {
  lifetime_ = 3;  // refreshed at half-life, 1.5 s
  auto cred = ClientSecretCredential::Create({kTenant, "app", idp_.url()}, "secret", Opts());
  ASSERT_TRUE(cred.ok());
  RoundTrip(*cred, "refresh", 10, 500ms);  // ~5 s of uploads
  EXPECT_GE(minted_.load(), 3);
}

// Azurite answers an expired bearer token with 403 AuthenticationFailed (Azure answers 401), so
// the 401 -> Invalidate -> one retry path is covered against a stand-in service in
// token_sources_test.cpp (BlobClientRetriesOnceAfter401WithAFreshToken).

}  // namespace
}  // namespace nbu::azure
