// BlobClient's request loop against a scripted local HTTP server (cpp-httplib on 127.0.0.1,
// port 0) and a simulated clock: retries, Retry-After, throttling, 401 re-authorization, error
// mapping and the headers curl actually puts on the wire.
#include "azure/blob_client.h"
#include "support/captured_log.h"
#include "support/process.h"
#include "util/crc64.h"
#include "util/crypto.h"

#include <fcntl.h>
#include <httplib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace nbu::azure {
namespace {

using namespace std::chrono_literals;

class CountingCredential : public Credential {
 public:
  Status Authorize(HttpRequest& req, const std::string&, bool) override {
    if (!fails.ok()) return fails;
    ++authorizations;
    req.SetHeader("Authorization", "Test " + std::to_string(authorizations.load()));
    return Status::Ok();
  }
  bool Invalidate() override {
    ++invalidations;
    return renews;
  }
  std::string Describe() const override { return "test"; }
  std::atomic<int> authorizations{0};
  std::atomic<int> invalidations{0};
  std::atomic<bool> renews{true};  // what Invalidate() answers: whether a resend may differ
  Status fails;                    // when not ok: no token to be had, for this reason
};

// A request's signature as storage quotes it back.
const std::string kSentSignature = "q0Fo8mZ7xQ3nT1vK2bR9cW4eY6uI5oP8aS7dF0gH1jk=";

class BlobClientRetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    server_.Put(R"(/acct/c/(.*))",
                [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    server_.Get(R"(/acct/c/(.*))",
                [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    server_.Delete(R"(/acct/c/(.*))", [this](const httplib::Request& req, httplib::Response& res) {
      Handle(req, res);
    });
    // Create Container, from a host whose clock is more than 15 minutes off.
    server_.Put("/acct/c", [this](const httplib::Request&, httplib::Response& res) {
      if (hang_create_) {  // held as a request to "hang" is
        std::unique_lock lock(hang_mu_);
        hung_ = true;
        hang_cv_.notify_all();
        hang_cv_.wait_for(lock, 10s, [&] { return released_; });
      }
      res.status = 403;
      res.set_header("x-ms-error-code", "AuthenticationFailed");
      res.set_content(AuthenticationFailedBody("Request date header too old: &apos;Thu, 02 May "
                                               "2024 09:40:00 GMT&apos;"),
                      "application/xml");
    });
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the listen loop runs would be lost (cpp-httplib 0.11 has no wait_until_ready).
    ASSERT_TRUE(nbu::test::WaitFor([&] { return server_.is_running(); }, 30s));
    options_.endpoint = "http://127.0.0.1:" + std::to_string(port_) + "/acct";
    options_.account = "acct";
    options_.container = "c";
    options_.retry.max_attempts = 4;
    options_.retry.base_delay = 100ms;
  }
  void TearDown() override {
    transport_.reset();  // closes pooled keep-alive connections so the server threads finish
    server_.stop();
    thread_.join();
  }

  // Azure's answer to a request whose credentials it refuses, with its reason.
  static std::string AuthenticationFailedBody(const std::string& detail) {
    return "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>"
           "<Message>Server failed to authenticate the request.\nRequestId:r\nTime:t</Message>"
           "<AuthenticationErrorDetail>" +
           detail + "</AuthenticationErrorDetail></Error>";
  }

  void Handle(const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] == "hang") {  // answers only once released (or after 10 s)
      std::unique_lock lock(hang_mu_);
      hung_ = true;
      hang_cv_.notify_all();
      hang_cv_.wait_for(lock, 10s, [&] { return released_; });
      res.status = 201;
      return;
    }
    if (req.matches[1] == "late-body") {  // headers after 1.5 s, the body 2 s after them
      std::this_thread::sleep_for(1500ms);
      res.status = 200;
      res.set_chunked_content_provider("application/octet-stream",
                                       [](size_t, httplib::DataSink& sink) {
                                         std::this_thread::sleep_for(2s);
                                         sink.write("payload", 7);
                                         sink.done();
                                         return true;
                                       });
      return;
    }
    if (req.matches[1] == "many-blocks") {  // 100,000 uncommitted blocks, the most a blob has
      res.status = 200;
      res.body =
          "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><CommittedBlocks />"
          "<UncommittedBlocks>";
      for (int i = 0; i < 100000; ++i) {
        char id[24];
        std::snprintf(id, sizeof id, "%017d%06d", 0, i);  // a 23-byte id, as the uploader's
        res.body += "<Block><Name>" + Base64Encode(std::string_view(id, 23)) +
                    "</Name><Size>4194304000</Size></Block>";
      }
      res.body += "</UncommittedBlocks></BlockList>";
      return;
    }
    if (req.matches[1] == "slow") {  // answers after a second
      std::this_thread::sleep_for(1s);
      res.status = 201;
      return;
    }
    std::lock_guard lock(mu_);
    seen_.push_back(req);
    const int n = ++calls_[req.path];
    const std::string name = req.matches[1];
    res.set_header("x-ms-request-id", "req-" + std::to_string(seen_.size()));
    if (name == "ok") {
      res.status = req.method == "GET" ? 200 : 201;
      res.body = "payload";
    } else if (name == "flaky" && n <= 2) {
      res.status = 503;
      res.set_header("Retry-After", "2");
      res.set_header("x-ms-error-code", "ServerBusy");
    } else if (name == "flaky") {
      res.status = 201;
    } else if (name == "busy") {
      res.status = 500;
      res.set_header("x-ms-error-code", "InternalError");
    } else if (name == "gateway-507") {  // a proxy in front of storage, out of room
      res.status = 507;
    } else if (name == "container-going") {  // the container is being deleted
      res.status = 409;
      res.set_header("x-ms-error-code", "ContainerBeingDeleted");
    } else if (name == "throttled") {
      res.status = 503;
      res.set_header("x-ms-error-code", "ServerBusy");
    } else if (name == "overloaded") {
      res.status = 500;
      res.set_header("x-ms-error-code", "OperationTimedOut");
    } else if (name == "leased") {  // a reader holds a lease on the blob
      res.status = 412;
      res.set_header("x-ms-error-code", "LeaseIdMissing");
    } else if (name == "taken") {
      res.status = 409;
      res.set_header("x-ms-error-code", "BlobAlreadyExists");
    } else if (name == "stale-token" && n == 1) {
      res.status = 401;
    } else if (name == "stale-token") {
      res.status = 201;
    } else if (name == "denied") {
      res.status = 401;
    } else if (name == "forbidden") {  // a role assignment missing, a SAS expired
      res.status = 403;
      res.set_header("x-ms-error-code", "AuthorizationPermissionMismatch");
    } else if (name == "bad-signature") {  // a Shared Key signature storage did not compute
      res.status = 403;
      res.set_header("x-ms-error-code", "AuthenticationFailed");
      res.set_content(AuthenticationFailedBody(
                          "The MAC signature found in the HTTP request '" + kSentSignature +
                          "' is not the same as any computed signature. Server used following "
                          "string to sign: 'PUT\n\n\n1\n\n\n\n\n\n\n\n\nx-ms-meta-session:"
                          "payroll\nx-ms-version:2025-11-05\n/acct/c/bad-signature'."),
                      "application/xml");
    } else if (name == "quotes-secrets" || name == "quotes-secrets-busy" ||
               req.path.rfind("/acct/q", 0) == 0) {
      // A gateway of another make that quotes the request's secrets back, where and how no
      // pattern of Azure's own quotes looks: short, without a digit, without "sig=", as sent
      // and decoded, and XML-escaped (every '+' as a character reference).
      const std::string auth = req.get_header_value("Authorization");
      const std::string token = auth.substr(auth.find_last_of(" :") + 1);
      const std::string sig = req.get_param_value("sig");  // decoded
      const size_t raw_at = req.target.find("sig=") + 4;
      const std::string raw_sig = req.target.substr(raw_at, req.target.find('&', raw_at) - raw_at);
      std::string escaped_sig;
      std::string hex_escaped_sig;
      for (const char c : sig) {
        escaped_sig += c == '+' ? std::string("&#43;") : std::string(1, c);
        hex_escaped_sig += c == '+' ? std::string("&#x2B;") : std::string(1, c);
      }
      res.status = name == "quotes-secrets-busy" ? 500 : 403;
      if (name == "quotes-secrets-busy") {  // its code in the body only, escaped
        res.set_header("x-ms-request-id", sig);
        res.set_content("<Error><Code>" + escaped_sig + "</Code></Error>", "application/xml");
      } else {
        res.set_header("x-ms-error-code", token);
        res.set_header("x-ms-request-id", raw_sig);
        res.set_content(
            AuthenticationFailedBody("token " + token + token + ", signature " + sig +
                                     ", escaped " + escaped_sig + " and " + hex_escaped_sig),
            "application/xml");
      }
    } else if (name == "listing" && req.get_param_value("comp") == "list") {
      // Two pages, as Azure writes them: the second asked for with the first's marker, which
      // XML escapes; a name with a control character comes percent-encoded.
      res.status = 200;
      const std::string marker = req.get_param_value("marker");
      res.body = R"(<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>)";
      if (marker.empty()) {
        res.body += R"(<Blob><Name>a&amp;b&lt;c&gt;</Name><Properties><Content-Length>1)"
                    R"(</Content-Length></Properties></Blob><Blob><Name Encoded="true">)"
                    R"(ctl%01char</Name></Blob></Blobs><NextMarker>m&amp;1</NextMarker>)";
      } else if (marker == "m&1") {
        res.body += R"(<Blob><Name>caf&#xE9;</Name></Blob></Blobs><NextMarker />)";
      } else {
        res.body += R"(</Blobs><NextMarker />)";
      }
      res.body += "</EnumerationResults>";
    } else if (name == "stuck" && req.get_param_value("comp") == "list") {  // a broken server
      res.status = 200;
      res.body = R"(<EnumerationResults><Blobs><Blob><Name>x</Name></Blob></Blobs>)"
                 R"(<NextMarker>same</NextMarker></EnumerationResults>)";
    } else if (name == ".nbu-probe/container-check") {  // HEAD: the same refusal, no body
      res.status = container_check_status_;
      res.set_header("x-ms-error-code", container_check_code_);
    } else if (name == "echo-other-crc") {  // stores the body, computing another CRC-64
      res.status = 201;
      res.set_header("x-ms-content-crc64", "AAAAAAAAAAE=");
    } else if (name == "echo-crc") {
      res.status = 201;
      res.set_header("x-ms-content-crc64", req.get_header_value("x-ms-content-crc64"));
    } else if (name == "ignores-crc") {  // an emulator that stores whatever it gets
      res.status = req.method == "DELETE" ? 202 : 201;
    } else if (name == "odd-crc") {
      res.status = 400;
      res.set_header("x-ms-error-code", "InvalidHeaderValue");
    } else if (name == "long-code") {  // a proxy's or broken server's idea of an error code
      res.status = 400;
      res.set_content(
          "<Error><Code>" + std::string(100'000, 'C') + "\nInjected: line</Code></Error>",
          "application/xml");
    } else if (name == "odd-code") {
      res.status = 400;
      res.set_content("<Error><Code>Odd\nInjected: line\x01</Code></Error>", "application/xml");
    } else if (name == "no-container") {  // deleted; Create Container is refused (below)
      res.status = 404;
      res.set_header("x-ms-error-code", "ContainerNotFound");
    } else if (name == "gateway-400") {  // a proxy's answer: no request id of storage's
      res.status = 400;
      res.headers.erase("x-ms-request-id");
      res.set_content("<html><body>400 Bad Request</body></html>", "text/html");
    } else if (name == "bad") {
      res.status = 400;
      res.set_content("<?xml version=\"1.0\"?><Error><Code>Md5Mismatch</Code></Error>",
                      "application/xml");
    } else {
      res.status = 404;
      res.set_header("x-ms-error-code", "BlobNotFound");
    }
  }

  // Lets every request to "hang" be answered.
  void ReleaseHang() {
    {
      std::lock_guard lock(hang_mu_);
      released_ = true;
    }
    hang_cv_.notify_all();
  }
  // Makes requests to "hang" wait again, after a ReleaseHang.
  void RearmHang() {
    std::lock_guard lock(hang_mu_);
    hung_ = released_ = false;
  }
  // Waits until a request to "hang" is held.
  void WaitHung() {
    std::unique_lock lock(hang_mu_);
    EXPECT_TRUE(hang_cv_.wait_for(lock, 10s, [&] { return hung_; }));
  }
  // A Put Blob to "hang" gave up waiting for the answer: curl's timeout, storage unavailable.
  void ExpectTimedOut(BlobClient& client) {
    const std::string data = "x";
    Status s = client.PutBlob("hang", Body::FromMemory(data), Md5::Of(data), {});
    ReleaseHang();
    EXPECT_EQ(s.kind(), ErrorKind::kUnavailable) << s.ToString();
    EXPECT_NE(s.message().find("curl error 28"), std::string::npos) << s.ToString();
  }
  // A client whose requests are given up after `stall` without a byte moved, each tried once,
  // long before their total timeout.
  BlobClient StallingClient(std::chrono::seconds stall) {
    options_.timeout_base = 60s;
    options_.retry.max_attempts = 1;
    HttpTransportOptions t;
    t.stall_time = stall;
    transport_ = std::make_shared<HttpTransport>(t);
    return MakeClient(std::make_shared<CountingCredential>());
  }
  // The longest silence `client` showed, sampled every 20 ms while `run` ran on a thread.
  template <class Run>
  static std::chrono::nanoseconds LongestSilenceDuring(BlobClient& client, Run run) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      run();
      done = true;
    });
    std::chrono::nanoseconds longest{0};
    while (!done) {
      longest = std::max(longest, client.LongestSilence());
      std::this_thread::sleep_for(20ms);
    }
    t.join();
    return longest;
  }

  // Every try to `path` seen (`tries` of them) carried `body` and each of `headers` with its
  // value: a retry, or a resend after a 401, sends the bytes that were hashed, checked the same
  // way, not whatever is left of a body or a request rebuilt without its checksum.
  void ExpectEveryTrySends(const std::string& path, size_t tries, const std::string& body,
                           const std::vector<std::pair<std::string, std::string>>& headers) {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const httplib::Request& r : seen_) {
      if (r.path != path) continue;
      ++n;
      EXPECT_EQ(r.body, body) << path << ", try " << n;
      for (const auto& [name, value] : headers) {
        EXPECT_EQ(r.get_header_value(name), value) << name << " of " << path << ", try " << n;
      }
    }
    EXPECT_EQ(n, tries) << path;
  }
  // The checksum headers of a Put Blob checked by MD5: the body's and the blob's.
  static std::vector<std::pair<std::string, std::string>> Md5Headers(const std::string& data) {
    const std::string md5 = Base64Encode(Md5::Of(data));
    return {{"Content-MD5", md5}, {"x-ms-blob-content-md5", md5}};
  }

  // Checksum mismatches are recorded in mismatches_ unless `obs` takes them.
  BlobClient MakeClient(std::shared_ptr<Credential> cred, BlobClientObserver obs = {}) {
    if (!obs.on_checksum_mismatch) {
      obs.on_checksum_mismatch = [this](const std::string& op) { mismatches_.push_back(op); };
    }
    return BlobClient(options_, std::move(cred), transport_, clock_, std::move(obs));
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<httplib::Request> seen_;  // guarded by mu_
  std::map<std::string, int> calls_;    // guarded by mu_
  std::mutex hang_mu_;
  std::condition_variable hang_cv_;
  bool hung_ = false;                     // guarded by hang_mu_
  bool released_ = false;                 // guarded by hang_mu_
  std::atomic<bool> hang_create_{false};  // Create Container is held like "hang"
  // The answer to the HEAD after a refused Create Container; guarded by mu_.
  int container_check_status_ = 403;
  std::string container_check_code_ = "AuthenticationFailed";
  BlobClientOptions options_;
  std::shared_ptr<HttpTransport> transport_ = std::make_shared<HttpTransport>();
  SimulatedClock clock_;
  std::vector<std::string> mismatches_;  // ops, from the calling thread
};

