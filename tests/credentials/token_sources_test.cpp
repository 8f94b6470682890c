// Each token source against a stand-in endpoint on 127.0.0.1 that speaks its protocol: client
// secret and certificate (form fields, scope, assertion), workload identity (file re-read),
// managed identity from App Service (2019 and 2017), Cloud Shell, Azure Arc (the key-file
// challenge) and IMDS (headers, api-version, client_id, retries), the Azure CLI (a stand-in `az`
// first on PATH); the chain's order and error lines; secrets never in errors.
#include "azure/blob_client.h"
#include "azure/token_chain.h"
#include "azure/token_cli.h"
#include "azure/token_client_credential.h"
#include "azure/token_jwt.h"
#include "azure/token_managed_identity.h"
#include "core/config.h"
#include "server/storage_target.h"
#include "stand_in.h"
#include "util/crypto.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace nbu::azure {
namespace {

using namespace std::chrono_literals;
using test::Json;
using test::MapEnv;
using test::Recorded;
using test::StandIn;

constexpr const char* kSecret = "s3cr3t+/=value-that-must-not-leak";
constexpr const char* kTokenBody =
    R"({"access_token":"tok-1","expires_in":3600,"token_type":"Bearer"})";

std::string AuthHeader(TokenCredential& c) {
  HttpRequest r;
  r.url = "https://acct.blob.core.windows.net/c/b";
  Status s = c.Authorize(r, "acct", false);
  EXPECT_TRUE(s.ok()) << s.ToString();
  const std::string* h = r.FindHeader("Authorization");
  return h ? *h : "";
}

TokenSourceOptions Opts(Clock& clock) {
  TokenSourceOptions o;
  o.clock = &clock;
  o.timeout = 5000ms;
  return o;
}

TEST(ClientSecretCredentialTest, PostsTheClientCredentialsForm) {
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  SimulatedClock clock;
  auto cred = ClientSecretCredential::FromEnv(MapEnv({{"AZURE_TENANT_ID", "tenant-1"},
                                                      {"AZURE_CLIENT_ID", "app-1"},
                                                      {"AZURE_CLIENT_SECRET", kSecret},
                                                      {"AZURE_AUTHORITY_HOST", idp.url() + "/"}}),
                                              Opts(clock));
  ASSERT_TRUE(cred.ok()) << cred.status().ToString();
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  ASSERT_EQ(idp.count(), 1u);
  const Recorded r = idp.requests()[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/tenant-1/oauth2/v2.0/token");
  EXPECT_EQ(r.Header("Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(r.form.at("grant_type"), "client_credentials");
  EXPECT_EQ(r.form.at("client_id"), "app-1");
  EXPECT_EQ(r.form.at("client_secret"), kSecret);
  EXPECT_EQ(r.form.at("scope"), "https://storage.azure.com/.default");
  EXPECT_EQ((*cred)->Describe().find(kSecret), std::string::npos);
}

TEST(ClientSecretCredentialTest, ErrorsNeverCarryTheSecret) {
  // An identity provider that echoes the secret back in its error description.
  StandIn idp([](const Recorded& r, httplib::Response& res) {
    nlohmann::json j = {{"error", "invalid_client"},
                        {"error_description", "AADSTS7000215: bad secret " +
                                                  r.form.at("client_secret") + " / " + r.body}};
    Json(res, 401, j.dump());
  });
  SimulatedClock clock;
  auto cred =
      ClientSecretCredential::Create({"tenant-1", "app-1", idp.url()}, kSecret, Opts(clock));
  ASSERT_TRUE(cred.ok());
  HttpRequest req;
  req.url = "https://acct.blob.core.windows.net/c";
  Status s = (*cred)->Authorize(req, "acct", false);
  EXPECT_EQ(s.kind(), ErrorKind::kAuth);
  EXPECT_NE(s.message().find("invalid_client"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(kSecret), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(UrlEncodeQueryValue(kSecret)), std::string::npos) << s.message();
  // Unreachable endpoint: no secret either.
  auto down = ClientSecretCredential::Create(
      {"tenant-1", "app-1", "http://127.0.0.1:" + std::to_string(test::ClosedLoopbackPort())},
      kSecret, Opts(clock));
  ASSERT_TRUE(down.ok());
  Result<std::string> t = (*down)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message().find(kSecret), std::string::npos);
}

// Entra ID answers 429 and 5xx now and then: while no valid token is cached, such an answer is
// tried again (after its Retry-After, else backoff), up to 4 tries in all. A refusal (400
// invalid_client) is not, nor is a refresh while the cached token still works (the caller keeps
// it and tries later).
TEST(ClientSecretCredentialTest, ATransientAnswerIsRetriedWhileNoTokenIsCached) {
  std::atomic<int> status{503};  // answered until a token is wanted
  std::atomic<bool> recover{true};
  StandIn idp([&](const Recorded&, httplib::Response& res) {
    if (status == 503) res.set_header("Retry-After", "7");
    const int now = status;
    if (recover) status = 200;
    if (now == 200) return Json(res, 200, kTokenBody);
    Json(res, now, R"({"error":"temporarily_unavailable","error_description":"AADSTS50196"})");
  });
  SimulatedClock clock(false);
  auto cred =
      ClientSecretCredential::Create({"tenant-1", "app-1", idp.url()}, kSecret, Opts(clock));
  ASSERT_TRUE(cred.ok());
  std::thread first([&] { EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1"); });
  ASSERT_TRUE(nbu::test::WaitFor([&] { return clock.SleepsForTest().size() == 1; }, 30s));
  EXPECT_EQ(clock.SleepsForTest()[0], 7s) << "the endpoint's Retry-After";
  clock.Advance(7s);
  first.join();
  EXPECT_EQ(idp.count(), 2u);

  // A refresh while the token works: one try, no wait, and the cached token goes on.
  recover = false;
  status = 503;
  clock.Advance(59min);
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  EXPECT_EQ(idp.count(), 3u);
  EXPECT_EQ(clock.SleepsForTest().size(), 1u);

  // No valid token and an endpoint that stays down: 4 tries, then the error says so.
  SimulatedClock auto_clock;
  status = 500;
  auto down =
      ClientSecretCredential::Create({"tenant-1", "app-1", idp.url()}, kSecret, Opts(auto_clock));
  auto t = (*down)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("HTTP 500"), std::string::npos) << t.status().ToString();
  EXPECT_NE(t.status().message().find("after 4 attempts"), std::string::npos)
      << t.status().ToString();
  EXPECT_EQ(idp.count(), 3u + 4u);
  EXPECT_EQ(auto_clock.SleepsForTest().size(), 3u);

  status = 400;  // a refusal is final
  EXPECT_FALSE((*down)->GetToken().ok());
  EXPECT_EQ(idp.count(), 3u + 4u + 1u);
}

// The workload identity and certificate sources post through the same code: a 429 is retried.
TEST(WorkloadIdentityCredentialTest, AThrottledRequestIsRetried) {
  nbu::test::TempDir dir;
  nbu::test::WriteFile(dir / "token", "assertion");
  std::atomic<int> n{0};
  StandIn idp([&](const Recorded&, httplib::Response& res) {
    if (++n == 1) return Json(res, 429, R"({"error":"throttled"})");
    Json(res, 200, kTokenBody);
  });
  SimulatedClock clock;
  auto cred = WorkloadIdentityCredential::Create({"tenant-1", "app-1", idp.url()}, dir / "token",
                                                 Opts(clock));
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  EXPECT_EQ(idp.count(), 2u);
}

TEST(ClientSecretCredentialTest, AuthorityMustBeHttpsUnlessLoopback) {
  auto cred = ClientSecretCredential::Create({"t", "c", "http://login.example.com/"}, kSecret);
  ASSERT_FALSE(cred.ok());
  EXPECT_NE(cred.status().message().find("AZURE_AUTHORITY_HOST"), std::string::npos);
  // The refusal names the host, not a password in the URL's user info.
  cred =
      ClientSecretCredential::Create({"t", "c", "http://u:pa55w0rd@login.example.com/"}, kSecret);
  ASSERT_FALSE(cred.ok());
  EXPECT_NE(cred.status().message().find("refusing http://login.example.com"), std::string::npos)
      << cred.status().message();
  EXPECT_EQ(cred.status().message().find("pa55w0rd"), std::string::npos) << cred.status().message();
  EXPECT_FALSE(ClientSecretCredential::Create({"t/../x", "c", ""}, kSecret).ok());
  auto missing = ClientSecretCredential::FromEnv(MapEnv({{"AZURE_CLIENT_SECRET", kSecret}}));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("AZURE_TENANT_ID"), std::string::npos);
  EXPECT_EQ(missing.status().message().find(kSecret), std::string::npos);
}

TEST(ClientCertificateCredentialTest, SendsAnRs256AssertionWithThumbprint) {
  nbu::test::TempDir dir;
  ASSERT_TRUE(test::MakeSelfSignedCert(dir.path()));
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  SimulatedClock clock;
  auto cred = ClientCertificateCredential::FromEnv(
      MapEnv({{"AZURE_TENANT_ID", "tenant-1"},
              {"AZURE_CLIENT_ID", "app-1"},
              {"AZURE_CLIENT_CERTIFICATE_PATH", dir / "both.pem"},
              {"AZURE_AUTHORITY_HOST", idp.url()}}),
      Opts(clock));
  ASSERT_TRUE(cred.ok()) << cred.status().ToString();
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  const Recorded r = idp.requests().at(0);
  EXPECT_EQ(r.form.at("client_assertion_type"),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
  EXPECT_EQ(r.form.at("scope"), "https://storage.azure.com/.default");
  EXPECT_EQ(r.form.count("client_secret"), 0u);
  const std::string jwt = r.form.at("client_assertion");
  const size_t d1 = jwt.find('.'), d2 = jwt.find('.', d1 + 1);
  ASSERT_NE(d2, std::string::npos);
  auto decode = [](std::string s) {
    for (char& c : s) c = c == '-' ? '+' : c == '_' ? '/' : c;
    while (s.size() % 4) s += '=';
    return nlohmann::json::parse(*Base64Decode(s));
  };
  const auto header = decode(jwt.substr(0, d1));
  const auto claims = decode(jwt.substr(d1 + 1, d2 - d1 - 1));
  EXPECT_EQ(header["alg"], "RS256");
  EXPECT_EQ(header["x5t"].get<std::string>().size(), 27u);  // base64url of 20 bytes
  EXPECT_EQ(claims["aud"], idp.url() + "/tenant-1/oauth2/v2.0/token");
  EXPECT_EQ(claims["iss"], "app-1");
  EXPECT_EQ(claims["sub"], "app-1");
  EXPECT_GT(claims["exp"].get<int64_t>(), claims["nbf"].get<int64_t>());
}

// The certificate and its key encrypted with `password`, in dir/pkcs8.pem ("ENCRYPTED PRIVATE
// KEY") and dir/traditional.pem (OpenSSL's older "Proc-Type: 4,ENCRYPTED" form).
bool MakeEncryptedCerts(const std::string& dir, const std::string& password) {
  if (!test::MakeSelfSignedCert(dir)) return false;
  const std::string in = " -in '" + dir + "/key.pem' -aes256 -passout pass:" + password;
  return test::Shell("openssl pkey" + in + " -out '" + dir + "/pkcs8.key' 2>/dev/null") &&
         test::Shell("openssl rsa -traditional" + in + " -out '" + dir +
                     "/traditional.key' 2>/dev/null") &&
         test::Shell("cd '" + dir + "' && cat cert.pem pkcs8.key > pkcs8.pem && " +
                     "cat cert.pem traditional.key > traditional.pem") &&
         nbu::test::ReadFile(dir + "/pkcs8.pem").find("ENCRYPTED PRIVATE KEY") !=
             std::string::npos &&
         nbu::test::ReadFile(dir + "/traditional.pem").find("Proc-Type: 4,ENCRYPTED") !=
             std::string::npos;
}

// An encrypted key opens with AZURE_CLIENT_CERTIFICATE_PASSWORD; without it, or with a wrong
// one, the error names that variable (never the password).
TEST(ClientCertificateCredentialTest, AnEncryptedKeyOpensWithTheCertificatePassword) {
  const std::string password = "c3rt-pa55w0rd";
  nbu::test::TempDir dir;
  ASSERT_TRUE(MakeEncryptedCerts(dir.path(), password));
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  SimulatedClock clock;
  for (const char* file : {"pkcs8.pem", "traditional.pem"}) {
    std::map<std::string, std::string> env = {{"AZURE_TENANT_ID", "tenant-1"},
                                              {"AZURE_CLIENT_ID", "app-1"},
                                              {"AZURE_CLIENT_CERTIFICATE_PATH", dir / file},
                                              {"AZURE_AUTHORITY_HOST", idp.url()}};
    auto none = ClientCertificateCredential::FromEnv(MapEnv(env), Opts(clock));
    ASSERT_FALSE(none.ok()) << file;
    EXPECT_EQ(none.status().message(),
              "AZURE_CLIENT_CERTIFICATE_PASSWORD: not set, and the private key in " + dir / file +
                  " is encrypted");
    env["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = "wr0ng-" + password;
    auto wrong = ClientCertificateCredential::FromEnv(MapEnv(env), Opts(clock));
    ASSERT_FALSE(wrong.ok()) << file;
    EXPECT_EQ(wrong.status().message(),
              "AZURE_CLIENT_CERTIFICATE_PASSWORD: does not open the encrypted private key in " +
                  dir / file);
    env["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = password;
    auto right = ClientCertificateCredential::FromEnv(MapEnv(env), Opts(clock));
    ASSERT_TRUE(right.ok()) << file << ": " << right.status().ToString();
    EXPECT_EQ(AuthHeader(**right), "Bearer tok-1");
    EXPECT_EQ((*right)->Describe().find(password), std::string::npos);
  }
  EXPECT_EQ(idp.count(), 2u);
  // The chain's EnvironmentCredential passes the password on.
  std::vector<std::string> errors;
  std::shared_ptr<TokenCredential> out;
  ASSERT_TRUE(ResolveTokenCredential("environment",
                                     MapEnv({{"AZURE_TENANT_ID", "tenant-1"},
                                             {"AZURE_CLIENT_ID", "app-1"},
                                             {"AZURE_CLIENT_CERTIFICATE_PATH", dir / "pkcs8.pem"},
                                             {"AZURE_CLIENT_CERTIFICATE_PASSWORD", password},
                                             {"AZURE_AUTHORITY_HOST", idp.url()}}),
                                     Opts(clock), &out, &errors))
      << errors.at(0);
}

// OpenSSL's default for an encrypted key asks for a passphrase on the controlling terminal and
// waits there: start-up would hang. FromPem runs in a child whose controlling terminal is a new
// pseudo-terminal, with no password: it must fail at once and write nothing to the terminal.
TEST(ClientCertificateCredentialTest, AnEncryptedKeyNeverPromptsOnTheTerminal) {
  nbu::test::TempDir dir;
  ASSERT_TRUE(MakeEncryptedCerts(dir.path(), "c3rt-pa55w0rd"));
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
    GTEST_SKIP() << "no pseudo-terminal";
  }
  const std::string terminal = ::ptsname(master);
  for (const char* file : {"pkcs8.pem", "traditional.pem"}) {
    const std::string pem = nbu::test::ReadFile(dir / file);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // A session leader opening a terminal makes it its controlling terminal (/dev/tty).
      if (::setsid() < 0 || ::open(terminal.c_str(), O_RDWR) < 0) ::_exit(3);
      ::_exit(RsaSigner::FromPem(pem).ok() ? 0 : 1);
    }
    // A prompt waits for ever (OpenSSL's prompt restarts its read after a signal such as
    // SIGALRM): the child gets 10 s, then SIGKILL.
    int status = 0;
    const bool ended =
        nbu::test::WaitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 10s);
    if (!ended) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
    EXPECT_TRUE(ended) << file << ": still waiting after 10 s (for a passphrase)";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << file;
    pollfd p{master, POLLIN, 0};
    std::string written;
    while (::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0) {
      char buf[256];
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;
      written.append(buf, static_cast<size_t>(n));
    }
    EXPECT_EQ(written, "") << file << ": prompted on the terminal";
  }
  ::close(master);
}

TEST(WorkloadIdentityCredentialTest, RereadsTheFederatedTokenOnEveryFetch) {
  nbu::test::TempDir dir;
  const std::string file = dir / "azure-identity-token";
  nbu::test::WriteFile(file, "assertion-one\n");
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  SimulatedClock clock(false);
  auto cred = WorkloadIdentityCredential::FromEnv(MapEnv({{"AZURE_TENANT_ID", "tenant-1"},
                                                          {"AZURE_CLIENT_ID", "app-1"},
                                                          {"AZURE_FEDERATED_TOKEN_FILE", file},
                                                          {"AZURE_AUTHORITY_HOST", idp.url()}}),
                                                  Opts(clock));
  ASSERT_TRUE(cred.ok()) << cred.status().ToString();
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  nbu::test::WriteFile(file, "assertion-two");  // the kubelet rotated it
  clock.Advance(59min);                         // refresh due
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  const auto reqs = idp.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].path, "/tenant-1/oauth2/v2.0/token");
  EXPECT_EQ(reqs[0].form.at("client_assertion"), "assertion-one");
  EXPECT_EQ(reqs[1].form.at("client_assertion"), "assertion-two");
  EXPECT_EQ(reqs[1].form.at("client_assertion_type"),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
  EXPECT_EQ(reqs[1].form.at("client_id"), "app-1");
  EXPECT_EQ(reqs[1].form.at("scope"), "https://storage.azure.com/.default");
  // A rejected assertion does not leak into the error.
  StandIn deny([](const Recorded& r, httplib::Response& res) {
    Json(res, 400,
         nlohmann::json{{"error", "invalid_grant"},
                        {"error_description", "bad " + r.form.at("client_assertion")}}
             .dump());
  });
  auto bad =
      WorkloadIdentityCredential::Create({"tenant-1", "app-1", deny.url()}, file, Opts(clock));
  ASSERT_TRUE(bad.ok());
  auto t = (*bad)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message().find("assertion-two"), std::string::npos) << t.status().message();
}

// An endpoint that echoes a secret after a long description: the message is shortened to 200
// characters, and a cut through the secret must not keep a piece of it (it is scrubbed first).
// `echoed` picks the secret out of the request; `field` is where the answer puts it.
test::StandIn::Handler EchoAfterLongText(std::function<std::string(const Recorded&)> echoed,
                                         const std::string& field = "error_description") {
  return [echoed = std::move(echoed), field](const Recorded& r, httplib::Response& res) {
    Json(res, 400,
         nlohmann::json{{"error", "invalid_client"},
                        {field, "AADSTS7000215: " + std::string(165, '.') + echoed(r)}}
             .dump());
  };
}

void ExpectNoPieceOf(const std::string& secret, const Status& s) {
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("AADSTS7000215: ..."), std::string::npos) << s.message();
  EXPECT_EQ(nbu::test::PieceOf(secret, s.message(), 8), "") << s.message();
}

TEST(TokenErrorsTest, ALongDescriptionIsScrubbedBeforeItIsShortened) {
  SimulatedClock clock;
  {  // A client secret.
    StandIn idp(EchoAfterLongText([](const Recorded& r) { return r.form.at("client_secret"); }));
    auto cred =
        ClientSecretCredential::Create({"tenant-1", "app-1", idp.url()}, kSecret, Opts(clock));
    ASSERT_TRUE(cred.ok());
    ExpectNoPieceOf(kSecret, (*cred)->GetToken().status());
  }
  {  // A federated token of about 1 KB (the size of an AKS service account token).
    const std::string jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im" + std::string(1000, 'Q') + ".sig";
    nbu::test::TempDir dir;
    nbu::test::WriteFile(dir / "token", jwt);
    StandIn idp(EchoAfterLongText([](const Recorded& r) { return r.form.at("client_assertion"); }));
    auto cred = WorkloadIdentityCredential::Create({"tenant-1", "app-1", idp.url()}, dir / "token",
                                                   Opts(clock));
    ASSERT_TRUE(cred.ok());
    ExpectNoPieceOf(jwt, (*cred)->GetToken().status());
  }
  {  // The client assertion signed with a certificate.
    nbu::test::TempDir dir;
    ASSERT_TRUE(test::MakeSelfSignedCert(dir.path()));
    StandIn idp(EchoAfterLongText([](const Recorded& r) { return r.form.at("client_assertion"); }));
    auto cred = ClientCertificateCredential::Create({"tenant-1", "app-1", idp.url()},
                                                    dir / "both.pem", Opts(clock));
    ASSERT_TRUE(cred.ok()) << cred.status().ToString();
    const Status s = (*cred)->GetToken().status();
    ASSERT_EQ(idp.count(), 1u);
    const std::string assertion = idp.requests()[0].form.at("client_assertion");
    EXPECT_GT(assertion.size(), 300u);
    ExpectNoPieceOf(assertion, s);
  }
  {  // App Service's IDENTITY_HEADER, in a `message` (that endpoint's error field).
    const std::string header = "hdr-" + std::string(40, 'H') + "-secret";
    StandIn msi(EchoAfterLongText([](const Recorded& r) { return r.Header("X-IDENTITY-HEADER"); },
                                  "message"));
    ManagedIdentityOptions o;
    o.source = Opts(clock);
    auto cred = ManagedIdentityCredential::FromEnv(
        MapEnv({{"IDENTITY_ENDPOINT", msi.url() + "/msi/token"}, {"IDENTITY_HEADER", header}}), o);
    ASSERT_TRUE(cred.ok());
    ExpectNoPieceOf(header, (*cred)->GetToken().status());
  }
}

TEST(ManagedIdentityCredentialTest, AppServiceSendsHeaderAndApiVersion) {
  StandIn msi([](const Recorded&, httplib::Response& res) {
    Json(res, 200, R"({"access_token":"mi-tok","expires_on":"4102444800","resource":"x"})");
  });
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  auto cred = ManagedIdentityCredential::FromEnv(
      MapEnv({{"IDENTITY_ENDPOINT", msi.url() + "/msi/token"},
              {"IDENTITY_HEADER", "hdr-secret"},
              {"AZURE_CLIENT_ID", "user-mi"},
              {"AZURE_POD_IDENTITY_AUTHORITY_HOST", "127.0.0.1:1"}}),
      o);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ((*cred)->source(), ManagedIdentityCredential::Source::kAppService);
  EXPECT_EQ(AuthHeader(**cred), "Bearer mi-tok");
  const Recorded r = msi.requests().at(0);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/msi/token");
  EXPECT_EQ(r.query.at("api-version"), "2019-08-01");
  EXPECT_EQ(r.query.at("resource"), "https://storage.azure.com");
  EXPECT_EQ(r.query.at("client_id"), "user-mi");
  EXPECT_EQ(r.Header("X-IDENTITY-HEADER"), "hdr-secret");
  EXPECT_EQ((*cred)->Describe().find("hdr-secret"), std::string::npos);
}

// A system-assigned identity from the IMDS stand-in `imds`, on `clock`.
Result<std::shared_ptr<ManagedIdentityCredential>> ImdsCredential(const StandIn& imds,
                                                                  SimulatedClock& clock) {
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  return ManagedIdentityCredential::FromEnv(
      MapEnv({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.authority()}}), o);
}

