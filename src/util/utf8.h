// UTF-8 checks for text made of producers' bytes (file names), and JSON that carries it.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace nbu {

// The well-formed UTF-8 sequence (Unicode table 3-7: no overlong forms, no surrogates, nothing
// past U+10FFFF) that starts at s[i] >= 0x80: its length, and its code point in *cp; 0 when none
// does, and then only s[i] is taken as a stray byte, as Go's decoder (and so rclone) takes it.
size_t DecodeUtf8(std::string_view s, size_t i, char32_t* cp);

// Appends `cp` (a scalar value: at most U+10FFFF, not a surrogate) as UTF-8.
void AppendUtf8(std::string& out, char32_t cp);

// `s` with each byte that is not part of well-formed UTF-8 written as \xNN (upper-case hex): a
// name stays recognisable where U+FFFD would make caf\xE9 and caf\xE8 look alike. A backslash
// of the text's own is kept, so this is for reading, not one-to-one.
std::string EscapeInvalidUtf8(std::string_view s);

// j.dump(indent), with every string (keys too) that is not UTF-8 escaped as EscapeInvalidUtf8
// does, where nlohmann's strict dump would throw.
std::string DumpJson(const nlohmann::json& j, int indent = -1);

}  // namespace nbu
