#include "testgen/http_api.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace nbu::testgen {
namespace {

using nlohmann::json;

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump() + "\n", "application/json");
}

void ReplyError(httplib::Response& res, int status, const std::string& code,
                const std::string& message, const std::string& field = {}) {
  json body = {{"error", code}, {"message", message}};
  if (!field.empty()) body["field"] = field;
  Reply(res, status, body);
}

json StatusJson(const GeneratorStatus& s) {
  json j = {{"state", ToString(s.state)},
            {"session_name", s.spec.session_name},
            {"files_written", s.files_written},
            {"bytes_written", s.bytes_written},
            {"write_mode", ToString(s.spec.write_mode)},
            {"interval_s", s.spec.interval_s},
            {"size_bytes", s.spec.size_bytes},
            {"count", s.spec.count},
            {"last_file", s.last_file}};
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

void HandleStart(Generator& gen, const Config& config, const httplib::Request& req,
                 httplib::Response& res) {
  const JobParse parsed = ParseJobSpec(req.body, config.write_mode);
  if (!parsed.spec) {
    const JobError& e = parsed.error;
    return ReplyError(res, e.http_status, e.code,
                      e.field.empty() ? e.message : e.field + " " + e.message, e.field);
  }
  const Status s = gen.Start(*parsed.spec);
  if (s.kind() == ErrorKind::kConflict) return ReplyError(res, 409, "already_running", s.message());
  if (!s.ok()) return ReplyError(res, 500, "io_error", s.ToString());
  Reply(res, 202, StatusJson(gen.Snapshot()));
}

void HandleStop(Generator& gen, httplib::Response& res) {
  const Status s = gen.Stop();
  if (!s.ok()) return ReplyError(res, 409, "not_running", s.message());
  Reply(res, 200, StatusJson(gen.Snapshot()));
}

}  // namespace

void RegisterRoutes(httplib::Server& server, Generator& generator, const Config& config) {
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, {{"status", "ok"}});
  });
  server.Post("/v1/generate/start",
              [&generator, &config](const httplib::Request& req, httplib::Response& res) {
                HandleStart(generator, config, req, res);
              });
  server.Post("/v1/generate/stop", [&generator](const httplib::Request&, httplib::Response& res) {
    HandleStop(generator, res);
  });
  server.Get("/v1/generate/status", [&generator](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, StatusJson(generator.Snapshot()));
  });
  // Routes that matched nothing, and errors cpp-httplib raises itself, answer JSON too.
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      return ReplyError(res, 404, "not_found", "no route for " + req.method + " " + req.path);
    }
    // cpp-httplib 0.11 refuses a POST without Content-Length before routing.
    if (res.status == 400 && req.method == "POST" && !req.has_header("Content-Length")) {
      return ReplyError(res, 400, "length_required",
                        "POST needs a Content-Length header (send a body, e.g. curl -d '')");
    }
    ReplyError(res, res.status, "http_error", "HTTP " + std::to_string(res.status));
  });
}

}  // namespace nbu::testgen