// A stop (a shutdown) ends a fetch that would wait out the endpoint's retries: one request was
// made, none after the stop, and the fetch says it was cancelled. On a clock that never moves, the
// backoff sleep ends only by the stop: no wall-clock margin to exceed on a slow machine.
TEST(ManagedIdentityCredentialTest, AStopEndsAFetchThatWaitsOutRetries) {
  StandIn imds([](const Recorded&, httplib::Response& res) {
    Json(res, 500, R"({"error":"unavailable"})");
  });
  SimulatedClock clock(/*auto_advance=*/false);  // sleeps end on Advance (or their stop) only
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  o.base_delay = 60s;  // before the second request
  o.max_delay = 60s;
  auto cred = ManagedIdentityCredential::FromEnv(
      MapEnv({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.authority()}}), o);
  ASSERT_TRUE(cred.ok()) << cred.status().ToString();
  std::stop_source stop;
  Result<std::string> token = Status(ErrorKind::kAuth, "not run");
  std::atomic<bool> returned{false};
  std::thread fetch([&] {
    token = (*cred)->GetToken(stop.get_token());
    returned = true;
  });
  // EXPECT: the thread must be stopped and joined either way.
  EXPECT_TRUE(nbu::test::WaitFor([&] { return clock.SleepsForTest().size() == 1; }, 30s))
      << "the fetch never began its backoff sleep";
  stop.request_stop();
  const bool ended = nbu::test::WaitFor([&] { return returned.load(); }, 30s);
  if (!ended) clock.Advance(1h);  // a fetch deaf to the stop: let it go, so the join ends
  fetch.join();
  EXPECT_TRUE(ended) << "the stop did not end the backoff sleep";
  EXPECT_EQ(token.status().kind(), ErrorKind::kCancelled) << token.status().ToString();
  EXPECT_EQ(imds.count(), 1u);
  // One backoff sleep began, of the whole delay (60 s, jittered by 0.8-1.3 and capped at 60 s),
  // and none completed: the clock never moved.
  const std::vector<Duration> sleeps = clock.SleepsForTest();
  ASSERT_EQ(sleeps.size(), 1u);
  EXPECT_TRUE(sleeps[0] >= Duration(48s) && sleeps[0] <= Duration(60s));
  EXPECT_TRUE(clock.Now() == MonoTime{});
}

