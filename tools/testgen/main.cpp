// nfs-testgen: writes test files into the NFS incoming directory on request (see docs/testgen.md).
#include "testgen/config.h"
#include "testgen/generator.h"
#include "testgen/http_api.h"
#include "util/clock.h"
#include "util/listen_socket.h"
#include "util/log.h"

#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

namespace {

using nbu::testgen::Config;

// Exit codes: 0 clean shutdown, 1 runtime failure (e.g. the port is taken), 2 bad configuration.
constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

int PrintConfigVars() {
  for (const auto& name : nbu::testgen::ConfigVarNames()) std::cout << name << "\n";
  return 0;
}

// For container health checks: GET /healthz on the configured port of this host.
int HealthCheck(const Config& config) {
  httplib::Client client("127.0.0.1", config.http_port);
  client.set_connection_timeout(2);
  client.set_read_timeout(2);
  const auto res = client.Get("/healthz");
  return res && res->status == 200 ? 0 : 1;
}

int Serve(const Config& config, const sigset_t& signals) {
  nbu::testgen::Generator generator(config.output_dir, nbu::RealClock::Instance());
  httplib::Server server;
  nbu::testgen::RegisterRoutes(server, generator, config);
  server.set_socket_options(nbu::ReuseAddressOnly);
  if (!server.bind_to_port(config.http_host, config.http_port)) {
    std::fprintf(
        stderr,
        "nfs-testgen: GEN_HTTP_HOST, GEN_HTTP_PORT: cannot listen on %s:%d (not an address "
        "of this host, or the port is taken)\n",
        config.http_host.c_str(), config.http_port);
    return kExitConfig;
  }
  // SIGTERM/SIGINT arrive here (blocked in every thread) and stop the server.
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    nbu::LogInfo("signal received, shutting down", {{"signal", strsignal(sig)}});
    server.stop();
  });
  nbu::LogInfo("nfs-testgen listening", {{"host", config.http_host},
                                         {"port", config.http_port},
                                         {"output_dir", config.output_dir},
                                         {"write_mode", ToString(config.write_mode)}});
  const bool listened = server.listen_after_bind();
  if (!listened) ::kill(::getpid(), SIGTERM);  // release the waiter
  waiter.join();
  (void)generator.Stop();  // finishes the file in progress; kConflict when idle is fine
  nbu::LogInfo("nfs-testgen stopped");
  return listened ? 0 : kExitRuntime;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string arg = argc > 1 ? argv[1] : "";
  if (arg == "--config-vars") return PrintConfigVars();
  const auto loaded = nbu::testgen::LoadConfig([](const char* n) { return std::getenv(n); });
  if (!loaded.errors.empty()) {
    for (const auto& e : loaded.errors) std::fprintf(stderr, "nfs-testgen: %s\n", e.c_str());
    return kExitConfig;
  }
  if (arg == "--healthcheck") return HealthCheck(loaded.config);
  if (!arg.empty()) {
    std::fprintf(stderr, "usage: nfs-testgen [--config-vars | --healthcheck]\n");
    return kExitConfig;
  }
  nbu::SetLogLevel(loaded.config.log_level);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts
  return Serve(loaded.config, signals);
}
