// A generation job as requested through the API, and the strict parsing of the request body.
#pragma once

#include "testgen/config.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nbu::testgen {

inline constexpr double kMaxIntervalS = 86400;
inline constexpr uint64_t kMaxSizeBytes = 100ULL << 30;  // fits the 100 GiB staging volume
inline constexpr uint64_t kMaxCount = 1'000'000;         // the name's sequence has 6 digits

struct JobSpec {
  std::string session_name = "test-session";
  double interval_s = 2;  // pause between the starts of two files
  uint64_t size_bytes = 65536;
  uint64_t count = 10;  // 0: until stopped
  WriteMode write_mode = WriteMode::kInPlace;
};

// Why a request was refused: HTTP status (400 malformed or wrong type, 422 out of range),
// a machine-readable code, the field at fault (may be empty) and a message for people.
struct JobError {
  int http_status = 400;
  std::string code;
  std::string field;
  std::string message;
};

struct JobParse {
  std::optional<JobSpec> spec;
  JobError error;  // meaningful when !spec
};

// Parses a POST /v1/generate/start body. Session names follow the uploader's own rule
// (core::IsNewSessionName). An empty body means all defaults. Unknown fields are
// refused (400) so that a typo does not silently fall back to a default.
JobParse ParseJobSpec(std::string_view body, WriteMode default_mode);

}  // namespace nbu::testgen