TEST(ManagedIdentityCredentialTest, ImdsRetriesThrottlingAndServerErrors) {
  std::atomic<int> n{0};
  StandIn imds([&](const Recorded&, httplib::Response& res) {
    const int i = ++n;
    if (i == 1) return Json(res, 429, R"({"error":"throttled"})");
    if (i == 2) return Json(res, 500, R"({"error":"oops"})");
    Json(res, 200, R"({"access_token":"imds-tok","expires_in":"3599","expires_on":"1"})");
  });
  SimulatedClock clock;  // auto-advance: sleeps return at once and are recorded
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  auto cred = ManagedIdentityCredential::FromEnv(
      MapEnv({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.authority()},
              {"AZURE_CLIENT_ID", "user-mi"}}),
      o);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ((*cred)->source(), ManagedIdentityCredential::Source::kImds);
  EXPECT_EQ(AuthHeader(**cred), "Bearer imds-tok");
  const auto reqs = imds.requests();
  ASSERT_EQ(reqs.size(), 3u);
  for (const auto& r : reqs) {
    EXPECT_EQ(r.path, "/metadata/identity/oauth2/token");
    EXPECT_EQ(r.Header("Metadata"), "true");
    EXPECT_EQ(r.query.at("api-version"), "2018-02-01");
    EXPECT_EQ(r.query.at("resource"), "https://storage.azure.com");
    EXPECT_EQ(r.query.at("client_id"), "user-mi");
  }
  const auto sleeps = clock.SleepsForTest();
  ASSERT_EQ(sleeps.size(), 2u);
  EXPECT_LT(sleeps[0], sleeps[1]);  // exponential backoff
  // expires_in wins over expires_on: the token is cached for the hour.
  EXPECT_EQ(AuthHeader(**cred), "Bearer imds-tok");
  EXPECT_EQ(imds.count(), 3u);
}

// The one wait before IMDS's second try, when its first answer is `status` with `headers`.
Duration WaitAfterAnAnswer(int status,
                           const std::vector<std::pair<std::string, std::string>>& headers) {
  std::atomic<int> n{0};
  StandIn imds([&](const Recorded&, httplib::Response& res) {
    if (++n > 1) return Json(res, 200, R"({"access_token":"imds-tok","expires_in":3599})");
    for (const auto& [name, value] : headers) res.set_header(name, value);
    Json(res, status, R"({"error":"busy"})");
  });
  SimulatedClock clock;
  auto cred = ImdsCredential(imds, clock);
  EXPECT_TRUE(cred.ok());
  if (!cred.ok()) return Duration::max();
  EXPECT_EQ(AuthHeader(**cred), "Bearer imds-tok");
  const auto sleeps = clock.SleepsForTest();
  EXPECT_EQ(sleeps.size(), 1u);
  return sleeps.empty() ? Duration::max() : sleeps[0];
}

// A Retry-After too large for nanoseconds (or for 64 bits) is capped like any long one, not
// turned into a negative delay (a retry at once, and a 410 window that never ends).
TEST(ManagedIdentityCredentialTest, AHugeRetryAfterIsCappedNotOverflowed) {
  const Duration waited = WaitAfterAnAnswer(429, {{"Retry-After", "99999999999999999999"}});
  EXPECT_TRUE(waited == ManagedIdentityOptions{}.max_delay)
      << std::chrono::duration<double>(waited).count() << " s";
}

// The 410 window is counted in waits: a 410 with "Retry-After: 0" still waits the 410 floor, or
// IMDS answering so throughout would be asked again at once, and without end.
TEST(ManagedIdentityCredentialTest, AGoneAnswerWaitsItsFloorWhateverItsRetryAfter) {
  const Duration waited = WaitAfterAnAnswer(410, {{"Retry-After", "0"}});
  EXPECT_TRUE(waited == ManagedIdentityOptions{}.min_delay_410)
      << std::chrono::duration<double>(waited).count() << " s";
}

// IMDS and the other identity endpoints sit behind the same HTTP front ends as storage: a
// Retry-After in its date form is honoured as the blob client honours it, measured against the
// answer's own Date.
TEST(ManagedIdentityCredentialTest, ARetryAfterDateIsHonoured) {
  const Duration waited =
      WaitAfterAnAnswer(503, {{"Date", "Wed, 21 Oct 2015 07:27:48 GMT"},
                              {"Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"}});
  EXPECT_TRUE(waited == std::chrono::seconds(12))
      << std::chrono::duration<double>(waited).count() << " s";
}

// A refresh while the cached token is still valid runs on an upload worker: it makes one
// request, without backoff, and the worker goes on with the cached token. The full retry
// budget (minutes of Retry-After and backoff) is kept for when no valid token is left.
TEST(ManagedIdentityCredentialTest, ARefreshWhileTheTokenIsValidDoesNotRetry) {
  std::atomic<int> n{0};
  StandIn imds([&](const Recorded&, httplib::Response& res) {
    if (++n == 1) return Json(res, 200, R"({"access_token":"first","expires_in":3600})");
    res.set_header("Retry-After", "30");
    Json(res, 503, R"({"error":"busy"})");
  });
  SimulatedClock clock;
  auto cred = ImdsCredential(imds, clock);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ(AuthHeader(**cred), "Bearer first");
  clock.Advance(std::chrono::minutes(59));  // past the refresh point, 1 min before expiry
  EXPECT_EQ(AuthHeader(**cred), "Bearer first");
  EXPECT_EQ(imds.count(), 2u) << "one refresh request, not retried";
  EXPECT_TRUE(clock.SleepsForTest().empty());
  clock.Advance(std::chrono::minutes(2));  // expired: now the fetch retries
  EXPECT_FALSE((*cred)->GetToken().ok());
  EXPECT_EQ(imds.count(), 2u + 5u);
}

// IMDS answers 410 while it is being upgraded, for up to 70 s: a first token is waited for
// that long, however few attempts that takes.
TEST(ManagedIdentityCredentialTest, ImdsGoneIsRetriedForSeventySeconds) {
  StandIn imds([](const Recorded&, httplib::Response& res) { Json(res, 410, "{}"); });
  SimulatedClock clock;
  auto cred = ImdsCredential(imds, clock);
  ASSERT_TRUE(cred.ok());
  EXPECT_FALSE((*cred)->GetToken().ok());
  Duration waited{0};
  for (const Duration d : clock.SleepsForTest()) waited += d;
  EXPECT_GE(waited, std::chrono::seconds(70));
  EXPECT_LT(waited, std::chrono::seconds(70 + 31)) << "no more than one wait past the window";
}

TEST(ManagedIdentityCredentialTest, ImdsDoesNotRetryOtherClientErrors) {
  StandIn imds([](const Recorded&, httplib::Response& res) {
    Json(res, 400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  });
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  auto cred = ManagedIdentityCredential::FromEnv(
      MapEnv({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url()}}), o);
  auto t = (*cred)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("Identity not found"), std::string::npos);
  EXPECT_EQ(imds.count(), 1u);
}

