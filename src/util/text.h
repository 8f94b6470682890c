// ASCII text helpers for protocol tokens (header names, connection-string keys, setting values).
// Locale-independent on purpose: std::tolower follows the C locale a library may have changed.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nbu {

constexpr char LowerAscii(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

inline std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = LowerAscii(c);
  return out;
}

inline bool EqualsIgnoreCaseAscii(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return LowerAscii(x) == LowerAscii(y);
         });
}

constexpr bool IsSpaceAscii(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// `s` without the white space (space, tab, CR, LF, FF, VT) at either end.
constexpr std::string_view TrimSpaceAscii(std::string_view s) {
  while (!s.empty() && IsSpaceAscii(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpaceAscii(s.back())) s.remove_suffix(1);
  return s;
}

// Where the user info ("user:password@") of a URL lies, when it has one: [first, second), from
// after "://" (or from the start, for "user:password@host" without a scheme) to just past the
// last '@' before the path. A password may hold '#', '?' or quotes: they do not end it, so this
// runs before a URL is cut at its query or fragment.
inline std::optional<std::pair<size_t, size_t>> UserInfoSpan(std::string_view url) {
  const size_t scheme = url.find("://");
  const size_t from = scheme == std::string_view::npos ? 0 : scheme + 3;
  const size_t at = url.substr(0, url.find('/', from)).rfind('@');
  if (at == std::string_view::npos || at < from) return std::nullopt;
  return std::pair{from, at + 1};
}

// `text` with every occurrence of each non-empty secret replaced by "<redacted>", the secrets in
// the order given (put a longer secret before a part of it).
inline std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets) {
  constexpr std::string_view kRedacted = "<redacted>";
  for (const std::string& s : secrets) {
    if (s.empty()) continue;
    for (size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos)) {
      text.replace(pos, s.size(), kRedacted);
      pos += kRedacted.size();
    }
  }
  return text;
}

}  // namespace nbu
