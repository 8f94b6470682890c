// Test support: captures the service's log lines while it lives, and puts the log back (stdout,
// level info) on every way out of a test, an ASSERT's too.
#pragma once

#include <nlohmann/json.hpp>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "util/log.h"

namespace nbu::test {

class CapturedLog {
 public:
  // Keeps the lines that contain `filter` (all when empty), logged at `level` or above.
  explicit CapturedLog(std::string filter = "", LogLevel level = LogLevel::kInfo)
      : filter_(std::move(filter)) {
    SetLogLevel(level);
    SetLogSinkForTest([this](const std::string& line) {
      if (line.find(filter_) == std::string::npos) return;
      std::lock_guard lock(mu_);
      lines_.push_back(line);
    });
  }
  ~CapturedLog() { Stop(); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  // Stops capturing; the lines captured so far are kept.
  void Stop() {
    SetLogSinkForTest(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }
  std::vector<std::string> Lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }
  std::vector<nlohmann::json> Json() const {
    std::vector<nlohmann::json> out;
    for (const std::string& line : Lines()) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  // Each line's message.
  std::vector<std::string> Messages() const {
    std::vector<std::string> out;
    for (const nlohmann::json& line : Json()) out.push_back(line["message"].get<std::string>());
    return out;
  }
  void Clear() {
    std::lock_guard lock(mu_);
    lines_.clear();
  }

 private:
  const std::string filter_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;  // guarded by mu_
};

}  // namespace nbu::test
