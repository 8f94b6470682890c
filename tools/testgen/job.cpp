#include "testgen/job.h"

#include "core/layout.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>
#include <map>

namespace nbu::testgen {
namespace {

using nlohmann::json;

JobError Invalid(int status, std::string code, std::string field, std::string message) {
  return {status, std::move(code), std::move(field), std::move(message)};
}

// Each field's reader: returns an error when the value has the wrong type or range.
using FieldReader = std::function<std::optional<JobError>(const json&, JobSpec&)>;

std::optional<JobError> ReadSession(const json& v, JobSpec& spec) {
  if (!v.is_string()) return Invalid(400, "invalid_type", "session_name", "must be a string");
  const auto name = v.get<std::string>();
  if (!core::IsNewSessionName(name)) {
    return Invalid(422, "invalid_value", "session_name",
                   "must be 1-128 characters of [A-Za-z0-9._-], not ending in '.'");
  }
  spec.session_name = name;
  return std::nullopt;
}

std::optional<JobError> ReadInterval(const json& v, JobSpec& spec) {
  if (!v.is_number()) return Invalid(400, "invalid_type", "interval_s", "must be a number");
  const auto s = v.get<double>();
  if (!std::isfinite(s) || s < 0 || s > kMaxIntervalS) {
    return Invalid(422, "out_of_range", "interval_s", "must be between 0 and 86400 seconds");
  }
  spec.interval_s = s;
  return std::nullopt;
}

// Reads a non-negative integer field no larger than `max`.
std::optional<JobError> ReadCount(const json& v, const char* field, uint64_t max, uint64_t& out) {
  if (!v.is_number_integer()) {
    return Invalid(400, "invalid_type", field, "must be an integer");
  }
  if (v.is_number_unsigned() ? v.get<uint64_t>() > max : v.get<int64_t>() < 0) {
    return Invalid(422, "out_of_range", field, "must be between 0 and " + std::to_string(max));
  }
  out = v.get<uint64_t>();
  return std::nullopt;
}

std::optional<JobError> ReadMode(const json& v, JobSpec& spec) {
  if (!v.is_string()) return Invalid(400, "invalid_type", "write_mode", "must be a string");
  const auto mode = ParseWriteMode(v.get<std::string>());
  if (!mode) return Invalid(422, "invalid_value", "write_mode", "must be in-place or rename");
  spec.write_mode = *mode;
  return std::nullopt;
}

const std::map<std::string, FieldReader>& Readers() {
  static const std::map<std::string, FieldReader> kReaders = {
      {"session_name", ReadSession},
      {"interval_s", ReadInterval},
      {"size_bytes",
       [](const json& v, JobSpec& s) {
         return ReadCount(v, "size_bytes", kMaxSizeBytes, s.size_bytes);
       }},
      {"count",
       [](const json& v, JobSpec& s) { return ReadCount(v, "count", kMaxCount, s.count); }},
      {"write_mode", ReadMode},
  };
  return kReaders;
}

}  // namespace

JobParse ParseJobSpec(std::string_view body, WriteMode default_mode) {
  JobSpec spec;
  spec.write_mode = default_mode;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return {spec, {}};
  const json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return {std::nullopt, Invalid(400, "malformed_json", "", "the body is not valid JSON")};
  }
  if (!doc.is_object()) {
    return {std::nullopt, Invalid(400, "invalid_type", "", "the body must be a JSON object")};
  }
  for (const auto& [key, value] : doc.items()) {
    const auto it = Readers().find(key);
    if (it == Readers().end()) {
      return {std::nullopt, Invalid(400, "unknown_field", key, "is not a known field")};
    }
    if (auto err = it->second(value, spec)) return {std::nullopt, *err};
  }
  return {spec, {}};
}

}  // namespace nbu::testgen