// A blob's uncommitted block list at its largest is about 8.3 MB, past the transport's 4 MiB
// cap on an answer: it is read whole, so a resume finds every block it need not send again.
TEST_F(BlobClientRetryTest, TheLargestUncommittedBlockListIsReadWhole) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  auto blocks = client.GetUncommittedBlocks("many-blocks", {});
  ASSERT_TRUE(blocks.ok()) << blocks.status().ToString();
  ASSERT_EQ(blocks->size(), 100000u);
  EXPECT_EQ(blocks->front().id, std::string(17, '0') + "000000");
  EXPECT_EQ(blocks->back().id, std::string(17, '0') + "099999");
  EXPECT_EQ(blocks->back().size, 4194304000u);
  // The premise: the list is past the cap every other answer keeps.
  EXPECT_EQ(HttpTransportOptions{}.max_response_body, size_t{4} << 20);
}

// A listing is read page by page, each name as storage holds it. (The container's path is
// "c/listing", so that the scripted server, which answers under /acct/c/, answers it.)
TEST_F(BlobClientRetryTest, AListingFollowsItsMarkersAndDecodesEachName) {
  options_.container = "c/listing";
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  auto names = client.ListBlobNames("", 2);
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  // (\001: an octal escape ends after three digits, where \x01 would take the "c" after it.)
  EXPECT_EQ(*names, (std::vector<std::string>{"a&b<c>", "ctl\001char", "caf\xC3\xA9"}));
  std::lock_guard lock(mu_);
  ASSERT_EQ(seen_.size(), 2u);
  EXPECT_EQ(seen_[0].get_param_value("maxresults"), "2");
  EXPECT_FALSE(seen_[0].has_param("marker"));
  EXPECT_EQ(seen_[1].get_param_value("marker"), "m&1");  // sent encoded, decoded by the server
}

