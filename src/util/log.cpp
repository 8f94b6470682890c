#include "util/log.h"

#include "util/utf8.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace nbu {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_mu;
std::function<void(const std::string&)> g_sink;  // guarded by g_mu

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

}  // namespace

LogTraceContext& CurrentLogTraceContext() {
  thread_local LogTraceContext ctx;
  return ctx;
}

ScopedLogTraceContext::ScopedLogTraceContext(std::string trace_id, std::string span_id)
    : saved_(CurrentLogTraceContext()) {
  CurrentLogTraceContext() = {std::move(trace_id), std::move(span_id)};
}

ScopedLogTraceContext::~ScopedLogTraceContext() { CurrentLogTraceContext() = saved_; }

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  if (text == "debug")
    *out = LogLevel::kDebug;
  else if (text == "info")
    *out = LogLevel::kInfo;
  else if (text == "warn" || text == "warning")
    *out = LogLevel::kWarn;
  else if (text == "error")
    *out = LogLevel::kError;
  else
    return false;
  return true;
}

void SetLogSinkForTest(std::function<void(const std::string&)> sink) {
  std::lock_guard lock(g_mu);
  g_sink = std::move(sink);
}

std::string FormatTimestamp(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

void Log(LogLevel level, std::string_view message, nlohmann::json fields) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  nlohmann::json line = nlohmann::json::object();
  line["timestamp"] = FormatTimestamp(std::chrono::system_clock::now());
  line["level"] = LevelName(level);
  line["message"] = message;
  const LogTraceContext& ctx = CurrentLogTraceContext();
  if (!ctx.trace_id.empty()) {
    line["trace_id"] = ctx.trace_id;
    line["span_id"] = ctx.span_id;
  }
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) line[k] = std::move(v);
  }
  // Invalid UTF-8 in a file name must not throw: its bytes are written as \xNN.
  std::string text = DumpJson(line);
  std::lock_guard lock(g_mu);
  if (g_sink) {
    g_sink(text);
    return;
  }
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

bool LogLimiter::Allow(std::chrono::steady_clock::time_point now, uint64_t* held_back, bool news) {
  std::lock_guard lock(mu_);
  if (now < next_ && !news) {
    ++held_back_;
    return false;
  }
  next_ = now + interval_;
  *held_back = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace nbu
