#include "testgen/config.h"

#include <charconv>

namespace nbu::testgen {
namespace {

// Returns the value of `name`, or nullopt when it is unset or empty.
std::optional<std::string> Get(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

void ReadPort(const EnvLookup& env, Config& c, std::vector<std::string>& errors) {
  const auto v = Get(env, "GEN_HTTP_PORT");
  if (!v) return;
  int port = 0;
  const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), port);
  if (ec != std::errc() || end != v->data() + v->size() || port < 1 || port > 65535) {
    errors.push_back("GEN_HTTP_PORT: '" + *v + "' is not a TCP port (1-65535)");
    return;
  }
  c.http_port = port;
}

}  // namespace

const char* ToString(WriteMode mode) { return mode == WriteMode::kRename ? "rename" : "in-place"; }

std::optional<WriteMode> ParseWriteMode(std::string_view text) {
  if (text == "in-place") return WriteMode::kInPlace;
  if (text == "rename") return WriteMode::kRename;
  return std::nullopt;
}

ConfigResult LoadConfig(const EnvLookup& env) {
  ConfigResult r;
  Config& c = r.config;
  if (auto v = Get(env, "GEN_OUTPUT_DIR")) c.output_dir = *v;
  if (auto v = Get(env, "GEN_HTTP_HOST")) c.http_host = *v;
  ReadPort(env, c, r.errors);
  if (auto v = Get(env, "GEN_WRITE_MODE")) {
    if (auto mode = ParseWriteMode(*v))
      c.write_mode = *mode;
    else
      r.errors.push_back("GEN_WRITE_MODE: '" + *v + "' is not one of in-place, rename");
  }
  if (auto v = Get(env, "GEN_LOG_LEVEL"); v && !ParseLogLevel(*v, &c.log_level)) {
    r.errors.push_back("GEN_LOG_LEVEL: '" + *v + "' is not one of debug, info, warn, error");
  }
  return r;
}

const std::vector<std::string>& ConfigVarNames() {
  static const std::vector<std::string> kNames = {
      "GEN_OUTPUT_DIR", "GEN_HTTP_HOST", "GEN_HTTP_PORT", "GEN_WRITE_MODE", "GEN_LOG_LEVEL"};
  return kNames;
}

}  // namespace nbu::testgen
