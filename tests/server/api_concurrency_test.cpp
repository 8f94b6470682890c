// The control API in-process over a started service (real Azurite), from many clients at once:
// probes, status and metrics reads, watch starts and stops, and idle connections past the room
// of its connection pool. The concurrency test of the API, also run under ThreadSanitizer.
#include "server/api.h"

#include "core/session_store.h"

#include "support/azurite.h"
#include "support/azurite_client.h"
#include "support/process.h"
#include "support/test_config.h"

#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace nbu::server {
namespace {

using namespace std::chrono_literals;

TEST(ApiConcurrencyTest, ClientsAtOnceGetWholeAnswersWhileIdleConnectionsAreTurnedAway) {
  test::Azurite azurite;
  test::TempDir dir;
  core::Config config = test::TestConfig(dir, "api");
  config.replica_id = "api-test";
  auto blob = test::MakeBlobClient(azurite, config.azure_container);
  telemetry::MetricsRegistry metrics;
  telemetry::Tracer tracer{RealClock::Instance()};
  core::Service service(config, RealClock::Instance(), *blob, metrics, tracer);
  service.Start();
  Api api(service, metrics, RealClock::Instance());
  const int port = api.Bind("127.0.0.1", 0);
  ASSERT_GT(port, 0);
  std::thread serve([&] { api.Serve(); });
  struct Stopper {  // on every way out, an ASSERT's too
    Api& api;
    std::thread& serve;
    ~Stopper() {
      api.Stop();
      serve.join();
    }
  } stopper{api, serve};
  ASSERT_TRUE(api.WaitServing(10s));
  ASSERT_TRUE(test::WaitFor([&] { return service.started(); }, 30s));

  // Each route once first. cpp-httplib (not built with ThreadSanitizer) builds function-local
  // static regexes on first use, behind guards whose fast path TSan cannot see: a first use on
  // two threads at once would be reported as a race inside the library. Served one at a time,
  // the pool's mutex orders each first use before every later request.
  {
    httplib::Client c("127.0.0.1", port);
    for (const char* get : {"/healthz", "/readyz", "/v1/status", "/metrics"}) {
      EXPECT_TRUE(c.Get(get)) << get;
    }
    EXPECT_TRUE(c.Post("/v1/watch/stop", "", "application/json"));
    EXPECT_TRUE(c.Post("/v1/watch/stop"));
  }
  // A probe while idle connections are open, more than the pool's threads (32) and waiting room
  // (64) together: they hold no thread, so it is answered (the read timeout only bounds the
  // test), and none of them is answered or closed.
  const auto probe = [&] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(8);
    const httplib::Result r = c.Get("/healthz");
    return r ? r->status : -1;
  };
  {
    test::IdleConnections idle(port, 120);
    ASSERT_TRUE(idle.all_open());
    EXPECT_EQ(probe(), 200);
    std::vector<pollfd> fds;
    for (const int fd : idle.fds()) fds.push_back({fd, POLLIN, 0});
    EXPECT_EQ(::poll(fds.data(), fds.size(), 200), 0) << "an idle connection was answered";
  }
  // Clients that send a whole request, then neither read nor close, more than the threads and
  // the places for new connections together, within the second an answered connection may
  // linger: they are served, since no thread waits for their close. One arrives every 3 ms (150
  // in about 0.45 s): a burst at once could outrun the threads on a busy machine, where the
  // accepting thread fills the 64 places before a thread runs, and the extra ones are turned
  // away, 503 (80 of 150 served beside another test). With a thread waiting 1 s for each close,
  // at most the 32 threads and 64 places are served (46 of 150 in a burst at once).
  {
    std::vector<int> silent;
    for (int i = 0; i < 150; ++i) {
      const int fd = test::ConnectLoopback(port);
      ASSERT_GE(fd, 0);
      ASSERT_TRUE(test::SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
      silent.push_back(fd);
      std::this_thread::sleep_for(3ms);
    }
    int served = 0;
    int turned_away = 0;
    for (const int fd : silent) {
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char head[32];
      const ssize_t n = ::recv(fd, head, sizeof head, 0);
      const std::string line = n > 0 ? std::string(head, static_cast<size_t>(n)) : "";
      served += line.rfind("HTTP/1.1 200 ", 0) == 0 ? 1 : 0;
      turned_away += line.rfind("HTTP/1.1 503 ", 0) == 0 ? 1 : 0;
    }
    for (const int fd : silent) ::close(fd);
    EXPECT_EQ(served + turned_away, 150) << "answers other than 200 and 503, or none";
    EXPECT_GE(served, 120);
  }
  // Past the 256 that may wait to send their request, those waiting longest are answered 503
  // to make room; a probe is still answered.
  test::IdleConnections idle(port, 300);
  ASSERT_TRUE(idle.all_open());
  std::vector<pollfd> fds;
  for (const int fd : idle.fds()) fds.push_back({fd, POLLIN, 0});
  EXPECT_GT(::poll(fds.data(), fds.size(), 5000), 0);
  int shed = 0;
  for (const auto& p : fds) {
    if ((p.revents & POLLIN) == 0) continue;
    char buf[512];
    const ssize_t n = ::recv(p.fd, buf, sizeof buf, 0);
    if (n > 0 && std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 503 ", 0) == 0) ++shed;
  }
  EXPECT_GT(shed, 0);
  EXPECT_EQ(probe(), 200);

  // Clients at once while the idle connections go away: each answer is whole, with a status the
  // route gives, and JSON where JSON is due.
  std::mutex mu;
  std::vector<std::string> bad;  // guarded by mu
  std::atomic<int> ok{0};
  std::atomic<int> started{0};  // watch starts answered 200
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t) {
    clients.emplace_back([&, t] {
      // 30 answers each that are not 503 (turned away while the idle connections last).
      for (int i = 0, tries = 0; i < 30 && tries < 3000; ++tries) {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(20);
        const std::string name = "s" + std::to_string(t) + "-" + std::to_string(i);
        const int route = (t + i) % 5;
        httplib::Result r = [&] {
          switch (route) {
            case 0: return c.Get("/healthz");
            case 1: return c.Get("/v1/status");
            case 2: return c.Get("/metrics");
            case 3:
              return c.Post("/v1/watch/start", R"({"session_name":")" + name + "\"}",
                            "application/json");
            default: return c.Post("/v1/watch/stop", "", "application/json");
          }
        }();
        // Turned away: answered 503 at once, or closed before the request was written.
        if ((r && r->status == 503 && r->body.find("too many connections") != std::string::npos) ||
            r.error() == httplib::Error::Write) {
          std::this_thread::sleep_for(5ms);
          continue;
        }
        ++i;
        static const std::set<int> kExpected = {200, 409, 503};
        const bool json = r && (route != 2 || r->status != 200);
        if (!r || kExpected.count(r->status) == 0 ||
            (json && nlohmann::json::parse(r->body, nullptr, false).is_discarded())) {
          std::lock_guard lock(mu);
          bad.push_back(r ? std::to_string(r->status) + " " + r->body
                          : "no answer: " + httplib::to_string(r.error()));
        } else {
          ++ok;
          if (route == 3 && r->status == 200) ++started;
        }
      }
    });
  }
  std::this_thread::sleep_for(300ms);
  idle.Close();
  for (auto& c : clients) c.join();
  EXPECT_TRUE(bad.empty()) << bad.size() << " bad answers, the first: " << bad.front();
  EXPECT_EQ(ok.load(), 6 * 30);
  EXPECT_GT(started.load(), 0);
  // The session the status shows is the one the session file holds.
  const auto status = service.StatusJson();
  core::SessionStore store(config.processing_root);
  const auto saved = store.Load();
  ASSERT_TRUE(saved.ok());
  ASSERT_TRUE(*saved);
  EXPECT_EQ(status["session"]["name"], (*saved)->name);
  EXPECT_EQ(status["session"]["active"], (*saved)->active);
  EXPECT_TRUE(service.Shutdown(5s));
}

}  // namespace
}  // namespace nbu::server
