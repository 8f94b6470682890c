// Test support: a stand-in token endpoint (cpp-httplib on 127.0.0.1, port 0) that records every
// request and answers with a scripted handler, plus small helpers shared by the credential tests.
#pragma once

#include "azure/url.h"
#include "support/process.h"

#include <httplib.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace nbu::azure::test {

struct Recorded {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;  // decoded
  std::map<std::string, std::string> form;   // decoded x-www-form-urlencoded body
  httplib::Headers headers;
  std::string body;
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

inline std::map<std::string, std::string> DecodeForm(const std::string& text) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : SplitQuery(text)) out[UrlDecode(k)] = UrlDecode(v);
  return out;
}

class StandIn {
 public:
  using Handler = std::function<void(const Recorded&, httplib::Response&)>;

  // Plain HTTP; with `cert_dir` (holding cert.pem and key.pem, see MakeSelfSignedCert), HTTPS.
  explicit StandIn(Handler handler, const std::string& cert_dir = "")
      : handler_(std::move(handler)),
        server_(cert_dir.empty()
                    ? std::make_unique<httplib::Server>()
                    : std::make_unique<httplib::SSLServer>((cert_dir + "/cert.pem").c_str(),
                                                           (cert_dir + "/key.pem").c_str())),
        scheme_(cert_dir.empty() ? "http" : "https") {
    auto serve = [this](const httplib::Request& req, httplib::Response& res) {
      Recorded r;
      r.method = req.method;
      r.path = req.path;
      for (const auto& [k, v] : req.params) r.query[k] = v;
      r.headers = req.headers;
      r.body = req.body;
      if (req.get_header_value("Content-Type") == "application/x-www-form-urlencoded") {
        r.form = DecodeForm(req.body);
      }
      {
        std::lock_guard lock(mu_);
        requests_.push_back(r);
      }
      handler_(r, res);
    };
    if (!server_->is_valid()) throw std::runtime_error("stand-in: bad certificate or key");
    server_->Get(".*", serve);
    server_->Post(".*", serve);
    server_->Put(".*", serve);
    server_->Delete(".*", serve);
    port_ = server_->bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("stand-in: cannot bind 127.0.0.1");
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    // The thread cannot be stopped before it listens (cpp-httplib 0.11), nor left running.
    if (!::nbu::test::WaitFor([&] { return server_->is_running(); }, std::chrono::seconds(30))) {
      std::fputs("stand-in: the server did not start listening within 30 s\n", stderr);
      std::abort();
    }
  }
  ~StandIn() {
    server_->stop();
    thread_.join();
  }
  StandIn(const StandIn&) = delete;
  StandIn& operator=(const StandIn&) = delete;

  int port() const { return port_; }
  std::string url() const { return scheme_ + "://127.0.0.1:" + std::to_string(port_); }
  std::string authority() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<Recorded> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  size_t count() const {
    std::lock_guard lock(mu_);
    return requests_.size();
  }

 private:
  Handler handler_;
  std::unique_ptr<httplib::Server> server_;
  std::string scheme_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<Recorded> requests_;
};

inline void Json(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

// An env lookup over a fixed map (unset when absent or empty).
inline std::function<std::optional<std::string>(const std::string&)> MapEnv(
    std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

// A loopback port with nothing listening (connections are refused at once).
inline int ClosedLoopbackPort() { return nbu::test::FreeLoopbackPort(); }

// Writes an executable shell script.
inline void WriteScript(const std::string& path, const std::string& body) {
  nbu::test::WriteFile(path, "#!/bin/sh\n" + body);
  ::chmod(path.c_str(), 0755);
}

// Runs a shell command; true on exit 0.
inline bool Shell(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }

// A self-signed certificate for 127.0.0.1 (subjectAltName=IP:127.0.0.1) and its RSA key, made
// with the openssl CLI: <dir>/cert.pem, <dir>/key.pem and <dir>/both.pem (cert + key).
inline bool MakeSelfSignedCert(const std::string& dir) {
  return Shell(
             "openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj /CN=127.0.0.1"
             " -addext subjectAltName=IP:127.0.0.1 -keyout '" +
             dir + "/key.pem' -out '" + dir + "/cert.pem' >/dev/null 2>&1") &&
         Shell("cat '" + dir + "/cert.pem' '" + dir + "/key.pem' > '" + dir + "/both.pem'");
}

}  // namespace nbu::azure::test
