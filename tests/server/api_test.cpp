// The control API in-process over a started service (real Azurite): what it makes of request
// bodies. A body is a JSON object sent as JSON; anything else gets a 4xx with a JSON message and
// changes nothing.
#include "server/api.h"

#include "support/azurite.h"
#include "support/azurite_client.h"
#include "support/process.h"
#include "support/test_config.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

namespace nbu::server {
namespace {

using namespace std::chrono_literals;

struct Answer {
  int status = 0;
  nlohmann::json body;
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = test::TestConfig(dir_, test::FreshContainer("api"));
    config_.replica_id = "api-test";
    blob_ = test::MakeBlobClient(test::SharedAzurite(), config_.azure_container);
    service_ =
        std::make_unique<core::Service>(config_, RealClock::Instance(), *blob_, metrics_, tracer_);
    service_->Start();
    api_ = std::make_unique<Api>(*service_, metrics_, RealClock::Instance());
    port_ = api_->Bind("127.0.0.1", 0);
    ASSERT_GT(port_, 0);
    serve_ = std::thread([this] { api_->Serve(); });
    ASSERT_TRUE(api_->WaitServing(10s));
    ASSERT_TRUE(test::WaitFor([&] { return service_->ready(); }, 30s));
  }
  void TearDown() override {
    if (api_) api_->Stop();
    if (serve_.joinable()) serve_.join();
    if (service_) {
      EXPECT_TRUE(service_->Shutdown(5s));
    }
  }

  Answer Post(const std::string& path, const std::string& body, const std::string& type) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10);
    const httplib::Result r = c.Post(path.c_str(), body, type.c_str());
    Answer out;
    if (!r) return out;
    out.status = r->status;
    out.body = nlohmann::json::parse(r->body, nullptr, false);
    return out;
  }
  // A POST with a Content-Length and no Content-Type, written by hand (the library's client
  // always sends a type).
  Answer PostUntyped(const std::string& path, const std::string& body) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    Answer out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return out;
    }
    const std::string request =
        "POST " + path +
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + body;
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      ::close(fd);
      return out;
    }
    std::string got;
    char buf[4096];
    for (ssize_t n = 0; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      got.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    if (got.rfind("HTTP/1.1 ", 0) != 0) return out;
    out.status = std::atoi(got.c_str() + 9);
    const size_t end = got.find("\r\n\r\n");
    if (end != std::string::npos)
      out.body = nlohmann::json::parse(got.substr(end + 4), nullptr, false);
    return out;
  }
  std::string State() { return service_->StatusJson()["state"]; }

  test::TempDir dir_;
  core::Config config_;
  std::unique_ptr<azure::BlobClient> blob_;
  telemetry::MetricsRegistry metrics_;
  telemetry::Tracer tracer_{RealClock::Instance()};
  std::unique_ptr<core::Service> service_;
  std::unique_ptr<Api> api_;
  int port_ = 0;
  std::thread serve_;
};

// A body sent as anything but JSON is refused 415 before it is read, with a JSON message: a form
// or text body is not taken for JSON, and a form body past 8 KiB is not answered 413 "too large"
// (the HTTP library's limit on the form parameters it would parse). No body goes with any type
// (`curl -X POST -d ''` sends a form type); JSON parameters and any case are fine, and a body
// without a type is taken as JSON.
TEST_F(ApiTest, ABodyThatIsNotSentAsJsonIsRefused415) {
  const std::string start = "/v1/watch/start";
  for (const char* type : {"text/plain", "application/x-www-form-urlencoded",
                           "multipart/form-data; boundary=x", "application/jsonx", "json"}) {
    const Answer a = Post(start, R"({"session_name":"typed"})", type);
    EXPECT_EQ(a.status, 415) << type;
    EXPECT_TRUE(a.body.contains("error")) << type << " " << a.body.dump();
  }
  const Answer form =
      Post(start, std::string(9000, ' ') + "{}", "application/x-www-form-urlencoded");
  EXPECT_EQ(form.status, 415) << form.body.dump();
  EXPECT_NE(form.body.value("error", "").find("application/json"), std::string::npos)
      << form.body.dump();
  EXPECT_EQ(State(), "idle") << "nothing was started";
  EXPECT_EQ(Post("/v1/watch/stop", "", "application/x-www-form-urlencoded").status, 409);
  EXPECT_EQ(Post("/v1/failed/retry", "", "application/x-www-form-urlencoded").status, 200);

  const Answer charset =
      Post(start, R"({"session_name":"typed"})", "Application/JSON ; charset=utf-8");
  EXPECT_EQ(charset.status, 200) << charset.body.dump();
  EXPECT_EQ(Post("/v1/watch/stop", "", "application/x-www-form-urlencoded").status, 200);
  const Answer untyped = PostUntyped(start, R"({"session_name":"untyped"})");
  EXPECT_EQ(untyped.status, 200) << untyped.body.dump();
  EXPECT_EQ(untyped.body.value("session_name", ""), "untyped");
}