// The probe asks whether IMDS is there: no answer gives up at once (no backoff), a 400 too (no
// such identity), and later fetches retry normally. An answer IMDS retries (410 while it is
// upgraded, 503) shows it is there: the probe then retries, as without it.
TEST(ManagedIdentityCredentialTest, TheProbeGivesUpOnlyWhenNothingAnswers) {
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  o.probe = true;
  const auto probe = [&](const std::string& authority) {
    return *ManagedIdentityCredential::FromEnv(
        MapEnv({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", authority}}), o);
  };
  auto silent = probe("127.0.0.1:" + std::to_string(test::ClosedLoopbackPort()));
  auto t = silent->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("not reachable"), std::string::npos) << t.status().ToString();
  EXPECT_TRUE(clock.SleepsForTest().empty()) << "no retry of a probe nothing answered";
  EXPECT_FALSE(silent->GetToken().ok());
  EXPECT_EQ(clock.SleepsForTest().size(), 4u) << "a later fetch is no probe: 5 tries";

  StandIn unknown([](const Recorded&, httplib::Response& res) {
    Json(res, 400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  });
  EXPECT_FALSE(probe(unknown.authority())->GetToken().ok());
  EXPECT_EQ(unknown.count(), 1u);

  std::atomic<int> n{0};
  StandIn upgrading([&](const Recorded&, httplib::Response& res) {
    if (++n <= 2) return Json(res, 410, "{}");
    Json(res, 200, R"({"access_token":"after-upgrade","expires_in":3600})");
  });
  auto answered = probe(upgrading.authority());
  auto got = answered->GetToken();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "after-upgrade");
  EXPECT_EQ(upgrading.count(), 3u);

  StandIn busy([](const Recorded&, httplib::Response& res) { Json(res, 503, "{}"); });
  auto down = probe(busy.authority());
  EXPECT_FALSE(down->GetToken().ok());
  EXPECT_EQ(busy.count(), 5u) << "the probe's answer, then the retries of the mode";
}

// Service Fabric sets App Service's two variables and its certificate's thumbprint: its endpoint
// is not App Service's, so the source says it is not supported rather than fail on TLS later.
TEST(ManagedIdentityCredentialTest, ServiceFabricIsRefusedByName) {
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  auto cred = ManagedIdentityCredential::FromEnv(
      MapEnv({{"IDENTITY_ENDPOINT", "https://127.0.0.1:2377/metadata/identity/oauth2/token"},
              {"IDENTITY_HEADER", "h"},
              {"IDENTITY_SERVER_THUMBPRINT", "0123456789abcdef"}}),
      o);
  ASSERT_FALSE(cred.ok());
  EXPECT_NE(cred.status().message().find("Service Fabric"), std::string::npos)
      << cred.status().ToString();
}

TEST(ManagedIdentityCredentialTest, AppService2017SendsSecretHeaderAndClientid) {
  StandIn msi([](const Recorded&, httplib::Response& res) {
    Json(res, 200, R"({"access_token":"mi-2017","expires_on":"11/14/2099 11:13:20 PM +00:00"})");
  });
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  auto cred = ManagedIdentityCredential::FromEnv(MapEnv({{"MSI_ENDPOINT", msi.url() + "/msi"},
                                                         {"MSI_SECRET", kSecret},
                                                         {"AZURE_CLIENT_ID", "user-mi"}}),
                                                 o);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ((*cred)->source(), ManagedIdentityCredential::Source::kAppService2017);
  EXPECT_EQ(AuthHeader(**cred), "Bearer mi-2017");
  const Recorded r = msi.requests().at(0);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/msi");
  EXPECT_EQ(r.query.at("api-version"), "2017-09-01");
  EXPECT_EQ(r.query.at("resource"), "https://storage.azure.com");
  EXPECT_EQ(r.query.at("clientid"), "user-mi");
  EXPECT_EQ(r.Header("secret"), kSecret);
  EXPECT_EQ((*cred)->Describe().find(kSecret), std::string::npos);
}

TEST(ManagedIdentityCredentialTest, CloudShellPostsTheResourceAndHasNoUserIdentity) {
  StandIn shell([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  auto cred = ManagedIdentityCredential::FromEnv(
      MapEnv({{"MSI_ENDPOINT", shell.url() + "/oauth2/token"}, {"IMDS_ENDPOINT", "x"}}), o);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ((*cred)->source(), ManagedIdentityCredential::Source::kCloudShell);
  EXPECT_EQ(AuthHeader(**cred), "Bearer tok-1");
  const Recorded r = shell.requests().at(0);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/oauth2/token");
  EXPECT_EQ(r.Header("Metadata"), "true");
  EXPECT_EQ(r.form,
            (std::map<std::string, std::string>{{"resource", "https://storage.azure.com"}}));

  auto user = ManagedIdentityCredential::FromEnv(
      MapEnv({{"MSI_ENDPOINT", shell.url()}, {"AZURE_CLIENT_ID", "user-mi"}}), o);
  ASSERT_FALSE(user.ok());
  EXPECT_NE(user.status().message().find("Cloud Shell"), std::string::npos);
  EXPECT_EQ(shell.count(), 1u);
}

// A user-assigned identity can be chosen by its client id, object id or resource id; each source
// names the last two its own way (App Service: principal_id, mi_res_id; IMDS: object_id,
// msi_res_id). One id at most, and none where only the system-assigned identity exists.
TEST(ManagedIdentityCredentialTest, UserAssignedIdentityByObjectIdOrResourceId) {
  StandIn msi([](const Recorded&, httplib::Response& res) {
    Json(res, 200, R"({"access_token":"mi-tok","expires_on":"4102444800","resource":"x"})");
  });
  const std::string res_id =
      "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
      "userAssignedIdentities/ingest";
  SimulatedClock clock;
  ManagedIdentityOptions o;
  o.source = Opts(clock);
  const std::map<std::string, std::string> app_service = {{"IDENTITY_ENDPOINT", msi.url() + "/msi"},
                                                          {"IDENTITY_HEADER", kSecret}};
  const std::map<std::string, std::string> app_service_2017 = {{"MSI_ENDPOINT", msi.url() + "/msi"},
                                                               {"MSI_SECRET", kSecret}};
  const std::map<std::string, std::string> imds = {
      {"AZURE_POD_IDENTITY_AUTHORITY_HOST", msi.authority()}};
  struct Case {
    std::map<std::string, std::string> env;
    std::string var, value, param, describe;
  };
  const Case cases[] = {
      {app_service, kObjectIdVar, "obj-1", "principal_id", "object_id=obj-1"},
      {app_service, kResourceIdVar, res_id, "mi_res_id", "resource_id=" + res_id},
      {app_service_2017, kObjectIdVar, "obj-1", "principal_id", "object_id=obj-1"},
      {app_service_2017, kResourceIdVar, res_id, "mi_res_id", "resource_id=" + res_id},
      {imds, kObjectIdVar, "obj-1", "object_id", "object_id=obj-1"},
      {imds, kResourceIdVar, res_id, "msi_res_id", "resource_id=" + res_id},
  };
  for (const Case& c : cases) {
    auto env = c.env;
    env[c.var] = c.value;
    auto cred = ManagedIdentityCredential::FromEnv(MapEnv(env), o);
    ASSERT_TRUE(cred.ok()) << cred.status().ToString();
    EXPECT_EQ(AuthHeader(**cred), "Bearer mi-tok");
    const Recorded r = msi.requests().back();
    EXPECT_EQ(r.query.at(c.param), c.value) << c.param;
    for (const char* other :
         {"client_id", "clientid", "principal_id", "object_id", "mi_res_id", "msi_res_id"}) {
      if (other != c.param) {
        EXPECT_EQ(r.query.count(other), 0u) << c.param << " and " << other;
      }
    }
    EXPECT_NE((*cred)->Describe().find(c.describe), std::string::npos) << (*cred)->Describe();
  }
  const size_t sent = msi.count();
  auto both = imds;
  both[kClientIdVar] = "user-mi";
  both[kResourceIdVar] = res_id;
  auto ambiguous = ManagedIdentityCredential::FromEnv(MapEnv(both), o);
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.status().message().find(std::string(kClientIdVar) + ", " + kResourceIdVar),
            std::string::npos)
      << ambiguous.status().message();
  auto arc = ManagedIdentityCredential::FromEnv(
      MapEnv({{"IDENTITY_ENDPOINT", msi.url()}, {"IMDS_ENDPOINT", "x"}, {kObjectIdVar, "obj-1"}}),
      o);
  ASSERT_FALSE(arc.ok());
  EXPECT_NE(arc.status().message().find(std::string("Azure Arc has only the system-assigned "
                                                    "identity; unset ") +
                                        kObjectIdVar),
            std::string::npos)
      << arc.status().message();
  EXPECT_EQ(msi.count(), sent);
}

// Azure Arc's endpoint answers a request without credentials with 401 and the path of a key file
// only a privileged local user can read; its content, sent back as Basic credentials, gets the
// token.
class ArcManagedIdentityTest : public ::testing::Test {
 protected:
  ArcManagedIdentityTest() {
    std::filesystem::create_directory(keys_ / "tokens");
    nbu::test::WriteFile(Key("node.key"),
                         std::string(kSecret) + "\n");  // the line break is dropped
    o_.source = Opts(clock_);
    o_.arc_key_dir = keys_ / "tokens";
  }
  std::string Key(const std::string& name) const { return keys_ / "tokens/" + name; }
  // An Arc endpoint whose challenges name `key_path`; requests with credentials get `status`
  // and `body`.
  StandIn Endpoint(const std::string& key_path, int status = 200,
                   std::string body = R"({"access_token":"arc-tok","expires_on":"4102444800"})") {
    return StandIn([=](const Recorded& r, httplib::Response& res) {
      if (r.Header("Authorization").empty()) {
        res.set_header("WWW-Authenticate", "Basic realm=" + key_path);
        return Json(res, 401, R"({"error":"unauthorized"})");
      }
      Json(res, status, body);
    });
  }
  Result<std::shared_ptr<ManagedIdentityCredential>> Cred(const StandIn& arc,
                                                          const std::string& client_id = "") {
    EnvMap env = {{"IDENTITY_ENDPOINT", arc.url() + "/metadata/identity/oauth2/token"},
                  {"IMDS_ENDPOINT", "http://127.0.0.1:1"}};
    if (!client_id.empty()) env["AZURE_CLIENT_ID"] = client_id;
    return ManagedIdentityCredential::FromEnv(MapEnv(env), o_);
  }
  using EnvMap = std::map<std::string, std::string>;
  nbu::test::TempDir keys_;
  SimulatedClock clock_;
  ManagedIdentityOptions o_;
};

TEST_F(ArcManagedIdentityTest, AnswersTheChallengeWithTheKeyFile) {
  StandIn arc = Endpoint(Key("node.key"));
  auto cred = Cred(arc);
  ASSERT_TRUE(cred.ok());
  EXPECT_EQ((*cred)->source(), ManagedIdentityCredential::Source::kArc);
  EXPECT_EQ(AuthHeader(**cred), "Bearer arc-tok");
  const auto reqs = arc.requests();
  ASSERT_EQ(reqs.size(), 2u);
  for (const auto& r : reqs) {
    EXPECT_EQ(r.method, "GET");
    EXPECT_EQ(r.path, "/metadata/identity/oauth2/token");
    EXPECT_EQ(r.query.at("api-version"), "2019-11-01");
    EXPECT_EQ(r.query.at("resource"), "https://storage.azure.com");
    EXPECT_EQ(r.Header("Metadata"), "true");
  }
  EXPECT_EQ(reqs[0].Header("Authorization"), "");
  EXPECT_EQ(reqs[1].Header("Authorization"), std::string("Basic ") + kSecret);
  EXPECT_EQ((*cred)->Describe(), "managed-identity(azure-arc, system-assigned)");

  auto user = Cred(arc, "user-mi");
  ASSERT_FALSE(user.ok());
  EXPECT_NE(user.status().message().find("Azure Arc"), std::string::npos);
}

// Only a regular *.key file directly in the key directory, of at most 4,096 bytes and without
// control characters, is read and sent.
TEST_F(ArcManagedIdentityTest, RefusesAnyOtherKeyFile) {
  nbu::test::WriteFile(keys_ / "elsewhere.key", "not-for-you");
  nbu::test::WriteFile(Key("notes.txt"), "x");
  nbu::test::WriteFile(Key("big.key"), std::string(kArcKeyMaxBytes + 1, 'k'));
  nbu::test::WriteFile(Key("split.key"), "two\nlines");
  std::filesystem::create_symlink(keys_ / "elsewhere.key", Key("link.key"));
  ASSERT_EQ(::mkfifo(Key("pipe.key").c_str(), 0600), 0);  // opened, it would wait for a writer
  for (const std::string& path :
       {keys_ / "elsewhere.key", Key("../elsewhere.key"), Key("notes.txt"), Key("big.key"),
        Key("link.key"), Key("missing.key"), Key("split.key"), Key("pipe.key")}) {
    StandIn arc = Endpoint(path);
    auto cred = Cred(arc);
    ASSERT_TRUE(cred.ok());
    auto t = (*cred)->GetToken();
    ASSERT_FALSE(t.ok()) << path;
    EXPECT_EQ(t.status().kind(), ErrorKind::kAuth) << path;
    EXPECT_NE(t.status().message().find("refusing the challenge's key file"), std::string::npos)
        << t.status().message();
    EXPECT_EQ(arc.count(), 1u) << path;  // nothing sent back, no retry
  }
}

TEST_F(ArcManagedIdentityTest, TheKeyNeverAppearsInErrors) {
  StandIn arc =
      Endpoint(Key("node.key"), 400,
               std::string(R"({"error":"invalid_request","error_description":"bad Basic )") +
                   kSecret + R"("})");
  auto cred = Cred(arc);
  ASSERT_TRUE(cred.ok());
  auto t = (*cred)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message().find(kSecret), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("<redacted>"), std::string::npos) << t.status().message();
}

class AzureCliCredentialTest : public ::testing::Test {
 protected:
  void Az(const std::string& body) { test::WriteScript(dir_ / "bin/az", body); }
  std::shared_ptr<AzureCliCredential> Cred(std::chrono::milliseconds timeout = 13000ms) {
    AzureCliOptions o;
    o.clock = &clock_;
    o.timeout = timeout;
    return AzureCliCredential::FromEnv(MapEnv({{"PATH", dir_ / "bin" + ":/usr/bin:/bin"}}), o);
  }
  nbu::test::TempDir dir_;
  SimulatedClock clock_;
};

TEST_F(AzureCliCredentialTest, RunsAzAndParsesExpiresOn) {
  Az("echo \"$@\" > '" + dir_ / "args" +
     "'\n"
     "echo '{\"accessToken\":\"cli-tok\",\"expiresOn\":\"2099-01-01 00:00:00.000000\","
     "\"expires_on\":4102444800,\"tokenType\":\"Bearer\"}'\n");
  auto cred = Cred();
  EXPECT_EQ(AuthHeader(*cred), "Bearer cli-tok");
  EXPECT_EQ(nbu::test::ReadFile(dir_ / "args"),
            "account get-access-token --output json --resource https://storage.azure.com\n");
}

TEST_F(AzureCliCredentialTest, OlderCliWithOnlyLocalExpiresOn) {
  Az("echo '{\"accessToken\":\"old-cli\",\"expiresOn\":\"2099-01-01 00:00:00.000000\"}'\n");
  EXPECT_EQ(AuthHeader(*Cred()), "Bearer old-cli");
  auto t = ParseAzureCliToken(R"({"accessToken":"x","expiresOn":"2099-01-01 00:00:00.000000"})");
  ASSERT_TRUE(t.ok());
  EXPECT_GT(t->expires_on, std::chrono::system_clock::now() + 24h * 365 * 50);
}

// An expires_on out of range (in milliseconds, or beyond the clock) would overflow the clock's
// nanoseconds: the local expiresOn is read instead, and without one the answer has no expiry. An
// expiresOn beyond the clock is no expiry either.
TEST_F(AzureCliCredentialTest, AnExpiresOnOutOfRangeIsNotTaken) {
  for (const char* on : {"4102444800000", "4102444800000.0", "1e30", "18446744073709551615",
                         "\"4102444800000000\"", "-5"}) {
    const std::string fields = std::string(R"({"accessToken":"x","expires_on":)") + on;
    auto local = ParseAzureCliToken(fields + R"(,"expiresOn":"2099-01-01 00:00:00.000000"})");
    ASSERT_TRUE(local.ok()) << on << ": " << local.status().ToString();
    EXPECT_GT(local->expires_on, std::chrono::system_clock::now() + 24h * 365 * 50) << on;
    EXPECT_LT(local->expires_on, std::chrono::system_clock::now() + 24h * 365 * 80) << on;
    EXPECT_FALSE(ParseAzureCliToken(fields + "}").ok()) << on;
  }
  auto t = ParseAzureCliToken(R"({"accessToken":"x","expires_on":4102444800})");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->expires_on, WallTime(std::chrono::seconds(4102444800)));
  // The local expiresOn, as far off, has none either.
  EXPECT_FALSE(
      ParseAzureCliToken(R"({"accessToken":"x","expiresOn":"2300-01-01 00:00:00.0"})").ok());
}

