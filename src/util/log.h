// Structured logging: one JSON object per line (timestamp, level, message, fields), thread-safe.
// Lines logged while a thread carries a trace context also get trace_id and span_id.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace nbu {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// The trace context of the work this thread is doing (set by the telemetry layer). Empty = none.
struct LogTraceContext {
  std::string trace_id;
  std::string span_id;
};
LogTraceContext& CurrentLogTraceContext();

// Sets the trace context for the current thread for the lifetime of this object.
class ScopedLogTraceContext {
 public:
  ScopedLogTraceContext(std::string trace_id, std::string span_id);
  ~ScopedLogTraceContext();
  ScopedLogTraceContext(const ScopedLogTraceContext&) = delete;
  ScopedLogTraceContext& operator=(const ScopedLogTraceContext&) = delete;

 private:
  LogTraceContext saved_;
};

void SetLogLevel(LogLevel level);
bool ParseLogLevel(std::string_view text, LogLevel* out);
// Replaces the output (stdout by default); tests use it to capture lines. Not thread-safe with
// concurrent logging: call before starting threads.
void SetLogSinkForTest(std::function<void(const std::string&)> sink);

void Log(LogLevel level, std::string_view message,
         nlohmann::json fields = nlohmann::json::object());
inline void LogDebug(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  Log(LogLevel::kDebug, m, std::move(f));
}
inline void LogInfo(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  Log(LogLevel::kInfo, m, std::move(f));
}
inline void LogWarn(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  Log(LogLevel::kWarn, m, std::move(f));
}
inline void LogError(std::string_view m, nlohmann::json f = nlohmann::json::object()) {
  Log(LogLevel::kError, m, std::move(f));
}

// RFC 3339 UTC timestamp with milliseconds, e.g. 2026-11-28T18:04:47.123Z.
std::string FormatTimestamp(std::chrono::system_clock::time_point t);

// Lets one occurrence of a repeated log line through per interval and counts the rest, so a
// failure that repeats for thousands of files at every scan does not flood the log (its counter
// and the status still see every one). Thread-safe.
class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::steady_clock::duration interval) : interval_(interval) {}
  // True when the occurrence at `now` is to be logged; then *held_back is how many were not
  // since the last one let through. One that is `news` (it says something the last did not) is
  // let through whenever it comes.
  bool Allow(std::chrono::steady_clock::time_point now, uint64_t* held_back, bool news = false);

 private:
  const std::chrono::steady_clock::duration interval_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point next_{};  // guarded by mu_
  uint64_t held_back_ = 0;                        // guarded by mu_
};

}  // namespace nbu
