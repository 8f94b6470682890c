// curl's error text as it reaches Status messages (logs, /v1/status): no proxy credentials.
#include "azure/http.h"

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
// here are refused before any connection is made (nothing is contacted, not even loopback).
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
       {std::tuple{"http_proxy", "http://127.0.0.1:9/c", "foo://user:pr0xy-s3cret@127.0.0.1:1"},
        std::tuple{"http_proxy", "http://127.0.0.1:9/c", "user:pr0xy-s3cret@[zz"},
        std::tuple{"HTTPS_PROXY", "https://127.0.0.1:9/c", "socks9://user:pr0xy-s3cret@[::1]:1"}}) {
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

}  // namespace
}  // namespace nbu::azure