TEST_F(AzureCliCredentialTest, NotLoggedInAndTimeoutAndMissing) {
  Az("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n");
  auto t = Cred()->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("az login"), std::string::npos) << t.status().message();
  // An `az` that hangs is killed at the timeout with what it started (here a `sleep` in the
  // background, as `az` runs python without exec): on return both are gone, and it never got
  // to write "late" (a wait for it to end would return after 30 s, with it).
  Az("sleep 30 &\necho $$ $! > '" + dir_ / "pids.tmp" + "'\nmv '" + dir_ / "pids.tmp" + "' '" +
     dir_ / "pids" + "'\nwait\necho late > '" + dir_ / "late" + "'\n");
  t = Cred(2000ms)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("did not answer"), std::string::npos);
  ASSERT_TRUE(std::filesystem::exists(dir_ / "pids")) << "az did not start within 2 s";
  std::istringstream pids(nbu::test::ReadFile(dir_ / "pids"));
  pid_t shell = 0;
  pid_t sleeper = 0;
  pids >> shell >> sleeper;
  for (const pid_t pid : {shell, sleeper}) {
    ASSERT_GT(pid, 0);
    // The shell is reaped by the credential; the orphaned sleep is dead once it is a zombie.
    auto dead = [pid] {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) return true;  // gone
      const size_t paren = line.rfind(')');
      return paren != std::string::npos && line.compare(paren, 3, ") Z") == 0;
    };
    EXPECT_TRUE(nbu::test::WaitFor(dead, 10s)) << "process " << pid << " still runs";
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "late")) << "waited for az to finish";
  // One that closes its output and goes on running is timed out the same way.
  Az("exec >&- 2>&-\nsleep 30\necho late > '" + dir_ / "late" + "'\n");
  t = Cred(2000ms)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("did not answer"), std::string::npos) << t.status().message();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "late")) << "waited for az to finish";
  AzureCliOptions o;
  t = AzureCliCredential::FromEnv(MapEnv({{"PATH", dir_ / "nothing"}}), o)->GetToken();
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("not found"), std::string::npos);
}

TEST(BearerBlobClientTest, RetriesOnceAfter401WithAFreshToken) {
  std::atomic<int> minted{0};
  StandIn idp([&](const Recorded&, httplib::Response& res) {
    Json(res, 200,
         nlohmann::json{{"access_token", "tok-" + std::to_string(++minted)}, {"expires_in", 3600}}
             .dump());
  });
  // A storage stand-in that rejects tok-1 (revoked) and always rejects "Bearer tok-9".
  StandIn storage([](const Recorded& r, httplib::Response& res) {
    res.status = r.Header("Authorization") == "Bearer tok-1" ? 401 : 201;
  });
  auto cred = ClientSecretCredential::Create({"tenant-1", "app-1", idp.url()}, kSecret);
  ASSERT_TRUE(cred.ok());
  BlobClientOptions bo;
  bo.endpoint = storage.url() + "/devstoreaccount1";
  bo.account = "devstoreaccount1";
  bo.container = "c";
  BlobClient client(bo, *cred, std::make_shared<HttpTransport>(), RealClock::Instance());
  Status s = client.CreateContainerIfMissing();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(minted.load(), 2);
  const auto reqs = storage.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].Header("Authorization"), "Bearer tok-1");
  EXPECT_EQ(reqs[1].Header("Authorization"), "Bearer tok-2");
  EXPECT_GE(reqs[1].Header("x-ms-version"), std::string("2017-11-09"));
}

TEST(BearerBlobClientTest, PersistentRejectionDoesNotLoop) {
  std::atomic<int> minted{0};
  StandIn idp([&](const Recorded&, httplib::Response& res) {
    ++minted;
    Json(res, 200, kTokenBody);
  });
  StandIn storage([](const Recorded&, httplib::Response& res) { res.status = 401; });
  SimulatedClock clock(false);
  auto cred =
      ClientSecretCredential::Create({"tenant-1", "app-1", idp.url()}, kSecret, Opts(clock));
  ASSERT_TRUE(cred.ok());
  BlobClientOptions bo;
  bo.endpoint = storage.url() + "/devstoreaccount1";
  bo.account = "devstoreaccount1";
  bo.container = "c";
  BlobClient client(bo, *cred, std::make_shared<HttpTransport>(), RealClock::Instance());
  Status s = client.CreateContainerIfMissing();
  EXPECT_EQ(s.kind(), ErrorKind::kAuth) << s.ToString();
  EXPECT_EQ(minted.load(), 2);  // the first token and one refresh
  EXPECT_EQ(storage.count(), 2u);
  EXPECT_EQ(s.message().find("tok-1"), std::string::npos);
  // Every request refused (a token from a tenant that is not the account's): the next ones keep
  // the token and are not resent, rather than ask Entra ID for a token each; 30 s on, one more.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client.CreateContainerIfMissing().kind(), ErrorKind::kAuth);
  }
  EXPECT_EQ(minted.load(), 2);
  EXPECT_EQ(storage.count(), 2u + 3u);
  clock.Advance(31s);
  EXPECT_EQ(client.CreateContainerIfMissing().kind(), ErrorKind::kAuth);
  EXPECT_EQ(minted.load(), 3);
  EXPECT_EQ(storage.count(), 2u + 3u + 2u);
}

// --- the chain ---

std::map<std::string, std::string> NoIdentityEnv() {
  // Every variable that could reach a real endpoint points at a closed loopback port.
  return {{"AZURE_POD_IDENTITY_AUTHORITY_HOST",
           "127.0.0.1:" + std::to_string(test::ClosedLoopbackPort())},
          {"PATH", "/nonexistent"}};
}

TEST(DefaultAzureCredentialTest, AllFailingGivesOneLinePerCredential) {
  SimulatedClock clock;
  std::shared_ptr<TokenCredential> out;
  std::vector<std::string> errors;
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(NoIdentityEnv()), Opts(clock), &out, &errors));
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_NE(errors[0].find("EnvironmentCredential: not configured"), std::string::npos);
  EXPECT_NE(errors[1].find("WorkloadIdentityCredential: not set"), std::string::npos);
  EXPECT_NE(errors[2].find("ManagedIdentityCredential: managed-identity(imds"), std::string::npos);
  EXPECT_NE(errors[3].find("AzureCliCredential: azure-cli: 'az' not found"), std::string::npos);
  for (const auto& e : errors) EXPECT_EQ(e.rfind("DefaultAzureCredential: ", 0), 0u) << e;

  auto prod = NoIdentityEnv();
  prod["AZURE_TOKEN_CREDENTIALS"] = "prod";
  errors.clear();
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(prod), Opts(clock), &out, &errors));
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[2].find("AzureCli"), std::string::npos);
  prod["AZURE_TOKEN_CREDENTIALS"] = "ManagedIdentityCredential";
  errors.clear();
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(prod), Opts(clock), &out, &errors));
  EXPECT_EQ(errors.size(), 1u);
}

// Named alone by AZURE_TOKEN_CREDENTIALS, or chosen by its object or resource id, managed
// identity is no probe: IMDS is retried as in the managed-identity mode (a 500, then a token).
// In the chain it is probed: an answer (the 500) shows IMDS is there, so it is retried too.
TEST(DefaultAzureCredentialTest, ManagedIdentityNamedAloneIsRetriedNotProbed) {
  std::atomic<int> n{0};
  StandIn imds([&](const Recorded&, httplib::Response& res) {
    if (n++ % 2 == 0) return Json(res, 500, R"({"error":"oops"})");
    Json(res, 200, R"({"access_token":"imds-tok","expires_in":3599})");
  });
  SimulatedClock clock;
  for (const auto& [name, value] :
       {std::pair{"AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential"},
        std::pair{kObjectIdVar, "obj-1"},
        std::pair{kResourceIdVar,
                  "/subscriptions/s/resourceGroups/g/providers/"
                  "Microsoft.ManagedIdentity/userAssignedIdentities/x"}}) {
    n = 0;
    auto env = NoIdentityEnv();
    env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds.authority();
    env[name] = value;
    std::shared_ptr<TokenCredential> out;
    std::vector<std::string> errors;
    EXPECT_TRUE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors))
        << name << ": " << testing::PrintToString(errors);
    EXPECT_EQ(n, 2) << name;
  }
  n = 0;
  auto env = NoIdentityEnv();
  env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds.authority();
  std::shared_ptr<TokenCredential> out;
  std::vector<std::string> errors;
  EXPECT_TRUE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors))
      << testing::PrintToString(errors);
  EXPECT_EQ(n, 2) << "a probe IMDS answered is retried";
  EXPECT_NE(out->Describe().find("managed-identity(imds"), std::string::npos);
}

TEST(DefaultAzureCredentialTest, FirstSourceThatYieldsATokenWinsInSdkOrder) {
  StandIn idp([](const Recorded& r, httplib::Response& res) {
    Json(res, 200,
         nlohmann::json{
             {"access_token", r.path.find("metadata") != std::string::npos ? "imds" : "app"},
             {"expires_in", 3600}}
             .dump());
  });
  SimulatedClock clock;
  nbu::test::TempDir dir;
  nbu::test::WriteFile(dir / "fed", "fed-jwt");
  auto env = NoIdentityEnv();
  env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = idp.authority();
  std::shared_ptr<TokenCredential> out;
  std::vector<std::string> errors;
  // Nothing but IMDS: managed identity.
  ASSERT_TRUE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  EXPECT_NE(out->Describe().find("managed-identity(imds"), std::string::npos);
  // Workload identity comes before managed identity.
  env["AZURE_TENANT_ID"] = "t";
  env["AZURE_CLIENT_ID"] = "c";
  env["AZURE_AUTHORITY_HOST"] = idp.url();
  env["AZURE_FEDERATED_TOKEN_FILE"] = dir / "fed";
  ASSERT_TRUE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  EXPECT_NE(out->Describe().find("workload-identity"), std::string::npos);
  // And the environment (client secret) before both.
  env["AZURE_CLIENT_SECRET"] = kSecret;
  ASSERT_TRUE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  EXPECT_NE(out->Describe().find("client-secret"), std::string::npos);
  EXPECT_TRUE(errors.empty());
  // The winner already holds its token: no second fetch.
  const size_t before = idp.count();
  EXPECT_EQ(AuthHeader(*out), "Bearer app");
  EXPECT_EQ(idp.count(), before);
  // A pinned mode uses only that source.
  ASSERT_TRUE(ResolveTokenCredential("managed-identity", MapEnv(env), Opts(clock), &out, &errors));
  EXPECT_NE(out->Describe().find("managed-identity"), std::string::npos);
}