// A server whose listing never moves past its marker is an error, not a loop for ever.
TEST_F(BlobClientRetryTest, AListingThatDoesNotMoveOnIsAnError) {
  options_.container = "c/stuck";
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  auto names = client.ListBlobNames("");
  ASSERT_FALSE(names.ok());
  EXPECT_NE(names.status().message().find("did not move past its marker"), std::string::npos)
      << names.status().ToString();
  std::lock_guard lock(mu_);
  EXPECT_EQ(seen_.size(), 2u);  // the first page, and the second that named the same marker
}

// With a send limit, a body goes no faster than the limit allows, in pieces: 256 KiB at 1 MB/s
// take 0.26 s on the limiter's clock, less the 0.1 s burst an idle limiter saves up, and arrive
// whole. (The limiter's clock here is a simulated one that each wait moves on.)
TEST_F(BlobClientRetryTest, TheSendLimitPacesABody) {
  SimulatedClock paced;
  HttpTransportOptions limited;
  limited.send_limit = std::make_shared<RateLimiter>(1e6, paced);
  auto transport = std::make_shared<HttpTransport>(limited);
  BlobClient client(options_, std::make_shared<CountingCredential>(), transport, clock_, {});
  const std::string data = nbu::test::PatternBytes(256 << 10, 7);
  const MonoTime t0 = paced.Now();
  const Status s = client.PutBlob("ok", Body::FromMemory(data), Md5::Of(data), {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_NEAR(ToSeconds(paced.Now() - t0), 262144 / 1e6 - 0.1, 0.02);
  EXPECT_GE(paced.SleepsForTest().size(), 9u) << "sent in pieces of 16 KiB";
  std::lock_guard lock(mu_);
  ASSERT_FALSE(seen_.empty());
  EXPECT_EQ(seen_.back().body, data);
}

// Checked by CRC-64: the header alone, no MD5 (storage refuses both at once, and stores the MD5
// it computes); an echoed CRC-64 must be the one sent.
TEST_F(BlobClientRetryTest, Crc64CheckedPutBlob) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string data = "123456789";
  const uint64_t crc = 0xAE8B14860A799888ULL;  // CRC-64/NVME's check value
  Status s = client.PutBlob("echo-crc", Body::FromMemory(data), BodyCheck::Crc64(crc), {});
  EXPECT_TRUE(s.ok()) << s.ToString();
  Status other =
      client.PutBlob("echo-other-crc", Body::FromMemory(data), BodyCheck::Crc64(crc), {});
  EXPECT_EQ(other.kind(), ErrorKind::kTransient) << other.ToString();
  EXPECT_NE(other.message().find("AAAAAAAAAAE="), std::string::npos) << other.ToString();
  EXPECT_EQ(mismatches_, std::vector<std::string>{"PutBlob"});
  std::lock_guard lock(mu_);
  ASSERT_EQ(seen_.size(), 2u);
  for (const httplib::Request& r : seen_) {
    EXPECT_EQ(r.get_header_value("x-ms-content-crc64"), "iJh5CoYUi64=");
    EXPECT_FALSE(r.has_header("Content-MD5"));
    EXPECT_FALSE(r.has_header("x-ms-blob-content-md5"));
    EXPECT_EQ(r.body, data);
  }
}

// The probe: a server that stores a body whatever its CRC-64 says does not check it, and the
// probe blob it stored is deleted; an answer that is neither tells nothing.
TEST_F(BlobClientRetryTest, Crc64ProbeAgainstAServerThatIgnoresIt) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  auto ignored = client.ChecksCrc64("ignores-crc");
  ASSERT_TRUE(ignored.ok()) << ignored.status().ToString();
  EXPECT_FALSE(*ignored);
  auto odd = client.ChecksCrc64("odd-crc");
  EXPECT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("InvalidHeaderValue"), std::string::npos)
      << odd.status().ToString();
  std::lock_guard lock(mu_);
  ASSERT_EQ(seen_.size(), 3u);
  EXPECT_EQ(seen_[0].method, "PUT");
  EXPECT_EQ(seen_[0].body, "a");
  EXPECT_EQ(seen_[0].get_header_value("x-ms-content-crc64"), Crc64Base64(Crc64(0, "b", 1)));
  EXPECT_EQ(seen_[1].method, "DELETE");
  EXPECT_EQ(seen_[1].path, "/acct/c/ignores-crc");
  EXPECT_EQ(seen_[2].path, "/acct/c/odd-crc");
}

