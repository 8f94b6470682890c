#include "server/api.h"

#include "core/layout.h"
#include "telemetry/prometheus.h"
#include "util/log.h"
#include "util/uuid.h"

#include <httplib.h>

#include <map>
#include <memory>
#include <thread>

namespace nbu::server {
namespace {

void Json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

void Error(httplib::Response& res, int status, const std::string& message) {
  Json(res, status, {{"error", message}});
}

nlohmann::json SessionJson(const core::SessionState& s) {
  return {{"session_name", s.name}, {"started_at", s.started_at}, {"active", s.active}};
}

}  // namespace

Api::Api(core::Service& service, const telemetry::MetricsRegistry& metrics, Clock& clock)
    : service_(service),
      metrics_(metrics),
      clock_(clock),
      server_(std::make_unique<httplib::Server>()) {
  Routes();
}

Api::~Api() { Stop(); }

int Api::Bind(const std::string& host, int port) {
  if (port == 0) return server_->bind_to_any_port(host);
  return server_->bind_to_port(host, port) ? port : -1;
}

void Api::Serve() { server_->listen_after_bind(); }

bool Api::WaitServing(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!server_->is_running()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void Api::Stop() {
  if (server_) server_->stop();
}

void Api::Routes() {
  httplib::Server& s = *server_;
  // cpp-httplib 0.11 checks this limit against Content-Length only: the pre-routing handler
  // below refuses every other way of sending a body before it is read.
  s.set_payload_max_length(size_t{64} * 1024);
  // One request per connection. A refused request's unread body is then never parsed as the
  // next request, and no idle client holds one of the server's threads between requests.
  s.set_keep_alive_max_count(1);

  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    Json(res, 200, {{"status", "ok"}});
  });
  s.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (service_.ready())
      Json(res, 200, {{"status", "ready"}});
    else
      Json(res, 503,
           {{"status", "starting"},
            {"reason", "storage check or start-up recovery still under way"}});
  });
  // POST handlers by path: registered with the server and kept for bodiless requests (below).
  auto posts = std::make_shared<std::map<std::string, httplib::Server::Handler>>();
  auto post = [&](const std::string& path, httplib::Server::Handler handler) {
    (*posts)[path] = handler;
    s.Post(path, std::move(handler));
  };
  post("/v1/watch/start", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!req.body.empty()) {
      const auto body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded()) return Error(res, 400, "request body is not valid JSON");
      if (!body.is_object()) return Error(res, 400, "request body must be a JSON object");
      if (body.contains("session_name") && !body["session_name"].is_null()) {
        if (!body["session_name"].is_string()) {
          return Error(res, 422, "session_name must be a string");
        }
        name = body["session_name"].get<std::string>();
        if (!core::IsValidSessionName(name)) {
          return Error(res, 422,
                       "session_name must be 1-128 characters of [A-Za-z0-9._-], not . or ..");
        }
      }
    }
    if (name.empty()) name = NewUuidV7(clock_.WallNow());
    core::SessionState state;
    std::string error;
    switch (service_.StartWatch(name, &state, &error)) {
      case core::Service::WatchError::kNone: return Json(res, 200, SessionJson(state));
      case core::Service::WatchError::kAlreadyActive:
        return Json(res, 409,
                    {{"error", "a watch session is already active"}, {"session_name", state.name}});
      default: return Error(res, 503, "cannot persist the session: " + error);
    }
  });
  post("/v1/watch/stop", [this](const httplib::Request&, httplib::Response& res) {
    core::SessionState state;
    std::string error;
    switch (service_.StopWatch(&state, &error)) {
      case core::Service::WatchError::kNone: return Json(res, 200, SessionJson(state));
      case core::Service::WatchError::kNotActive:
        return Error(res, 409, "no watch session is active");
      default: return Error(res, 503, "cannot persist the session: " + error);
    }
  });
  s.Get("/v1/status", [this](const httplib::Request&, httplib::Response& res) {
    Json(res, 200, service_.StatusJson());
  });
  post("/v1/failed/retry", [this](const httplib::Request&, httplib::Response& res) {
    std::vector<std::string> errors;
    size_t left = 0;
    const size_t n = service_.RetryFailed(&errors, &left);
    Json(res, 200, {{"queued", n}, {"left_for_sweeper", left}, {"errors", errors}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(telemetry::RenderPrometheus(metrics_), telemetry::kPrometheusContentType);
  });

  // Runs before any body is read. cpp-httplib 0.11 would read a chunked body, a compressed one
  // (inflated past the limit), or one of a PUT or DELETE without a length, with no bound: they
  // are refused here. A request without Content-Length or Transfer-Encoding has no body (RFC 9112
  // 6.3), as `curl -X POST` sends it, but the library reads such a POST until the connection
  // ends: it is dispatched here. An unknown path gets 404 (405 for a known path, and for any
  // other method) from the error handler below.
  s.set_pre_routing_handler([posts](const httplib::Request& req, httplib::Response& res) {
    if (req.has_header("Transfer-Encoding")) {
      Error(res, 411, "send the body with Content-Length (at most 64 KiB), not chunked");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Content-Encoding") &&
        req.get_header_value("Content-Encoding") != "identity") {
      Error(res, 415, "a compressed body is not accepted");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
      res.status = 404;  // 405 on a known path, by the error handler
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "POST" || req.has_header("Content-Length")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const auto it = posts->find(req.path);
    if (it != posts->end()) {
      it->second(req, res);
    } else {
      res.status = 404;
    }
    return httplib::Server::HandlerResponse::Handled;
  });

  // Known paths with the wrong method: 405; anything else: 404; both as JSON.
  static const char* kPaths[] = {"/healthz",       "/readyz",    "/v1/watch/start",
                                 "/v1/watch/stop", "/v1/status", "/v1/failed/retry",
                                 "/metrics"};
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404) {
      for (const char* p : kPaths) {
        if (req.path == p)
          return Error(res, 405, "method " + req.method + " not allowed on " + req.path);
      }
      return Error(res, 404, "no such route: " + req.method + " " + req.path);
    }
    if (res.status == 413) return Error(res, 413, "request body too large");
    if (res.status >= 400 && res.body.empty()) return Error(res, res.status, "bad request");
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    Error(res, 500, "internal error");
  });
}

}  // namespace nbu::server