// Stop and retry take no fields: their body, when there is one, must be a JSON object (400
// otherwise), and an empty one (422 for a field: {"session_name":"x"} sent to stop would stop
// whichever session is active). Nothing is done for a refused body.
TEST_F(ApiTest, StopAndRetryRefuseABodyThatIsNotAnEmptyObject) {
  ASSERT_EQ(Post("/v1/watch/start", R"({"session_name":"kept"})", "application/json").status, 200);
  for (const char* path : {"/v1/watch/stop", "/v1/failed/retry"}) {
    for (const char* body : {"[1]", "not json", "\"stop\"", "{", "null"}) {
      const Answer a = Post(path, body, "application/json");
      EXPECT_EQ(a.status, 400) << path << " " << body;
      EXPECT_TRUE(a.body.contains("error")) << path << " " << body << " " << a.body.dump();
    }
    const Answer field = Post(path, R"({"session_name":"x"})", "application/json");
    EXPECT_EQ(field.status, 422) << path;
    EXPECT_EQ(field.body.value("error", ""),
              "unknown field \"session_name\" (this route takes none)");
  }
  EXPECT_EQ(State(), "watching") << "a refused stop stopped the session";
  EXPECT_EQ(Post("/v1/failed/retry", "{}", "application/json").status, 200);
  EXPECT_EQ(Post("/v1/watch/stop", " {} ", "application/json").status, 200);
  EXPECT_EQ(State(), "idle");
}

// A key named twice in an object is refused 400: {"session_name":"a/b","session_name":"ok"}
// would otherwise be taken with its last value, whatever a check of the first would say.
TEST_F(ApiTest, AKeyNamedTwiceIsRefused400) {
  for (const char* body : {R"({"session_name":"a/b","session_name":"ok"})",
                           R"({"session_name":"ok","session_name":"ok"})",
                           R"({"session_name":null,"session_name":"ok"})"}) {
    const Answer a = Post("/v1/watch/start", body, "application/json");
    EXPECT_EQ(a.status, 400) << body;
    EXPECT_EQ(a.body.value("error", ""), "request body names \"session_name\" twice") << body;
  }
  EXPECT_EQ(State(), "idle") << "nothing was started";
  // Nor is what follows a NUL byte left unread (the parser takes it for the input's end).
  const Answer nul =
      Post("/v1/watch/start", std::string(R"({"session_name":"nul"})") + '\0' + "{{{",
           "application/json");
  EXPECT_EQ(nul.status, 400);
  EXPECT_EQ(nul.body.value("error", ""), "request body is not valid JSON");
  EXPECT_EQ(State(), "idle") << "nothing was started";
  const Answer nested = Post("/v1/failed/retry", R"({"a":{"b":1,"b":2}})", "application/json");
  EXPECT_EQ(nested.status, 400);
  EXPECT_EQ(nested.body.value("error", ""), "request body names \"b\" twice");
  // The same key in two objects is no duplicate (refused here for the field, 422).
  EXPECT_EQ(Post("/v1/watch/start", R"({"x":{"a":1},"y":{"a":1}})", "application/json").status,
            422);
  EXPECT_EQ(Post("/v1/watch/start", R"({"session_name":"once"})", "application/json").status, 200);
}

}  // namespace
}  // namespace nbu::server
