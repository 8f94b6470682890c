// The transport and proxies: curl's error text as it reaches Status messages (logs, /v1/status)
// carries no proxy credentials, and this host's own addresses are never sent through a proxy.
#include "azure/http.h"

#include "azure/url.h"
#include "support/fault_proxy.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>

namespace nbu::azure {
namespace {

TEST(WithoutUserInfoTest, RemovesTheUserInfoOfUrlsAndBarePairs) {
  EXPECT_EQ(WithoutUserInfo("Unsupported proxy scheme for 'foo://user:pw@127.0.0.1:1'"),
            "Unsupported proxy scheme for 'foo://REDACTED@127.0.0.1:1'");
  EXPECT_EQ(WithoutUserInfo("Unsupported proxy syntax in 'user:pw@[zz'"),
            "Unsupported proxy syntax in 'REDACTED@[zz'");
  // Quotes, '#', '?', '/' after the host and '@' in a password do not end it early.
  EXPECT_EQ(WithoutUserInfo("bad 'http://u:p'w#x?y@z@proxy:3128/a@b' here"),
            "bad 'http://REDACTED@proxy:3128/a@b' here");
  EXPECT_EQ(WithoutUserInfo("(user:secret@proxy)"), "(REDACTED@proxy)");
  EXPECT_EQ(WithoutUserInfo("a\tb  http://u:p@h:1\nnext"), "a\tb  http://REDACTED@h:1\nnext");
  // Nothing to remove: unchanged.
  for (const char* kept :
       {"", "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server",
        "http://host/path@x", "  ", "Could not resolve host: acct.blob.core.windows.net"}) {
    EXPECT_EQ(WithoutUserInfo(kept), kept);
  }
}

// Sets (or with nullopt unsets) an environment variable for one scope (libcurl reads the proxy
// from the environment).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A real libcurl error quoting a proxy that carries credentials: the proxy schemes and syntax
// here are refused before any connection is made (nothing is contacted, not even loopback). The
// URLs name a documentation address (TEST-NET-1, never contacted): loopback ones bypass the proxy.
TEST(WithoutUserInfoTest, CurlErrorsNeverCarryProxyCredentials) {
  GlobalHttpInit();
  HttpTransport transport;
  HttpRequest req;
  req.timeout = std::chrono::milliseconds(5000);
  // A machine's own proxy settings (a CI's no_proxy=127.0.0.1, a shell's https_proxy, which
  // curl prefers to HTTPS_PROXY, or all_proxy) would send these past the proxy under test, or
  // to one off loopback (ctest unsets them all; a direct run of this binary may not).
  const ScopedEnv unset[] = {{"no_proxy", std::nullopt},    {"NO_PROXY", std::nullopt},
                             {"https_proxy", std::nullopt}, {"all_proxy", std::nullopt},
                             {"ALL_PROXY", std::nullopt},   {"HTTP_PROXY", std::nullopt}};
  for (const auto& [var, url, proxy] :
       {std::tuple{"http_proxy", "http://192.0.2.1:9/c", "foo://user:pr0xy-s3cret@127.0.0.1:1"},
        std::tuple{"http_proxy", "http://192.0.2.1:9/c", "user:pr0xy-s3cret@[zz"},
        std::tuple{"HTTPS_PROXY", "https://192.0.2.1:9/c", "socks9://user:pr0xy-s3cret@[::1]:1"}}) {
    ScopedEnv env(var, proxy);
    req.url = url;
    Result<HttpResponse> r = transport.Send(req);
    ASSERT_FALSE(r.ok()) << proxy;
    const std::string& m = r.status().message();
    EXPECT_NE(m.find("proxy"), std::string::npos) << m << " (curl quoted no proxy)";
    EXPECT_NE(m.find("REDACTED@"), std::string::npos) << m;
    EXPECT_EQ(m.find("pr0xy-s3cret"), std::string::npos) << m;
    EXPECT_EQ(m.find("user:"), std::string::npos) << m;
  }
}

// libcurl takes a proxy from the environment for every request. Storage and Entra ID behind an
// egress proxy go through it; this host's own addresses (Azurite, a managed identity's endpoint
// with its secret header) never do, nor link-local ones (the instance metadata service), which
// no proxy can reach for us.
TEST(HttpTransportTest, ThisHostsAddressesBypassAProxyFromTheEnvironment) {
  GlobalHttpInit();
  // Neither forwards anything (their upstream port is never used): the proxy answers 502 itself,
  // the "storage" on loopback 201.
  test::FaultProxy proxy(
      1, [](const test::ProxyRequest&) { return test::FaultAction::Status(502, "FromTheProxy"); });
  test::FaultProxy storage(
      1, [](const test::ProxyRequest&) { return test::FaultAction::Status(201, ""); });
  const ScopedEnv unset[] = {{"no_proxy", std::nullopt},
                             {"NO_PROXY", std::nullopt},
                             {"all_proxy", std::nullopt},
                             {"ALL_PROXY", std::nullopt}};
  const ScopedEnv env("http_proxy", "http://127.0.0.1:" + std::to_string(proxy.port()));
  HttpTransport transport;
  HttpRequest req;
  req.timeout = std::chrono::milliseconds(5000);
  req.url = "http://127.0.0.1:" + std::to_string(storage.port()) + "/acct/c/local";
  Result<HttpResponse> local = transport.Send(req);
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ(local->status, 201);
  EXPECT_EQ(storage.Count("/acct/c/local"), 1u);
  EXPECT_EQ(proxy.Count(""), 0u);
  // A documentation address (TEST-NET-1) stands for storage elsewhere: asked of the proxy, which
  // answers itself.
  req.url = "http://192.0.2.1/acct/c/remote";
  Result<HttpResponse> remote = transport.Send(req);
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  EXPECT_EQ(remote->status, 502);
  EXPECT_EQ(proxy.Count("http://192.0.2.1/acct/c/remote"), 1u);
}

TEST(HttpTransportTest, HostLocalAuthorities) {
  for (const char* local :
       {"127.0.0.1:10000", "127.1.2.3", "localhost", "LocalHost:8080", "u:p@127.0.0.1", "[::1]:80",
        "169.254.169.254", "169.254.169.254:80", "[fe80::1]:8080", "[FEBF::2]", "169.254.1",
        "[fe80::1%25eth0]:80", "[::ffff:169.254.169.254]"}) {
    EXPECT_TRUE(IsHostLocalAuthority(local)) << local;
  }
  for (const char* remote :
       {"acct.blob.core.windows.net", "login.microsoftonline.com:443", "192.0.2.1", "10.0.0.1",
        "127.0.0.1.example.com", "localhost.example.com", "[::2]", "[fec0::1]", "[fe8::1]", "[fe80",
        "127.0.0.1@evil.example.com", "169.254.999.1", "[::ffff:192.0.2.1]", ""}) {
    EXPECT_FALSE(IsHostLocalAuthority(remote)) << remote;
  }
}

// Loopback as curl reads the URL's host: an IPv4 number in any of its forms, IPv4-mapped too.
// A name that only looks like an address (127.999.0.1) is looked up in DNS and may be anywhere:
// plain http to it would carry a SAS or a bearer token off the host.
TEST(HttpTransportTest, LoopbackAuthorities) {
  for (const char* loopback :
       {"127.0.0.1", "127.0.0.1:10000", "127.1", "127.1:80", "127.255.255.255", "0x7f.1",
        "2130706433", "[::1]", "[::ffff:127.0.0.1]:10000", "localhost:1", "u@127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackAuthority(loopback)) << loopback;
  }
  for (const char* other : {"127.999.0.1", "127.0.0.256", "127.0.0.1.example.com", "128.0.0.1",
                            "[::2]", "[::ffff:128.0.0.1]", "[127.0.0.1]", "localhost.",
                            "[localhost]", "169.254.169.254", "127.0.0.1 x", ""}) {
    EXPECT_FALSE(IsLoopbackAuthority(other)) << other;
  }
}

}  // namespace
}  // namespace nbu::azure