TEST_F(BlobClientRetryTest, SendsOnlySignedHeadersAndMd5) {
  auto cred = std::make_shared<CountingCredential>();
  BlobClient client = MakeClient(cred);
  const std::string data = "hello";
  ASSERT_TRUE(client.PutBlob("ok", Body::FromMemory(data), Md5::Of(data), {}).ok());
  std::lock_guard lock(mu_);
  ASSERT_EQ(seen_.size(), 1u);
  const httplib::Request& r = seen_[0];
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(r.get_header_value("x-ms-version"), kApiVersion);
  EXPECT_EQ(r.get_header_value("Content-MD5"), "XUFAKrxLKna5cZ2REBfFkg==");
  EXPECT_EQ(r.get_header_value("x-ms-blob-content-md5"), "XUFAKrxLKna5cZ2REBfFkg==");
  EXPECT_EQ(r.get_header_value("x-ms-blob-type"), "BlockBlob");
  EXPECT_EQ(r.get_header_value("Content-Length"), "5");
  EXPECT_FALSE(r.get_header_value("x-ms-client-request-id").empty());
  EXPECT_EQ(r.get_header_value("Authorization"), "Test 1");
  EXPECT_FALSE(r.has_header("Expect"));
  EXPECT_FALSE(r.has_header("Accept"));
  EXPECT_FALSE(r.has_header("Content-Type"));
  EXPECT_FALSE(r.has_header("Transfer-Encoding"));
}

TEST_F(BlobClientRetryTest, RetryAfterIsHonouredAndThrottlesEveryone) {
  auto cred = std::make_shared<CountingCredential>();
  std::vector<std::string> reasons;
  int throttled = 0;
  BlobClient client = MakeClient(
      cred,
      {[&](const std::string& r) { reasons.push_back(r); }, [&] { ++throttled; }, {}, {}, {}});
  const std::string data = "abc";
  ASSERT_TRUE(client.PutBlock("flaky", "0001", Body::FromMemory(data), Md5::Of(data)).ok());
  EXPECT_EQ(reasons, (std::vector<std::string>{"503", "503"}));
  EXPECT_EQ(throttled, 2);
  EXPECT_EQ(clock_.SleepsForTest(), (std::vector<Duration>{2s, 2s}));
  EXPECT_EQ(cred->authorizations, 3);  // re-signed on every attempt
  // Every try sent the block and its MD5 (a block has no blob MD5), under the same block id.
  ExpectEveryTrySends("/acct/c/flaky", 3, data, {{"Content-MD5", Base64Encode(Md5::Of(data))}});
  std::lock_guard lock(mu_);
  ASSERT_EQ(seen_.size(), 3u);
  // The same client request id across retries of one operation.
  EXPECT_EQ(seen_[0].get_header_value("x-ms-client-request-id"),
            seen_[2].get_header_value("x-ms-client-request-id"));
  for (const httplib::Request& r : seen_) EXPECT_EQ(r.get_param_value("blockid"), "MDAwMQ==");
}

