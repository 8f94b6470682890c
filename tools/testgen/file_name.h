// Names and contents of generated files: unique, sortable names and a pseudo-random byte stream
// seeded by the name, so any copy of a file can be checked against its name alone.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nbu::testgen {

// Parts of a generated file name: `20261128T180447.123Z-000042-1a2b3c4d.bin`
// (UTC time with milliseconds, 6-digit sequence within the job, 8 hex random digits).
// Names of one job sort in creation order; the random part keeps jobs and hosts apart.
struct FileNameParts {
  std::chrono::system_clock::time_point time;  // millisecond precision
  uint64_t sequence = 0;                       // 0..999999
  uint32_t random = 0;
};

std::string MakeFileName(const FileNameParts& parts);
// Parses a name made by MakeFileName; nullopt for anything else (strict, fixed width).
std::optional<FileNameParts> ParseFileName(std::string_view name);

// The bytes of a generated file, produced chunk by chunk. Not thread-safe.
class ContentStream {
 public:
  explicit ContentStream(std::string_view file_name);
  // Fills `out` with the next `out.size()` bytes of the stream; chunk sizes do not change the
  // bytes produced.
  void Next(std::string& out);

 private:
  uint64_t state_;
  uint64_t word_ = 0;  // unused bytes of the last generated word, low byte first
  int bytes_left_ = 0;
};

// The whole expected content of a generated file of `size` bytes named `file_name`.
std::string ExpectedContent(std::string_view file_name, uint64_t size);

}  // namespace nbu::testgen
