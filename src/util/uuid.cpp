#include "util/uuid.h"

#include "util/crypto.h"

#include <cstdint>
#include <cstring>

namespace nbu {

std::string NewUuidV7(std::chrono::system_clock::time_point now) {
  const auto ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  // Uniqueness, not secrecy: the per-thread generator (seeded from RAND_bytes) is enough, and
  // RAND_bytes per request id showed in profiles.
  std::string b(16, '\0');
  const uint64_t r[2] = {FastRandomU64(), FastRandomU64()};
  std::memcpy(b.data(), r, sizeof r);
  for (int i = 0; i < 6; ++i) {
    b[static_cast<size_t>(i)] = static_cast<char>((ms >> (8 * (5 - i))) & 0xFF);
  }
  b[6] = static_cast<char>(0x70 | (static_cast<unsigned char>(b[6]) & 0x0F));
  b[8] = static_cast<char>(0x80 | (static_cast<unsigned char>(b[8]) & 0x3F));
  const std::string h = HexEncode(b);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20, 12);
}

bool IsUuidV7(const std::string& t) {
  if (t.size() != 36) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (t[i] == '-')) return false;
    if (!dash && !((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'))) return false;
  }
  return t[14] == '7' && (t[19] == '8' || t[19] == '9' || t[19] == 'a' || t[19] == 'b');
}

}  // namespace nbu
