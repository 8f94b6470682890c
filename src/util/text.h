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

// `text` with every occurrence of each non-empty secret replaced by "<redacted>", in one pass
// over it: at each place the first secret given that matches there (put a longer secret before a
// part of it), and nothing matched inside a replacement (a short secret, "e" or "red", would
// otherwise nest one in another).
inline std::string ScrubSecrets(const std::string& text, const std::vector<std::string>& secrets) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const auto match = std::find_if(secrets.begin(), secrets.end(), [&](const std::string& s) {
      return !s.empty() && text.compare(pos, s.size(), s) == 0;
    });
    if (match == secrets.end()) {
      out.push_back(text[pos++]);
    } else {
      out.append("<redacted>");
      pos += match->size();
    }
  }
  return out;
}

}  // namespace nbu
