// The HTTP API (cpp-httplib): health, readiness, watch sessions, status, dead-letter retry and
// Prometheus metrics. Every error is a JSON body {"error": "..."} with a 4xx/5xx status.
#pragma once

#include "core/service.h"
#include "telemetry/metrics.h"
#include "util/log.h"

#include <chrono>
#include <memory>
#include <string>

namespace httplib {
class Server;
}

namespace nbu::server {

class Api {
 public:
  // `post_token`: when not empty, every POST needs `Authorization: Bearer <post_token>` (401
  // otherwise, before its body is parsed; a body is at most 64 KiB); GET routes stay open.
  Api(core::Service& service, const telemetry::MetricsRegistry& metrics, Clock& clock,
      std::string post_token = "");
  ~Api();

  // Binds host:port (port 0 = any free port); returns the bound port or -1.
  int Bind(const std::string& host, int port);
  // Serves until Stop(); call from a dedicated thread after Bind. Returns once every
  // connection is done: a request still arriving is given up within 0.1 s of Stop(), but an
  // answer to a client that reads it slowly can take a few seconds more.
  void Serve();
  // True once Serve listens, within `timeout`. A Stop() before that would find nothing to stop
  // and Serve would run on.
  bool WaitServing(std::chrono::milliseconds timeout);
  void Stop();

 private:
  void Routes();
  core::Service& service_;
  const telemetry::MetricsRegistry& metrics_;
  Clock& clock_;
  const std::string post_token_;
  LogLimiter turned_away_log_{std::chrono::seconds(10)};  // one warning per 10 s
  int listen_fd_ = -1;                                    // the listening socket, once Bind made it
  std::unique_ptr<httplib::Server> server_;               // (uses the members above)
};

}  // namespace nbu::server