// A server error that outlasts every retry describes storage (an outage, an overloaded
// partition), not the request: kUnavailable, which the pipeline waits out without charging the
// file.
TEST_F(BlobClientRetryTest, ExhaustedRetriesAreUnavailableWithContext) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string data = "abc";
  Status s = client.PutBlob("busy", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(s.kind(), ErrorKind::kUnavailable);
  EXPECT_NE(s.message().find("PutBlob"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("/acct/c/busy"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("HTTP 500 InternalError"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("req-4"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("after 4 attempts"), std::string::npos) << s.message();
  // Exponential backoff 100, 200, 400 ms (x jitter in [0.8, 1.3]).
  const auto sleeps = clock_.SleepsForTest();
  ASSERT_EQ(sleeps.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto base = Duration(100ms) * (1 << i);
    EXPECT_GE(sleeps[i], base * 8 / 10);
    EXPECT_LE(sleeps[i], base * 13 / 10);
  }
  ExpectEveryTrySends("/acct/c/busy", 4, data, Md5Headers(data));
  // Throttling past every retry is storage asking for less: busy, not unreachable.
  for (const char* name : {"throttled", "overloaded"}) {
    Status busy = client.PutBlob(name, Body::FromMemory(data), Md5::Of(data), {});
    EXPECT_EQ(busy.kind(), ErrorKind::kBusy) << busy.ToString();
    ExpectEveryTrySends(std::string("/acct/c/") + name, 4, data, Md5Headers(data));
  }
}

// Every retry of a body read from a file (a staged copy: at an offset, in a file holding more)
// sends that body again from its start, and a CRC-64-checked one its CRC-64 again.
TEST_F(BlobClientRetryTest, RetriesResendTheFileBodyAndItsChecksum) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  nbu::test::TempDir dir;
  const std::string data = "the staged bytes of one block";
  nbu::test::WriteFile(dir / "staged", "head|" + data + "|tail");
  const int fd = ::open((dir / "staged").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const Body body = Body::FromFile(fd, 5, data.size());
  Status busy = client.PutBlob("busy", body, Md5::Of(data), {});
  const uint64_t crc = Crc64(0, data.data(), data.size());
  Status throttled = client.PutBlob("throttled", body, BodyCheck::Crc64(crc), {});
  ::close(fd);
  EXPECT_EQ(busy.kind(), ErrorKind::kUnavailable) << busy.ToString();
  EXPECT_EQ(throttled.kind(), ErrorKind::kBusy) << throttled.ToString();
  ExpectEveryTrySends("/acct/c/busy", 4, data, Md5Headers(data));
  ExpectEveryTrySends("/acct/c/throttled", 4, data, {{"x-ms-content-crc64", Crc64Base64(crc)}});
  std::lock_guard lock(mu_);
  for (const httplib::Request& r : seen_) {
    if (r.path == "/acct/c/throttled") {
      EXPECT_FALSE(r.has_header("Content-MD5"));
    }
  }
}

// The last try's throttling answer is not retried, yet storage is as busy for every other
// request: it holds them back too, for what a retry would have waited (100 ms x jitter 0.8-1.3
// here), and the next request waits that out (plus at most a quarter of it, the gate's spread).
TEST_F(BlobClientRetryTest, TheLastTrysThrottlingHoldsTheOthersBack) {
  options_.retry.max_attempts = 1;
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string data = "abc";
  EXPECT_EQ(client.PutBlob("throttled", Body::FromMemory(data), Md5::Of(data), {}).kind(),
            ErrorKind::kBusy);
  EXPECT_TRUE(clock_.SleepsForTest().empty()) << "not retried";
  EXPECT_TRUE(client.PutBlob("ok", Body::FromMemory(data), Md5::Of(data), {}).ok());
  const auto sleeps = clock_.SleepsForTest();
  ASSERT_EQ(sleeps.size(), 1u) << "the next request did not wait for the gate";
  EXPECT_GE(sleeps[0], Duration(80ms));
  EXPECT_LE(sleeps[0], Duration(130ms) * 5 / 4);
}

// A file body that ends before its length (the staging copy shrank since it was hashed) cannot
// be sent by any resend of it: not retried, and kStaging, so that the caller copies the file
// again instead of charging it or storage.
TEST_F(BlobClientRetryTest, AFileBodyThatEndsEarlyIsNotRetried) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  nbu::test::TempDir dir;
  const std::string data(100, 'x');
  nbu::test::WriteFile(dir / "staged", data.substr(0, 10));
  const int fd = ::open((dir / "staged").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Status s = client.PutBlob("ok", Body::FromFile(fd, 0, data.size()), Md5::Of(data), {});
  ::close(fd);
  EXPECT_EQ(s.kind(), ErrorKind::kStaging) << s.ToString();
  EXPECT_NE(s.message().find("reading request body"), std::string::npos) << s.ToString();
  EXPECT_TRUE(clock_.SleepsForTest().empty()) << "retried: " << clock_.SleepsForTest().size();
  std::lock_guard lock(mu_);
  EXPECT_TRUE(seen_.empty()) << "a torn body reached the handler";
}

TEST_F(BlobClientRetryTest, Unauthorized401ReauthorizesExactlyOnce) {
  auto cred = std::make_shared<CountingCredential>();
  BlobClient client = MakeClient(cred);
  const std::string data = "x";
  EXPECT_TRUE(client.PutBlob("stale-token", Body::FromMemory(data), Md5::Of(data), {}).ok());
  EXPECT_EQ(cred->invalidations, 1);
  EXPECT_TRUE(clock_.SleepsForTest().empty());

  Status s = client.PutBlob("denied", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(s.kind(), ErrorKind::kAuth);
  EXPECT_EQ(cred->invalidations, 2);
  // The resend after the 401 carries the body and its MD5 again.
  ExpectEveryTrySends("/acct/c/stale-token", 2, data, Md5Headers(data));
  ExpectEveryTrySends("/acct/c/denied", 2, data, Md5Headers(data));
  {
    std::lock_guard lock(mu_);
    EXPECT_EQ(calls_["/acct/c/denied"], 2);
  }
  // A credential with nothing new to send after the 401: no resend.
  cred->renews = false;
  s = client.PutBlob("denied", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(s.kind(), ErrorKind::kAuth);
  EXPECT_EQ(cred->invalidations, 3);
  std::lock_guard lock(mu_);
  EXPECT_EQ(calls_["/acct/c/denied"], 2 + 1);
}

// A container gone that cannot be made again (here Create Container is refused, as for
// credentials that may not create it): the upload waits as for unreachable storage, and the
// observer is told, for the status's container_missing.
TEST_F(BlobClientRetryTest, AContainerThatCannotBeMadeAgainIsTold) {
  int missing = 0;
  BlobClientObserver observer;
  observer.on_container_missing = [&] { ++missing; };
  BlobClient client = MakeClient(std::make_shared<CountingCredential>(), observer);
  const std::string data = "x";
  const Status s = client.PutBlob("no-container", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(s.kind(), ErrorKind::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("recreating it failed"), std::string::npos) << s.ToString();
  EXPECT_EQ(missing, 1);
  // A write answered that the container is being deleted waits too, and is told the same way.
  const Status going = client.PutBlob("container-going", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(going.kind(), ErrorKind::kUnavailable) << going.ToString();
  EXPECT_EQ(missing, 2);
  // So is a read (a recovered claim's HEAD, a resume's block list): the container's state.
  EXPECT_EQ(client.GetProperties("container-going").status().kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(client.GetUncommittedBlocks("container-going").status().kind(),
            ErrorKind::kUnavailable);
  EXPECT_EQ(missing, 4);
}

// A stop while the container is made again is a stop: no warning that the remaking failed, no
// missing container told, and the caller sees kCancelled, not storage unavailable.
TEST_F(BlobClientRetryTest, AStopWhileTheContainerIsMadeAgainIsAStop) {
  int missing = 0;
  BlobClientObserver observer;
  observer.on_container_missing = [&] { ++missing; };
  BlobClient client = MakeClient(std::make_shared<CountingCredential>(), observer);
  hang_create_ = true;
  nbu::test::CapturedLog warned("container missing", LogLevel::kWarn);
  std::stop_source stop;
  Status s;
  std::thread put([&] {
    const std::string data = "x";
    s = client.PutBlob("no-container", Body::FromMemory(data), Md5::Of(data), {}, stop.get_token());
  });
  WaitHung();
  stop.request_stop();
  put.join();
  ReleaseHang();
  warned.Stop();
  EXPECT_EQ(s.kind(), ErrorKind::kCancelled) << s.ToString();
  EXPECT_EQ(missing, 0);
  EXPECT_TRUE(warned.Lines().empty()) << warned.Lines().front();
}

// Every try tells the observer what it says of storage, for the status's degraded states: a
// success is one (and the only proof that storage takes our credentials); a throttling answer
// and a missing blob are answers; no connection is not, and 500s are server errors, which only a
// success clears (a gateway's 507 to every write beside a HEAD's 404); 403, and a 401 that outlasts
// reauthorization, refuse our credentials, as does a token endpoint refusing us.
TEST_F(BlobClientRetryTest, EachTryTellsTheObserverWhetherStorageAnsweredOrRefused) {
  using enum TryOutcome;
  auto cred = std::make_shared<CountingCredential>();
  std::vector<TryOutcome> tries;
  int throttled = 0;
  BlobClientObserver observer;
  observer.on_try = [&](TryOutcome t) { tries.push_back(t); };
  observer.on_throttled = [&] { ++throttled; };
  BlobClient client = MakeClient(cred, observer);
  const std::string data = "x";
  auto put = [&](const std::string& name) {
    tries.clear();
    throttled = 0;
    (void)client.PutBlob(name, Body::FromMemory(data), Md5::Of(data), {});
    return tries;
  };
  EXPECT_EQ(put("ok"), std::vector{kSucceeded});
  EXPECT_EQ(put("flaky"), (std::vector{kAnswered, kAnswered, kSucceeded}));
  EXPECT_EQ(put("busy"), (std::vector{kServerError, kServerError, kServerError, kServerError}));
  EXPECT_EQ(put("overloaded"), (std::vector{kAnswered, kAnswered, kAnswered, kAnswered}));
  EXPECT_EQ(throttled, 4);  // every throttling answer, the last try's too
  EXPECT_EQ(put("stale-token"), std::vector{kSucceeded});
  EXPECT_EQ(put("denied"), std::vector{kRefused});
  EXPECT_EQ(put("forbidden"), std::vector{kRefused});
  EXPECT_EQ(put("nothing-here"), std::vector{kAnswered});
  // Any other 5xx is storage's (or its gateway's) trouble too: not retried, but reported so.
  EXPECT_EQ(put("gateway-507"), std::vector{kServerError});
  // A container being deleted is storage answering (told as container_missing), not its failure.
  EXPECT_EQ(put("container-going"), std::vector{kAnswered});
  // Deleting the CRC-64 probe needs a right uploads do not: its answer is not reported.
  tries.clear();
  EXPECT_EQ(client.DeleteBlob("forbidden").kind(), ErrorKind::kAuth);
  EXPECT_TRUE(tries.empty());
  cred->fails = Status(ErrorKind::kAuth, "token endpoint: HTTP 400 invalid_client");
  EXPECT_EQ(put("ok"), std::vector{kRefused});
  cred->fails = Status(ErrorKind::kUnavailable, "token endpoint: connection refused");
  EXPECT_EQ(put("ok"), std::vector{kUnreachable});

  cred->fails = Status::Ok();
  options_.endpoint = "http://127.0.0.1:1/acct";
  BlobClient nowhere = MakeClient(cred, observer);
  tries.clear();
  (void)nowhere.GetBlob("x");
  EXPECT_EQ(tries, (std::vector{kUnreachable, kUnreachable, kUnreachable, kUnreachable}));
}

TEST_F(BlobClientRetryTest, StatusMapping) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string data = "x";
  Status bad = client.PutBlob("bad", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(bad.kind(), ErrorKind::kTransient);  // re-read and retry the file, not the request
  EXPECT_NE(bad.message().find("HTTP 400 Md5Mismatch"), std::string::npos) << bad.message();
  EXPECT_EQ(mismatches_, std::vector<std::string>{"PutBlob"});
  // An error code no storage sends: cut, on one line.
  Status odd = client.PutBlob("long-code", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(odd.kind(), ErrorKind::kPermanent) << odd.ToString().substr(0, 200);
  EXPECT_NE(odd.message().find("HTTP 400 " + std::string(64, 'C') + "... "), std::string::npos)
      << odd.message().substr(0, 200);
  EXPECT_LT(odd.message().size(), 1'000u);
  Status lines = client.PutBlob("odd-code", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_NE(lines.message().find("HTTP 400 Odd?Injected: line? "), std::string::npos)
      << lines.message();
  // A 400 storage did not give (no x-ms-request-id) fails the attempt, not the file.
  Status gateway_400 = client.PutBlob("gateway-400", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(gateway_400.kind(), ErrorKind::kTransient) << gateway_400.ToString();
  EXPECT_NE(gateway_400.message().find("HTTP 400 (request id -)"), std::string::npos)
      << gateway_400.message();
  // A 5xx outside the retried set is waited out by the caller, never taken as the file's fault.
  Status gateway = client.PutBlob("gateway-507", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(gateway.kind(), ErrorKind::kUnavailable) << gateway.ToString();
  EXPECT_NE(gateway.message().find("HTTP 507"), std::string::npos) << gateway.message();
  auto missing = client.GetBlob("nothing-here");
  EXPECT_EQ(missing.status().kind(), ErrorKind::kNotFound);
  EXPECT_NE(missing.status().message().find("BlobNotFound"), std::string::npos);
  auto ok = client.GetBlob("ok");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "payload");
  EXPECT_TRUE(clock_.SleepsForTest().empty());
}

// A refusal of our credentials carries storage's reason, for the operator, and no secret: the
// request's signature quoted back is REDACTED, the string to sign left out. Create Container
// refused (and the HEAD that checks for the container too, bodiless) names the clock.
TEST_F(BlobClientRetryTest, ARefusalOfOurCredentialsSaysWhyWithoutSecrets) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string data = "x";
  Status s = client.PutBlob("bad-signature", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(s.kind(), ErrorKind::kAuth);
  EXPECT_NE(s.message().find("HTTP 403 AuthenticationFailed (request id req-1): The MAC signature "
                             "found in the HTTP request 'REDACTED' is not the same as any "
                             "computed signature. [string to sign left out]"),
            std::string::npos)
      << s.message();
  for (const std::string& secret : {kSentSignature, std::string("payroll"), std::string("\n")}) {
    EXPECT_EQ(s.ToString().find(secret), std::string::npos) << secret << " in " << s.ToString();
  }

  Status created = client.CreateContainerIfMissing();
  EXPECT_EQ(created.kind(), ErrorKind::kAuth);
  EXPECT_NE(created.message().find("HTTP 403 AuthenticationFailed: Request date header too old: "
                                   "'Thu, 02 May 2024 09:40:00 GMT'"),
            std::string::npos)
      << created.message();
  // The HEAD that follows the refusal, answered otherwise, says that instead: the container being
  // deleted, or storage failing, is not a refusal of our credentials.
  {
    std::lock_guard lock(mu_);
    container_check_status_ = 409;
    container_check_code_ = "ContainerBeingDeleted";
  }
  created = client.CreateContainerIfMissing();
  EXPECT_NE(created.kind(), ErrorKind::kAuth) << created.ToString();
  EXPECT_EQ(created.code(), "ContainerBeingDeleted") << created.ToString();
  EXPECT_NE(created.message().find("HTTP 403 AuthenticationFailed"), std::string::npos)
      << created.ToString();  // the refusal that led to the check is told too
  {
    std::lock_guard lock(mu_);
    container_check_status_ = 500;
    container_check_code_ = "InternalError";
  }
  created = client.CreateContainerIfMissing();
  EXPECT_EQ(created.kind(), ErrorKind::kUnavailable) << created.ToString();
  EXPECT_NE(created.message().find("HTTP 403 AuthenticationFailed"), std::string::npos)
      << created.ToString();
  EXPECT_NE(created.message().find("check that the container exists failed"), std::string::npos)
      << created.ToString();
}

// A credential whose secrets no pattern for Azure's quotes would catch: a SAS signature and a
// bearer token of letters only, shorter than 32 characters.
class ShortSecretCredential : public Credential {
 public:
  static constexpr const char* kToken = "ShortTokenOfLetters";
  static constexpr const char* kSig = "ShortSig+Letters/Only=";  // decoded
  static constexpr const char* kSentSig = "ShortSig%2BLetters%2FOnly%3D";
  // `scheme`: "Bearer " + token, or "SharedKey acct:" + token.
  explicit ShortSecretCredential(std::string scheme = "Bearer ") : scheme_(std::move(scheme)) {}
  Status Authorize(HttpRequest& req, const std::string&, bool) override {
    req.url += req.url.find('?') == std::string::npos ? "?" : "&";
    req.url += std::string("sig=") + kSentSig;
    req.SetHeader("Authorization", scheme_ + kToken);
    return Status::Ok();
  }
  std::string Describe() const override { return "short secrets"; }

 private:
  std::string scheme_;
};

// An answer that quotes the request's secrets back (a gateway's echo), in its error code, its
// request id or its body, has them replaced before its text reaches a message: the status's
// recent errors, the log and the spans carry these messages.
TEST_F(BlobClientRetryTest, SecretsAnAnswerQuotesBackAreReplaced) {
  // Container "q" answers every request with the same quotes (a 403), the container check too.
  for (const char* route : {"/acct/q", R"(/acct/q/(.*))"}) {
    const auto handle = [this](const httplib::Request& req, httplib::Response& res) {
      Handle(req, res);
    };
    server_.Put(route, handle);
    server_.Get(route, handle);
  }
  options_.retry.max_attempts = 2;
  const std::string data = "x";
  const auto expect_none = [](const Status& s) {
    for (const char* secret :
         {ShortSecretCredential::kToken, ShortSecretCredential::kSig,
          ShortSecretCredential::kSentSig, "ShortSig+", "ShortSig&#43;", "ShortSig&#x2B;"}) {
      EXPECT_EQ(s.ToString().find(secret), std::string::npos) << secret << " in " << s.ToString();
      EXPECT_EQ(s.code().find(secret), std::string::npos) << secret << " in " << s.code();
    }
    EXPECT_NE(s.message().find("REDACTED"), std::string::npos) << s.ToString();
  };
  for (const char* scheme : {"Bearer ", "SharedKey acct:"}) {
    SCOPED_TRACE(scheme);
    nbu::test::CapturedLog log("azure request retry");
    BlobClient client = MakeClient(std::make_shared<ShortSecretCredential>(scheme));
    for (const char* blob : {"quotes-secrets", "quotes-secrets-busy"}) {
      const Status s = client.PutBlob(blob, Body::FromMemory(data), Md5::Of(data), {});
      ASSERT_FALSE(s.ok()) << blob;
      EXPECT_EQ(s.kind(),
                std::string(blob) == "quotes-secrets" ? ErrorKind::kAuth : ErrorKind::kUnavailable)
          << s.ToString();
      expect_none(s);
    }
    // The retry's log line names the code storage sent (in the body, escaped): replaced.
    log.Stop();
    const std::vector<std::string> lines = log.Lines();
    ASSERT_EQ(lines.size(), 1U);
    EXPECT_EQ(nlohmann::json::parse(lines[0]).at("error"), "REDACTED") << lines[0];
    // The detail's own words are kept: only the secrets go, each quote of them (two quotes
    // back to back are two).
    const Status s = client.PutBlob("quotes-secrets", Body::FromMemory(data), Md5::Of(data), {});
    EXPECT_NE(s.message().find(": token REDACTEDREDACTED, signature REDACTED, escaped REDACTED "
                               "and REDACTED"),
              std::string::npos)
        << s.ToString();
    // An answer the caller reads itself (Create Container's refusal, and the check after it).
    options_.container = "q";
    BlobClient q = MakeClient(std::make_shared<ShortSecretCredential>(scheme));
    options_.container = "c";
    const Status created = q.CreateContainerIfMissing();
    EXPECT_EQ(created.kind(), ErrorKind::kAuth) << created.ToString();
    expect_none(created);
  }
}

// Only a failed precondition of our own (the name taken, the ETag moved on) is a conflict,
// which the commit step resolves by looking at the blob. Any other 409 or 412 (a reader's
// lease, an immutability policy) would fail the same way again: it is the file's failure,
// named by its code, and not sent again at once.
TEST_F(BlobClientRetryTest, OnlyFailedPreconditionsAreConflicts) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string data = "x";
  Status taken = client.PutBlob("taken", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(taken.kind(), ErrorKind::kConflict) << taken.ToString();
  Status leased = client.PutBlob("leased", Body::FromMemory(data), Md5::Of(data), {});
  EXPECT_EQ(leased.kind(), ErrorKind::kTransient) << leased.ToString();
  EXPECT_NE(leased.message().find("HTTP 412 LeaseIdMissing"), std::string::npos)
      << leased.ToString();
  std::lock_guard lock(mu_);
  EXPECT_EQ(calls_["/acct/c/leased"], 1);
}

// A server that accepts the connection and never answers: each try times out, and so does the
// last. Like a refused connection, that is storage unavailable, not the request's fault.
TEST_F(BlobClientRetryTest, TimeoutsOutlastingEveryRetryAreUnavailable) {
  options_.timeout_base = 200ms;
  options_.retry.max_attempts = 2;
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  ExpectTimedOut(client);
  // Timed out after 0.2 s: no silence of a quarter of the stall limit, so none goes on.
  EXPECT_EQ(client.LongestSilence().count(), 0);
}

// A connection that stops moving is given up after the stall time, long before the total
// timeout of the request (a minute here; the server would answer 201 after 10 s).
TEST_F(BlobClientRetryTest, AStalledTransferIsGivenUpBeforeItsTimeout) {
  BlobClient client = StallingClient(1s);
  ExpectTimedOut(client);
}

// A request is never given up sooner than Azure itself would give up on it: 60 s for a block
// list, 10 minutes per MiB for a blob or block. A slow uplink shared by 32 block streams would
// otherwise see every block cut off and sent again while storage was still taking it.
TEST(BlobClientTimeoutTest, NeverShorterThanAzuresOwn) {
  const BlobClientOptions defaults;
  EXPECT_GE(RequestTimeout(defaults, 0), 60s);
  EXPECT_GE(RequestTimeout(defaults, 1 << 20), 10min + 30s);
  EXPECT_GE(RequestTimeout(defaults, uint64_t{8} << 20), 80min);
  EXPECT_LT(RequestTimeout(defaults, 1 << 20), 12min);
  BlobClientOptions no_rate;
  no_rate.timeout_min_bytes_per_s = 0;
  EXPECT_EQ(RequestTimeout(no_rate, 1 << 20), no_rate.timeout_base);
}

// Execute gives each request the timeout its body calls for: against a server that takes a second
// to answer, a bodiless request times out at a 200 ms base, and a 4 MiB body at 1 MiB/s, given
// 4.2 s, does not.
TEST_F(BlobClientRetryTest, EachRequestGetsTheTimeoutItsBodyCallsFor) {
  options_.timeout_base = 200ms;
  options_.timeout_min_bytes_per_s = 1 << 20;
  options_.retry.max_attempts = 1;
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  const std::string none;
  const Status s = client.PutBlob("slow", Body::FromMemory(none), Md5::Of(none), {});
  EXPECT_EQ(s.kind(), ErrorKind::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("curl error 28"), std::string::npos) << s.ToString();
  const std::string big(size_t{4} << 20, 'b');
  const Status b = client.PutBlob("slow", Body::FromMemory(big), Md5::Of(big), {});
  EXPECT_TRUE(b.ok()) << b.ToString();
}

TEST_F(BlobClientRetryTest, ConnectionRefusedIsUnavailableAndRetried) {
  options_.endpoint = "http://127.0.0.1:1/acct";
  std::vector<std::string> reasons;
  BlobClient client =
      MakeClient(std::make_shared<CountingCredential>(),
                 {[&](const std::string& r) { reasons.push_back(r); }, {}, {}, {}, {}});
  auto r = client.GetBlob("x");
  EXPECT_EQ(r.status().kind(), ErrorKind::kUnavailable);
  // The code's own text beside curl's detail, which may be an earlier failure's (http.cpp).
  EXPECT_NE(r.status().message().find("curl error 7 (Couldn't connect to server): "),
            std::string::npos)
      << r.status().message();
  EXPECT_EQ(reasons, (std::vector<std::string>{"connection", "connection", "connection"}));
}

TEST_F(BlobClientRetryTest, StopCancelsBackoff) {
  SimulatedClock manual(/*auto_advance=*/false);
  BlobClient client(options_, std::make_shared<CountingCredential>(), transport_, manual);
  std::stop_source stop;
  std::thread t([&] {
    const std::string data = "x";
    Status s = client.PutBlob("busy", Body::FromMemory(data), Md5::Of(data), {}, stop.get_token());
    EXPECT_EQ(s.kind(), ErrorKind::kCancelled);
  });
  EXPECT_TRUE(nbu::test::WaitFor([&] { return !manual.SleepsForTest().empty(); }, 30s));
  stop.request_stop();
  t.join();
}

// A shutdown does not wait for a request that storage is slow to answer: the transfer is aborted
// (the server answers 201 only once released, after the client has returned).
TEST_F(BlobClientRetryTest, StopAbortsARequestInFlight) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  std::stop_source stop;
  Status s;
  std::thread t([&] {
    const std::string data = "x";
    s = client.PutBlob("hang", Body::FromMemory(data), Md5::Of(data), {}, stop.get_token());
  });
  WaitHung();
  stop.request_stop();
  t.join();
  ReleaseHang();
  EXPECT_EQ(s.kind(), ErrorKind::kCancelled) << s.ToString();
}

// A request that storage took and then left unanswered shows as its silence while it lasts,
// and none once it ends.
TEST_F(BlobClientRetryTest, AnUnansweredRequestShowsItsSilence) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  EXPECT_EQ(client.LongestSilence().count(), 0) << "nothing in flight";
  Status s;
  std::thread t([&] {
    const std::string data = "x";
    s = client.PutBlob("hang", Body::FromMemory(data), Md5::Of(data), {});
  });
  WaitHung();
  EXPECT_TRUE(nbu::test::WaitFor([&] { return client.LongestSilence() >= 1500ms; }, 10s));
  ReleaseHang();
  t.join();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(client.LongestSilence().count(), 0) << "nothing in flight";
}

// A request given up at the stall limit leaves its silence counting, though nothing is in flight
// (its retry would start again from 0), until storage sends a byte of any answer. A retry's body
// sent does not end it: against a black hole, the kernel takes the body all the same, and the
// silence would blink off at each retry (45 s on, 15 s off at the defaults).
TEST_F(BlobClientRetryTest, ASilenceGivenUpGoesOnUntilStorageAnswers) {
  BlobClient client = StallingClient(4s);
  ExpectTimedOut(client);
  EXPECT_GE(client.LongestSilence(), 3s) << "given up, still silent";

  // The retry: its 64 KiB body goes out, and no answer comes until released.
  RearmHang();
  Status retry;
  std::thread sender([&] {
    const std::string body = nbu::test::PatternBytes(64 << 10, 5);
    retry = client.PutBlob("hang", Body::FromMemory(body), Md5::Of(body), {});
  });
  WaitHung();
  // curl tells progress about once a second: by then, the body sent is noted.
  std::this_thread::sleep_for(1200ms);
  EXPECT_GE(client.LongestSilence(), 3s) << "a body sent is no answer";
  ReleaseHang();
  sender.join();
  EXPECT_TRUE(retry.ok()) << retry.ToString();
  EXPECT_EQ(client.LongestSilence().count(), 0) << "answered";
}

// A given-up silence that has lapsed (a stall limit passed with no request since) is not added
// to the next one: that would show the whole time between them as one silence at once.
TEST_F(BlobClientRetryTest, ALapsedSilenceIsNotAddedToTheNextOne) {
  BlobClient client = StallingClient(2s);
  ExpectTimedOut(client);
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(client.LongestSilence().count(), 0) << "lapsed: nothing is known";
  RearmHang();
  ExpectTimedOut(client);
  const auto silence = client.LongestSilence();
  EXPECT_GE(silence, 1500ms) << "the second request's own silence";
  EXPECT_LT(silence, 4s) << "not counted from the first request's start";
}

// A response header is a byte moved (curl's progress counts none): an answer whose headers come
// after 1.5 s and its body 2 s later is never silent for much more than 2 s, not 3.5 s.
TEST_F(BlobClientRetryTest, AResponseHeaderEndsASilence) {
  BlobClient client = MakeClient(std::make_shared<CountingCredential>());
  Result<std::string> got = Status(ErrorKind::kTransient, "not run");
  const auto longest = LongestSilenceDuring(client, [&] { got = client.GetBlob("late-body"); });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "payload");
  EXPECT_GE(longest, 1500ms) << "the wait for the headers";
  EXPECT_LT(longest, 2800ms) << "the headers ended the first silence";
}

// A body that keeps moving, however slowly, is no silence: 80 KiB paced at 16 KiB/s (a piece of
// 16 KiB a second, on the real clock) take about 5 s, and no moment of them is silent for long.
TEST_F(BlobClientRetryTest, ASlowButMovingBodyIsNotSilent) {
  HttpTransportOptions limited;
  limited.send_limit = std::make_shared<RateLimiter>(16 << 10, RealClock::Instance());
  auto transport = std::make_shared<HttpTransport>(limited);
  BlobClient client(options_, std::make_shared<CountingCredential>(), transport, clock_, {});
  const std::string data = nbu::test::PatternBytes(80 << 10, 3);
  Status s;
  const auto t0 = std::chrono::steady_clock::now();
  const auto longest = LongestSilenceDuring(
      client, [&] { s = client.PutBlob("ok", Body::FromMemory(data), Md5::Of(data), {}); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_GE(std::chrono::steady_clock::now() - t0, 3s) << "paced";
  EXPECT_LT(longest, 2500ms) << "each piece that moves ends a silence";
}

}  // namespace
}  // namespace nbu::azure
