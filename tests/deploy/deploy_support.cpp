#include "deploy/deploy_support.h"

#include <httplib.h>

#include <sstream>
#include <stdexcept>

namespace nbu::test {
namespace {

HttpJson ToHttpJson(const httplib::Result& res) {
  HttpJson out;
  if (!res) return out;
  out.status = res->status;
  out.body = nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (out.body.is_discarded()) out.body = nullptr;
  return out;
}

httplib::Client Client(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5);
  c.set_read_timeout(30);
  return c;
}

}  // namespace

HttpJson GetJson(int port, const std::string& path) { return ToHttpJson(Client(port).Get(path)); }

HttpJson PostJson(int port, const std::string& path, const std::string& body) {
  return ToHttpJson(Client(port).Post(path, body, "application/json"));
}

bool WaitHealthy(int port, const std::string& path, std::chrono::milliseconds timeout) {
  return WaitFor([&] { return GetJson(port, path).status == 200; }, timeout);
}

Testgen::Testgen(const std::string& output_dir, const std::string& log_path,
                 std::map<std::string, std::string> extra_env)
    : port_(FreeLoopbackPort()) {
  extra_env["GEN_OUTPUT_DIR"] = output_dir;
  extra_env["GEN_HTTP_HOST"] = "127.0.0.1";
  extra_env["GEN_HTTP_PORT"] = std::to_string(port_);
  proc_ = std::make_unique<ChildProcess>(std::vector<std::string>{BinaryPath("nfs-testgen")},
                                         extra_env, log_path);
  // A job stops at the end of the file it is writing: a few seconds at most at the tests' paces.
  proc_->CheckAtEnd(std::chrono::seconds(20));
  if (!WaitHealthy(port_, "/healthz", std::chrono::seconds(20))) {
    throw std::runtime_error("nfs-testgen did not become healthy: " + proc_->ReadLog());
  }
}

std::vector<std::string> Testgen::WrittenFiles() const {
  std::vector<std::string> names;
  std::istringstream lines(proc_->ReadLog());
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("message", "") == "file written") {
      names.push_back(j.value("file", ""));
    }
  }
  return names;
}

nlohmann::json Testgen::WaitJobDone(std::chrono::milliseconds timeout) {
  nlohmann::json last;
  WaitFor(
      [&] {
        last = GetJson(port_, "/v1/generate/status").body;
        return last.is_object() && last.value("state", "") != "running";
      },
      timeout);
  return last;
}

}  // namespace nbu::test
