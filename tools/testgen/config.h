// nfs-testgen configuration: read from GEN_* environment variables and validated as a whole.
#pragma once

#include "util/log.h"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nbu::testgen {

// How a file reaches its final name.
enum class WriteMode {
  kInPlace,  // written under its final name in paced chunks, like an instrument
  kRename,   // written as `.name.XXXXXX`, fsynced, then renamed (like rsync)
};

const char* ToString(WriteMode mode);
std::optional<WriteMode> ParseWriteMode(std::string_view text);

struct Config {
  std::string output_dir = "/mnt/nfs/incoming";  // GEN_OUTPUT_DIR: sessions are created here
  std::string http_host = "127.0.0.1";           // GEN_HTTP_HOST
  int http_port = 8080;                          // GEN_HTTP_PORT
  WriteMode write_mode = WriteMode::kInPlace;    // GEN_WRITE_MODE: default for new jobs
  LogLevel log_level = LogLevel::kInfo;          // GEN_LOG_LEVEL
};

struct ConfigResult {
  Config config;
  // One line per problem, each naming the variable; empty when the configuration is usable.
  std::vector<std::string> errors;
};

// Looks a variable up; returns nullptr when unset. `std::getenv` in production.
using EnvLookup = std::function<const char*(const char*)>;

// Reads every GEN_* variable through `env`. Unset or empty variables keep their defaults.
ConfigResult LoadConfig(const EnvLookup& env);

// Every variable LoadConfig reads, for `nfs-testgen --config-vars`.
const std::vector<std::string>& ConfigVarNames();

}  // namespace nbu::testgen