// A secret the operator configured that Entra refuses (expired, say) ends the chain there: the
// service does not fall back to the node's managed identity (IMDS is never asked) or to a
// developer's az login, as the Azure SDKs do not.
TEST(DefaultAzureCredentialTest, AConfiguredCredentialThatFailsEndsTheChain) {
  StandIn entra([](const Recorded& r, httplib::Response& res) {
    if (r.path.find("metadata") != std::string::npos) {  // IMDS: would hand out the node's token
      Json(res, 200, kTokenBody);
    } else {
      Json(res, 401,
           nlohmann::json{{"error", "invalid_client"}, {"error_description", "AADSTS7000222"}}
               .dump());
    }
  });
  SimulatedClock clock;
  auto env = NoIdentityEnv();
  env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = entra.authority();
  env["AZURE_TENANT_ID"] = "t";
  env["AZURE_CLIENT_ID"] = "c";
  env["AZURE_CLIENT_SECRET"] = kSecret;
  env["AZURE_AUTHORITY_HOST"] = entra.url();
  std::shared_ptr<TokenCredential> out;
  std::vector<std::string> errors;
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("EnvironmentCredential: "), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("invalid_client"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("the chain stops here"), std::string::npos) << errors[0];
  EXPECT_EQ(errors[0].find(kSecret), std::string::npos) << errors[0];
  // A certificate named but missing (its secret volume not mounted) ends it too.
  env.erase("AZURE_CLIENT_SECRET");
  env["AZURE_CLIENT_CERTIFICATE_PATH"] = "/nonexistent/cert.pem";
  errors.clear();
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("EnvironmentCredential: "), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("the chain stops here"), std::string::npos) << errors[0];
  // So does a secret whose tenant id is misspelt, rather than fall through to the node's managed
  // identity; and a federated token file without its client id.
  env.erase("AZURE_CLIENT_CERTIFICATE_PATH");
  env.erase("AZURE_TENANT_ID");
  env["AZURE_TENANT"] = "t";
  env["AZURE_CLIENT_SECRET"] = kSecret;
  errors.clear();
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("EnvironmentCredential: not set: AZURE_TENANT_ID"), std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("the chain stops here"), std::string::npos) << errors[0];
  env.erase("AZURE_CLIENT_SECRET");
  env.erase("AZURE_CLIENT_ID");
  env["AZURE_TENANT_ID"] = "t";
  env["AZURE_FEDERATED_TOKEN_FILE"] = "/nonexistent/token";
  errors.clear();
  EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_NE(errors[1].find("WorkloadIdentityCredential: not set: AZURE_CLIENT_ID"),
            std::string::npos)
      << errors[1];
  EXPECT_NE(errors[1].find("the chain stops here"), std::string::npos) << errors[1];
  // Only AZURE_CLIENT_ID (a user-assigned managed identity's) configures neither: the chain
  // goes on to managed identity.
  errors.clear();
  auto user_assigned = NoIdentityEnv();
  user_assigned["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = entra.authority();
  user_assigned["AZURE_CLIENT_ID"] = "c";
  ASSERT_TRUE(ResolveTokenCredential("auto", MapEnv(user_assigned), Opts(clock), &out, &errors));
  EXPECT_NE(out->Describe().find("managed-identity"), std::string::npos);
  size_t imds = 0;
  for (const auto& r : entra.requests()) {
    if (r.path.find("metadata") != std::string::npos) ++imds;
  }
  EXPECT_EQ(imds, 1u) << "IMDS asked before the last case";
}

// A managed identity chosen by its object or resource id (variables for it alone) that gives no
// token ends the chain too: a developer's az login, which would answer, is not asked.
TEST(DefaultAzureCredentialTest, AManagedIdentityChosenByItsIdThatFailsEndsTheChain) {
  nbu::test::TempDir dir;
  test::WriteScript(dir / "bin/az",
                    "echo '{\"accessToken\":\"cli-tok\",\"expires_on\":4102444800}'\n");
  SimulatedClock clock;
  auto env = NoIdentityEnv();  // IMDS: a closed port
  env["PATH"] = dir / "bin" + ":/usr/bin:/bin";
  std::shared_ptr<TokenCredential> out;
  std::vector<std::string> errors;
  ASSERT_TRUE(ResolveTokenCredential("auto", MapEnv(env), Opts(clock), &out, &errors));
  EXPECT_NE(out->Describe().find("azure-cli"), std::string::npos) << "no identity chosen";
  for (const char* var : {kObjectIdVar, kResourceIdVar}) {
    auto chosen = env;
    chosen[var] = "00000000-0000-0000-0000-000000000001";
    errors.clear();
    EXPECT_FALSE(ResolveTokenCredential("auto", MapEnv(chosen), Opts(clock), &out, &errors));
    ASSERT_EQ(errors.size(), 3u) << testing::PrintToString(errors);
    EXPECT_NE(errors[2].find("ManagedIdentityCredential: "), std::string::npos) << errors[2];
    EXPECT_NE(errors[2].find("the chain stops here"), std::string::npos) << errors[2];
  }
}

// --- ResolveStorageTarget ---

TEST(StorageTargetTokenTest, ExplicitSecretsNeverTouchTokenEndpoints) {
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  core::EnvMap env = {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", idp.authority()},
                      {"IDENTITY_ENDPOINT", idp.url() + "/msi"},
                      {"IDENTITY_HEADER", "h"},
                      {"AZURE_TENANT_ID", "t"},
                      {"AZURE_CLIENT_ID", "c"},
                      {"AZURE_CLIENT_SECRET", kSecret},
                      {"AZURE_AUTHORITY_HOST", idp.url()},
                      {"PATH", "/nonexistent"}};
  core::Config c;
  c.azure_connection_string =
      "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" +
      Base64Encode("key") + ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
  SimulatedClock clock;
  server::StorageTarget target;
  std::vector<std::string> errors;
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  c = core::Config{};
  c.azure_account_name = "acct";
  c.azure_account_key = Base64Encode("key");
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  c = core::Config{};
  c.azure_account_url = "https://acct.blob.core.windows.net";
  c.azure_sas_token = "sv=2021-06-08&sig=abc";
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(idp.count(), 0u);
  EXPECT_TRUE(errors.empty());
}

// Resolves `c` with no identity in the environment (the metadata endpoint a closed loopback
// port, should a case fall to the token chain): "" when it resolves, else its one error line
// ("?" for more than one). No line may hold the secret c2VjcmV0 the tests put in their values.
std::string ResolveError(const core::Config& c) {
  SimulatedClock clock;
  server::StorageTarget target;
  core::EnvMap env = NoIdentityEnv();
  std::vector<std::string> errors;
  const bool ok = server::ResolveStorageTarget(c, clock, &target, &errors, &env);
  EXPECT_EQ(ok, errors.empty());
  for (const auto& e : errors) EXPECT_EQ(e.find("c2VjcmV0"), std::string::npos) << e;
  return ok ? std::string() : errors.size() == 1 ? errors[0] : "?";
}

// A Shared Key signs with the account's name: an Azure blob host of another account would
// refuse every request (403) for ever, so start-up says so. Other hosts (an emulator, a custom
// domain) may carry any name, and a SAS signs with no name.
TEST(StorageTargetTokenTest, AnAzureBlobHostOfAnotherAccountStopsStartup) {
  const std::string key = Base64Encode("c2VjcmV0");
  core::Config c;
  c.azure_auth = "shared-key";
  c.azure_account_name = "acct1";
  c.azure_account_key = key;
  for (const char* url :
       {"https://acct1.blob.core.windows.net", "https://ACCT1.blob.core.windows.net:443/",
        "https://acct1.privatelink.blob.core.windows.net",
        "https://acct1-secondary.blob.core.windows.net", "https://acct1.z12.blob.storage.azure.net",
        "http://127.0.0.1:10000/devstoreaccount1", "https://files.example.com",
        "https://[::1]:10000/acct2"}) {
    c.azure_account_url = url;
    EXPECT_EQ(ResolveError(c), "") << url;
  }
  for (const char* url :
       {"https://acct2.blob.core.windows.net/", "https://acct2.blob.core.chinacloudapi.cn",
        "https://acct2.privatelink.blob.core.usgovcloudapi.net"}) {
    c.azure_account_url = url;
    EXPECT_EQ(ResolveError(c),
              "APP_AZURE_ACCOUNT_NAME, APP_AZURE_ACCOUNT_URL: the blob host is account "
              "\"acct2\"'s, while the account name that signs is \"acct1\": storage would refuse "
              "every request (403)")
        << url;
  }
  c = core::Config{};
  c.azure_connection_string =
      "AccountName=acct1;AccountKey=" + key + ";BlobEndpoint=https://acct2.blob.core.windows.net";
  EXPECT_EQ(ResolveError(c).rfind("APP_AZURE_CONNECTION_STRING: the blob host is account", 0), 0u);
  c.azure_auth = "connection-string";
  c.azure_account_url = "https://acct3.blob.core.windows.net";
  EXPECT_EQ(ResolveError(c).rfind(
                "APP_AZURE_CONNECTION_STRING, APP_AZURE_ACCOUNT_URL: the blob host is account "
                "\"acct3\"'s",
                0),
            0u);
  c.azure_account_url = "https://acct1.blob.core.windows.net";
  EXPECT_EQ(ResolveError(c), "");
  c.azure_connection_string =
      "AccountName=acct1;SharedAccessSignature=sv=1&sig=c2VjcmV0;BlobEndpoint=https://"
      "acct2.blob.core.windows.net";
  c.azure_account_url.clear();
  EXPECT_EQ(ResolveError(c), "") << "a SAS is not signed with the name";
}

// A SAS travels in every request's URL: like a bearer token it goes over https, or plain http
// only to loopback (Azurite), whether given alone or in a connection string. Shared Key, which
// sends a signature only, may use http (docker-compose's http://azurite).
TEST(StorageTargetTokenTest, ASasIsNeverSentOverPlainHttpToAnotherHost) {
  const auto resolve = ResolveError;
  core::Config c;
  c.azure_account_url = "http://acct.blob.core.windows.net";
  c.azure_sas_token = "sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(
      resolve(c).rfind("APP_AZURE_ACCOUNT_URL: refusing http://acct.blob.core.windows.net", 0), 0u)
      << resolve(c);
  c.azure_account_url = "http://127.0.0.1:10000/devstoreaccount1";
  EXPECT_EQ(resolve(c), "");
  c = core::Config{};
  c.azure_connection_string =
      "BlobEndpoint=http://storage.example.com/"
      "acct;SharedAccessSignature=sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(resolve(c).rfind("APP_AZURE_CONNECTION_STRING: the blob endpoint: refusing", 0), 0u)
      << resolve(c);
  c.azure_connection_string =
      "BlobEndpoint=https://storage.example.com/"
      "acct;SharedAccessSignature=sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(resolve(c), "");
  c.azure_connection_string =
      "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=" + Base64Encode("key") +
      ";BlobEndpoint=http://azurite:10000/acct;";
  EXPECT_EQ(resolve(c), "");
}

