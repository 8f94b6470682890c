#include "testgen/file_name.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace nbu::testgen {
namespace {

constexpr size_t kNameLength = 40;  // 20 (time) + 1 + 6 + 1 + 8 + 4 (".bin")

// Reads exactly `digits` decimal digits at `pos`.
std::optional<int> Digits(std::string_view s, size_t pos, size_t digits) {
  int v = 0;
  const char* first = s.data() + pos;
  const auto [end, ec] = std::from_chars(first, first + digits, v);
  if (ec != std::errc() || end != first + digits || *first == '+' || *first == '-') {
    return std::nullopt;
  }
  return v;
}

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// splitmix64: a small, well-mixed generator; quality is ample for test payloads.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

std::string MakeFileName(const FileNameParts& parts) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(parts.time.time_since_epoch()).count();
  const auto secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02d.%03dZ-%06llu-%08x.bin",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000),
                static_cast<unsigned long long>(parts.sequence % 1'000'000), parts.random);
  return buf;
}

std::optional<FileNameParts> ParseFileName(std::string_view name) {
  if (name.size() != kNameLength || name[8] != 'T' || name[15] != '.' || name[19] != 'Z' ||
      name[20] != '-' || name[27] != '-' || name.substr(36) != ".bin") {
    return std::nullopt;
  }
  const auto year = Digits(name, 0, 4), mon = Digits(name, 4, 2), day = Digits(name, 6, 2);
  const auto hour = Digits(name, 9, 2), min = Digits(name, 11, 2), sec = Digits(name, 13, 2);
  const auto milli = Digits(name, 16, 3), seq = Digits(name, 21, 6);
  if (!year || !mon || !day || !hour || !min || !sec || !milli || !seq) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year(*year),
                                        std::chrono::month(static_cast<unsigned>(*mon)),
                                        std::chrono::day(static_cast<unsigned>(*day))};
  if (!ymd.ok() || *hour > 23 || *min > 59 || *sec > 59) return std::nullopt;
  for (size_t i = 28; i < 36; ++i) {
    if (!IsLowerHex(name[i])) return std::nullopt;
  }
  FileNameParts p;
  uint32_t random = 0;
  std::from_chars(name.data() + 28, name.data() + 36, random, 16);
  p.random = random;
  p.sequence = static_cast<uint64_t>(*seq);
  p.time = std::chrono::sys_days(ymd) + std::chrono::hours(*hour) + std::chrono::minutes(*min) +
           std::chrono::seconds(*sec) + std::chrono::milliseconds(*milli);
  return p;
}

ContentStream::ContentStream(std::string_view file_name) : state_(0xCBF29CE484222325ULL) {
  for (const char c : file_name) {  // FNV-1a of the name seeds the stream
    state_ ^= static_cast<unsigned char>(c);
    state_ *= 0x100000001B3ULL;
  }
}

void ContentStream::Next(std::string& out) {
  for (char& c : out) {
    if (bytes_left_ == 0) {
      word_ = SplitMix64(state_);
      bytes_left_ = 8;
    }
    c = static_cast<char>(word_ & 0xFF);
    word_ >>= 8;
    --bytes_left_;
  }
}

std::string ExpectedContent(std::string_view file_name, uint64_t size) {
  std::string out(static_cast<size_t>(size), '\0');
  ContentStream(file_name).Next(out);
  return out;
}

}  // namespace nbu::testgen
