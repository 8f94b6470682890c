// Support for the deployment tests: JSON over HTTP to a local service, and nfs-testgen run as a
// child process.
#pragma once

#include "support/process.h"

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nbu::test {

struct HttpJson {
  int status = 0;       // 0: no answer (connection refused, timeout)
  nlohmann::json body;  // null when the body is not JSON
};

HttpJson GetJson(int port, const std::string& path);
// POSTs `body` as application/json (an empty body is sent with Content-Length: 0).
HttpJson PostJson(int port, const std::string& path, const std::string& body);
// Waits until GET `path` answers 200.
bool WaitHealthy(int port, const std::string& path, std::chrono::milliseconds timeout);

// nfs-testgen on a free loopback port writing under `output_dir`. Checked at the end of the test
// (ChildProcess::CheckAtEnd): stopped by SIGTERM, exit status 0, no sanitizer's report in its log.
class Testgen {
 public:
  Testgen(const std::string& output_dir, const std::string& log_path,
          std::map<std::string, std::string> extra_env = {});
  int port() const { return port_; }
  ChildProcess& process() { return *proc_; }
  // Names (without directories) of the files the log reports written, in order.
  std::vector<std::string> WrittenFiles() const;
  // Waits until the job is no longer running; returns the final status.
  nlohmann::json WaitJobDone(std::chrono::milliseconds timeout);

 private:
  int port_;
  std::unique_ptr<ChildProcess> proc_;
};

}  // namespace nbu::test