// A connection string beside an account key or a SAS (the Compose stack's default string for its
// Azurite, and a key meant for Azure) is two credentials: in auto mode start-up stops and names
// the other one; APP_AZURE_AUTH chooses.
TEST(StorageTargetTokenTest, AConnectionStringBesideAnotherCredentialStopsStartupInAutoMode) {
  core::Config c;
  c.azure_connection_string =
      "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" +
      Base64Encode("key") + ";BlobEndpoint=http://azurite:10000/devstoreaccount1;";
  c.azure_account_name = "acct";
  c.azure_account_key = Base64Encode("c2VjcmV0");
  EXPECT_EQ(ResolveError(c),
            "APP_AZURE_ACCOUNT_KEY: set beside APP_AZURE_CONNECTION_STRING, so which is meant "
            "cannot be told: unset one, or choose the mode with APP_AZURE_AUTH");
  c.azure_auth = "shared-key";
  EXPECT_EQ(ResolveError(c), "");
  c = core::Config{};
  c.azure_connection_string =
      "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" +
      Base64Encode("key") + ";BlobEndpoint=http://azurite:10000/devstoreaccount1;";
  c.azure_sas_token = "sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(ResolveError(c).rfind("APP_AZURE_SAS_TOKEN: set beside", 0), 0u) << ResolveError(c);
  c.azure_auth = "sas";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  EXPECT_EQ(ResolveError(c), "");
  // An account URL meant for tokens beside the default string: its key would go to Azure.
  c.azure_auth = "auto";
  c.azure_sas_token.clear();
  EXPECT_EQ(ResolveError(c).rfind("APP_AZURE_ACCOUNT_URL: set beside", 0), 0u) << ResolveError(c);
}

// An account key beside a SAS is two credentials as well: in auto mode shared key used to win
// silently. Start-up stops with one line naming neither value; APP_AZURE_AUTH chooses. A
// connection string holding both is refused the same way.
TEST(StorageTargetTokenTest, AKeyBesideASasStopsStartupInAutoMode) {
  core::Config c;
  c.azure_account_url = "https://acct.blob.core.windows.net";
  c.azure_account_name = "acct";
  c.azure_account_key = Base64Encode("c2VjcmV0");
  c.azure_sas_token = "sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(ResolveError(c),
            "APP_AZURE_SAS_TOKEN: set beside APP_AZURE_ACCOUNT_KEY, so which is meant cannot be "
            "told: unset one, or choose the mode with APP_AZURE_AUTH");
  c.azure_auth = "shared-key";
  EXPECT_EQ(ResolveError(c), "");
  c.azure_auth = "sas";
  EXPECT_EQ(ResolveError(c), "");
  c = core::Config{};
  c.azure_connection_string = "AccountName=acct;AccountKey=" + Base64Encode("c2VjcmV0") +
                              ";SharedAccessSignature=sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(ResolveError(c),
            "APP_AZURE_CONNECTION_STRING: connection string: both AccountKey and "
            "SharedAccessSignature are given, so which is meant cannot be told: remove one");
}

// An account name whose key came through empty (a Secret key that did not mount) is a shared-key
// setup gone wrong: in auto mode start-up says so, and no token endpoint is asked (the token
// chain would take a managed identity nobody chose, or fail without naming the key).
TEST(StorageTargetTokenTest, AnAccountNameWithoutItsKeyStopsStartupInAutoMode) {
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  core::EnvMap env = {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", idp.authority()},
                      {"PATH", "/nonexistent"}};
  core::Config c;
  c.azure_account_name = "acct";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  SimulatedClock clock;
  server::StorageTarget target;
  std::vector<std::string> errors;
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(errors, std::vector<std::string>{
                        "APP_AZURE_ACCOUNT_KEY: required with APP_AZURE_ACCOUNT_NAME (empty counts "
                        "as unset); for token credentials unset the name, or choose the mode with "
                        "APP_AZURE_AUTH"});
  EXPECT_EQ(idp.count(), 0u);
}

// A SAS or a connection string with several problems shows them all at the first start, one line
// each, rather than one per restart.
TEST(StorageTargetTokenTest, EveryProblemOfASasOrAConnectionStringIsALine) {
  const auto errors_of = [](const core::Config& c) {
    SimulatedClock clock;
    server::StorageTarget target;
    core::EnvMap env = NoIdentityEnv();
    std::vector<std::string> errors;
    EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
    for (const auto& e : errors) EXPECT_EQ(e.find("c2VjcmV0"), std::string::npos) << e;
    return errors;
  };
  core::Config c;
  c.azure_auth = "sas";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  c.azure_sas_token = "sv=2022-11-02&sp=c&srt=s&ss=q&se=2020-01-01&sig=c2VjcmV0";
  const auto sas = errors_of(c);
  EXPECT_EQ(sas.size(), 5u) << testing::PrintToString(sas);
  for (const auto& e : sas) EXPECT_EQ(e.rfind("APP_AZURE_SAS_TOKEN: ", 0), 0u) << e;
  c = core::Config{};
  c.azure_connection_string = "AccountName=my_acct;AccountKey=c2VjcmV0*";
  EXPECT_EQ(errors_of(c),
            (std::vector<std::string>{
                "APP_AZURE_CONNECTION_STRING: connection string: AccountName makes the blob "
                "host's name, so it must be letters, digits and inner hyphens (at most 63)",
                "APP_AZURE_CONNECTION_STRING: connection string: AccountKey is not valid base64"}));
}

// Mistakes that would fail every request (a SAS without its signature, a pasted SAS URL, an
// unreadable CA bundle) stop start-up with one line, instead of a service that waits for ever
// for storage it can never reach. No line echoes the secret.
TEST(StorageTargetTokenTest, SasAndCaFileMistakesStopStartup) {
  const auto resolve = ResolveError;
  core::Config c;
  c.azure_account_url = "https://acct.blob.core.windows.net";
  c.azure_sas_token = "?sv=2021-06-08&sp=rwl&se=2030-01-01";
  EXPECT_EQ(resolve(c).rfind("APP_AZURE_SAS_TOKEN: has no signature", 0), 0u) << resolve(c);
  c.azure_sas_token = "https://acct.blob.core.windows.net/ingest?sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(resolve(c).rfind("APP_AZURE_SAS_TOKEN: is a URL", 0), 0u) << resolve(c);
  c.azure_sas_token = "sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(resolve(c), "");
  c.azure_ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(resolve(c).rfind("APP_AZURE_CA_FILE: cannot read /nonexistent/ca.pem", 0), 0u)
      << resolve(c);
  // Readable, and no bundle curl can load: a directory (the CA directory for the bundle), an
  // empty file, a certificate in DER.
  nbu::test::TempDir dir;
  nbu::test::WriteFile(dir / "empty.pem", "");
  nbu::test::WriteFile(dir / "der.crt", std::string("\x30\x82\x01\x0a\x02\x01\x00", 7));
  for (const std::string& bad : {dir.path(), dir / "empty.pem", dir / "der.crt"}) {
    c.azure_ca_file = bad;
    EXPECT_EQ(resolve(c).rfind("APP_AZURE_CA_FILE: " + bad, 0), 0u) << resolve(c);
  }
  c.azure_ca_file = "/etc/ssl/certs/ca-certificates.crt";  // Debian's bundle (ca-certificates)
  EXPECT_EQ(resolve(c), "");
  // Without it the transports take SSL_CERT_FILE's: judged the same, and named.
  const auto with_cert_file = [](const core::Config& config, const std::string& cert_file) {
    SimulatedClock clock;
    server::StorageTarget target;
    core::EnvMap env = NoIdentityEnv();
    env["SSL_CERT_FILE"] = cert_file;
    std::vector<std::string> errors;
    const bool ok = server::ResolveStorageTarget(config, clock, &target, &errors, &env);
    EXPECT_EQ(ok, errors.empty());
    return errors;
  };
  c.azure_ca_file.clear();
  for (const std::string& bad : {dir.path(), dir / "empty.pem", std::string("/nonexistent.pem")}) {
    const auto errors = with_cert_file(c, bad);
    ASSERT_EQ(errors.size(), 1u) << bad;
    EXPECT_EQ(errors[0].rfind("SSL_CERT_FILE: ", 0), 0u) << errors[0];
    EXPECT_NE(errors[0].find(bad), std::string::npos) << errors[0];
  }
  // ... but only where a request would read it: an inherited one beside a plain-http emulator is
  // nobody's business, whichever way the endpoint is given.
  const std::string key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq==";
  const std::string azurite =
      "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
      "AccountKey=" +
      key + ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1";
  core::Config http;
  http.azure_connection_string = azurite;
  EXPECT_EQ(with_cert_file(http, "/nonexistent.pem"), std::vector<std::string>{});
  http.azure_connection_string = "AccountName=devstoreaccount1;AccountKey=" + key +
                                 ";BlobEndpoint=HTTP://127.0.0.1:10000/devstoreaccount1";
  EXPECT_EQ(with_cert_file(http, "/nonexistent.pem"), std::vector<std::string>{});
  http.azure_auth = "connection-string";  // the URL replaces the string's endpoint
  http.azure_account_url = "https://127.0.0.1:10000/devstoreaccount1";
  EXPECT_EQ(with_cert_file(http, "/nonexistent.pem").size(), 1u);
  http = core::Config{};
  http.azure_account_name = "devstoreaccount1";
  http.azure_account_key = key;
  http.azure_account_url = "http://127.0.0.1:10000/devstoreaccount1";
  EXPECT_EQ(with_cert_file(http, "/nonexistent.pem"), std::vector<std::string>{});
  // A key with no URL goes to Azure over https, whatever a connection string beside it says.
  http.azure_auth = "shared-key";
  http.azure_account_url.clear();
  http.azure_connection_string = azurite;
  EXPECT_EQ(with_cert_file(http, "/nonexistent.pem").size(), 1u);
}

