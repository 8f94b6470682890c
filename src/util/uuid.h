// UUID version 7 (RFC 9562): 48-bit Unix milliseconds, version, 74 random bits.
#pragma once

#include <chrono>
#include <string>

namespace nbu {

std::string NewUuidV7(std::chrono::system_clock::time_point now);
// True when `text` is a canonical lower-case UUIDv7 (8-4-4-4-12 hex, version 7, RFC variant).
bool IsUuidV7(const std::string& text);

}  // namespace nbu