// One start names every problem the checks without network find, not just the first: the CA
// file does not hide the credential's mistakes, nor the SAS URL's the SAS token's. A variable
// already refused (by ParseConfig) is not judged again, and no token is fetched once start-up
// is bound to fail.
TEST(StorageTargetTokenTest, EveryProblemWithoutNetworkIsReportedAtOnce) {
  const auto resolve = [](const core::Config& c, std::vector<std::string> errors = {}) {
    SimulatedClock clock;
    server::StorageTarget target;
    core::EnvMap env;
    const size_t before = errors.size();
    EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
    std::vector<std::string> vars;
    for (size_t i = before; i < errors.size(); ++i) {
      EXPECT_EQ(errors[i].find("c2VjcmV0"), std::string::npos) << errors[i];
      vars.push_back(errors[i].substr(0, errors[i].find(':')));
    }
    return vars;
  };
  using Vars = std::vector<std::string>;
  core::Config c;
  c.azure_ca_file = "/nonexistent/ca.pem";
  c.azure_account_url = "http://acct.blob.core.windows.net";
  c.azure_sas_token = "sv=2021-06-08&sp=rwl&se=2030-01-01";  // no sig=
  EXPECT_EQ(resolve(c),
            (Vars{"APP_AZURE_CA_FILE", "APP_AZURE_SAS_TOKEN", "APP_AZURE_ACCOUNT_URL"}));
  c.azure_auth = "sas";
  c.azure_sas_token.clear();
  c.azure_account_url.clear();
  EXPECT_EQ(resolve(c),
            (Vars{"APP_AZURE_CA_FILE", "APP_AZURE_SAS_TOKEN", "APP_AZURE_ACCOUNT_URL"}));
  c = core::Config{};
  c.azure_ca_file = "/nonexistent/ca.pem";
  c.azure_connection_string = "AccountName=a;AccountKey=c2VjcmV0!!not-base64";
  EXPECT_EQ(resolve(c), (Vars{"APP_AZURE_CA_FILE", "APP_AZURE_CONNECTION_STRING"}));
  c.azure_connection_string =
      "BlobEndpoint=http://storage.example.com/acct;SharedAccessSignature=sv=1&sig=c2VjcmV0";
  EXPECT_EQ(resolve(c), (Vars{"APP_AZURE_CA_FILE", "APP_AZURE_CONNECTION_STRING"}));
  // A chosen account URL replaces the string's endpoint: its AccountName only signs, as in
  // shared-key mode. Beside the string in auto mode the URL is refused, and the name, which
  // would then make the host, is judged too.
  c = core::Config{};
  c.azure_connection_string = "AccountName=acct_1;AccountKey=" + Base64Encode("c2VjcmV0");
  EXPECT_EQ(resolve(c), Vars{"APP_AZURE_CONNECTION_STRING"});
  c.azure_account_url = "http://127.0.0.1:10000/acct_1";
  EXPECT_EQ(resolve(c), (Vars{"APP_AZURE_ACCOUNT_URL", "APP_AZURE_CONNECTION_STRING"}));
  c.azure_auth = "connection-string";
  EXPECT_EQ(ResolveError(c), "");
  c.azure_connection_string = "SharedAccessSignature=sv=1&sig=c2VjcmV0";
  EXPECT_EQ(ResolveError(c), "");
  c.azure_account_url = "http://acct.blob.core.windows.net";
  EXPECT_EQ(resolve(c), Vars{"APP_AZURE_CONNECTION_STRING"}) << "a SAS over plain http";
  // In auto mode the string's own endpoint is used, and judged, whatever became of the URL.
  c.azure_auth = "auto";
  c.azure_connection_string =
      "BlobEndpoint=http://storage.example.com/acct;SharedAccessSignature=sv=1&sig=c2VjcmV0";
  c.azure_account_url = "http://me:c2VjcmV0@acct.example.com";
  EXPECT_EQ(resolve(c, {"APP_AZURE_ACCOUNT_URL: must not hold a user name or password"}),
            Vars{"APP_AZURE_CONNECTION_STRING"})
      << "a SAS over plain http in the string";
  c = core::Config{};
  c.azure_ca_file = "/nonexistent/ca.pem";
  c.azure_auth = "shared-key";
  c.azure_account_key = "c2VjcmV0!!not-base64";
  EXPECT_EQ(resolve(c),
            (Vars{"APP_AZURE_CA_FILE", "APP_AZURE_ACCOUNT_NAME", "APP_AZURE_ACCOUNT_KEY"}));
  // Shared Key without an account URL makes the blob host's name from the account name; beside
  // a URL the name only signs (an emulator's may be any), and in the other modes it is unused.
  c = core::Config{};
  c.azure_auth = "shared-key";
  c.azure_account_name = "acct_1";
  c.azure_account_key = Base64Encode("c2VjcmV0");
  EXPECT_EQ(resolve(c), Vars{"APP_AZURE_ACCOUNT_NAME"});
  c.azure_account_key.clear();
  EXPECT_EQ(resolve(c), (Vars{"APP_AZURE_ACCOUNT_NAME", "APP_AZURE_ACCOUNT_KEY"}));
  c.azure_account_key = Base64Encode("c2VjcmV0");
  c.azure_account_name = "test-account";
  EXPECT_EQ(ResolveError(c), "");
  c.azure_account_name = "acct_1";
  c.azure_account_url = "http://127.0.0.1:10000/acct_1";
  EXPECT_EQ(ResolveError(c), "");
  c = core::Config{};
  c.azure_account_name = "acct_1";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  c.azure_sas_token = "sv=2021-06-08&sig=abc";
  EXPECT_EQ(ResolveError(c), "");
  // Refused already: not again, and a password in the URL is not printed by a second message.
  c = core::Config{};
  c.azure_auth = "magic";
  EXPECT_EQ(resolve(c, {"APP_AZURE_AUTH: must be one of ..."}), Vars{});
  c = core::Config{};
  c.azure_account_url = "http://me:c2VjcmV0@acct.example.com";
  c.azure_sas_token = "sv=2021-06-08&sig=c2VjcmV0";
  EXPECT_EQ(resolve(c, {"APP_AZURE_ACCOUNT_URL: must not hold a user name or password"}), Vars{});
  c.azure_sas_token.clear();
  c.azure_account_name = "acct";
  c.azure_account_key = Base64Encode("key");
  EXPECT_EQ(resolve(c, {"APP_AZURE_ACCOUNT_URL: must not hold a user name or password"}), Vars{});
  c.azure_account_key.clear();
  c.azure_auth = "environment";  // none of its variables set: told beside the URL's problem
  EXPECT_EQ(resolve(c, {"APP_AZURE_ACCOUNT_URL: must not hold a user name or password"}),
            Vars{"APP_AZURE_AUTH=environment"});
  // A token mode makes no request when start-up fails anyway.
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  core::EnvMap env = {{"AZURE_TENANT_ID", "t"},
                      {"AZURE_CLIENT_ID", "c"},
                      {"AZURE_CLIENT_SECRET", kSecret},
                      {"AZURE_AUTHORITY_HOST", idp.url()},
                      {"PATH", "/nonexistent"}};
  c = core::Config{};
  c.azure_auth = "environment";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  SimulatedClock clock;
  server::StorageTarget target;
  std::vector<std::string> errors = {"APP_POLL_INTERVAL_S: must be a number, got \"soon\""};
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(errors.size(), 1u);
  c.azure_ca_file = "/nonexistent/ca.pem";
  errors.clear();
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(errors.size(), 1u);
  EXPECT_EQ(idp.count(), 0u);
  c.azure_ca_file.clear();
  errors.clear();
  EXPECT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(idp.count(), 1u) << "the stand-in answers";
  // What the credential's own variables get wrong is told beside the other problems, still
  // without a request: a source missing a variable, an unknown AZURE_TOKEN_CREDENTIALS, the
  // account URL missing too.
  const std::vector<std::string> other = {"APP_POLL_INTERVAL_S: must be a number, got \"soon\""};
  env.erase("AZURE_TENANT_ID");
  errors = other;
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[1],
            "APP_AZURE_AUTH=environment: EnvironmentCredential: not set: AZURE_TENANT_ID");
  c.azure_auth = "auto";  // configured by its secret: the chain would end there
  errors = other;
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[1], "DefaultAzureCredential: EnvironmentCredential: not set: AZURE_TENANT_ID");
  env["AZURE_TENANT_ID"] = "t";
  env["AZURE_TOKEN_CREDENTIALS"] = "bogus";
  c.azure_account_url.clear();
  errors = other;
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  ASSERT_EQ(errors.size(), 3u) << testing::PrintToString(errors);
  EXPECT_EQ(errors[1].rfind("APP_AZURE_ACCOUNT_URL: required", 0), 0u) << errors[1];
  EXPECT_EQ(errors[2].rfind("AZURE_TOKEN_CREDENTIALS: must be prod, dev,", 0), 0u) << errors[2];
  env["AZURE_TOKEN_CREDENTIALS"] = "prod";  // and nothing else wrong with the credential
  errors = other;
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(errors.size(), 2u) << testing::PrintToString(errors);
  EXPECT_EQ(idp.count(), 1u) << "a request made while start-up fails anyway";
}

// A blank APP_ variable is unset for the token sources too: a blank object id beside
// AZURE_CLIENT_ID (a template's empty line) is not a second identity chosen. The SDKs' AZURE_*
// variables go as given (a secret may hold spaces).
TEST(StorageTargetTokenTest, BlankTokenVariablesCountAsUnset) {
  StandIn imds([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  core::EnvMap env = {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.authority()},
                      {"AZURE_CLIENT_ID", "c1"},
                      {"APP_AZURE_MANAGED_IDENTITY_OBJECT_ID", " "},
                      {"APP_AZURE_MANAGED_IDENTITY_RESOURCE_ID", "\t"},
                      {"PATH", "/nonexistent"}};
  core::Config c;
  c.azure_auth = "managed-identity";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  SimulatedClock clock;
  server::StorageTarget target;
  std::vector<std::string> errors;
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env))
      << testing::PrintToString(errors);
  ASSERT_EQ(imds.count(), 1u);
  const auto query = imds.requests()[0].query;
  EXPECT_EQ(query.count("client_id") != 0 ? query.at("client_id") : "", "c1");
  EXPECT_EQ(query.count("object_id") + query.count("msi_res_id"), 0u);
  // A blank client secret is a configured one (sent as given), not a reason to pass on to the
  // node's managed identity.
  env["AZURE_TENANT_ID"] = "t";
  env["AZURE_CLIENT_SECRET"] = " ";
  env["AZURE_AUTHORITY_HOST"] = imds.url();
  c.azure_auth = "auto";
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env))
      << testing::PrintToString(errors);
  EXPECT_NE(target.credential->Describe().find("client-secret"), std::string::npos)
      << target.credential->Describe();
  EXPECT_EQ(imds.requests().back().form.at("client_secret"), " ");
}

TEST(StorageTargetTokenTest, TokenModesNeedAnAccountUrlAndUseTheChain) {
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); });
  core::EnvMap env = {{"AZURE_TENANT_ID", "t"},
                      {"AZURE_CLIENT_ID", "c"},
                      {"AZURE_CLIENT_SECRET", kSecret},
                      {"AZURE_AUTHORITY_HOST", idp.url()},
                      {"AZURE_POD_IDENTITY_AUTHORITY_HOST", "127.0.0.1:1"},
                      {"PATH", "/nonexistent"}};
  core::Config c;
  SimulatedClock clock;
  server::StorageTarget target;
  std::vector<std::string> errors;
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("APP_AZURE_ACCOUNT_URL: required", 0), 0u) << errors[0];
  EXPECT_EQ(idp.count(), 0u);
  errors.clear();
  c.azure_account_url = "http://acct.example.com";
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(errors.size(), 1u);
  errors.clear();
  c.azure_account_url = "https://acct.blob.core.windows.net/";
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  EXPECT_EQ(target.endpoint, "https://acct.blob.core.windows.net");
  EXPECT_EQ(target.account, "");  // tokens sign nothing with it
  EXPECT_NE(target.credential->Describe().find("client-secret"), std::string::npos);
  EXPECT_EQ(idp.count(), 1u);
  c.azure_auth = "azure-cli";
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("APP_AZURE_AUTH=azure-cli: AzureCliCredential:", 0), 0u) << errors[0];
  for (const auto& e : errors) EXPECT_EQ(e.find(kSecret), std::string::npos);
}

// Token requests trust the same private CA as storage requests (APP_AZURE_CA_FILE): an identity
// endpoint behind a private CA (a TLS-inspecting proxy, a sovereign cloud's test authority).
TEST(StorageTargetTokenTest, TokenRequestsUseTheConfiguredCaFile) {
  nbu::test::TempDir dir;
  ASSERT_TRUE(test::MakeSelfSignedCert(dir.path()));
  StandIn idp([](const Recorded&, httplib::Response& res) { Json(res, 200, kTokenBody); },
              dir.path());
  ASSERT_EQ(idp.url().rfind("https://", 0), 0u);
  core::EnvMap env = {{"AZURE_TENANT_ID", "t"},
                      {"AZURE_CLIENT_ID", "c"},
                      {"AZURE_CLIENT_SECRET", kSecret},
                      {"AZURE_AUTHORITY_HOST", idp.url()},
                      {"PATH", "/nonexistent"}};
  core::Config c;
  c.azure_auth = "environment";
  c.azure_account_url = "https://acct.blob.core.windows.net";
  SimulatedClock clock;
  server::StorageTarget target;
  std::vector<std::string> errors;
  // Without the CA the self-signed endpoint is refused: one line, no secret.
  EXPECT_FALSE(server::ResolveStorageTarget(c, clock, &target, &errors, &env));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].find(kSecret), std::string::npos) << errors[0];
  EXPECT_EQ(idp.count(), 0u) << "the TLS handshake fails before any request";
  errors.clear();
  c.azure_ca_file = dir / "cert.pem";
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env))
      << (errors.empty() ? "" : errors[0]);
  EXPECT_EQ(idp.count(), 1u);
  // SSL_CERT_FILE is the fallback, as for storage requests.
  c.azure_ca_file.clear();
  env["SSL_CERT_FILE"] = dir / "cert.pem";
  EXPECT_EQ(server::StorageTransportOptions(c, MapEnv(env)).ca_file, dir / "cert.pem");
  ASSERT_TRUE(server::ResolveStorageTarget(c, clock, &target, &errors, &env))
      << (errors.empty() ? "" : errors[0]);
  EXPECT_EQ(idp.count(), 2u);
}

}  // namespace
}  // namespace nbu::azure
