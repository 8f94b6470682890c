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

// `text` with every occurrence of each non-empty secret replaced by "<redacted>": the spans of
// all of them, found in the text as given, and overlapping spans merged into one, so that no
// part of a secret stays (a shorter secret overlapping a longer one would otherwise leave its
// rest) and nothing is matched inside a replacement.
inline std::string ScrubSecrets(const std::string& text, const std::vector<std::string>& secrets) {
  std::vector<std::pair<size_t, size_t>> spans;  // [begin, end)
  for (const std::string& s : secrets) {
    if (s.empty()) continue;
    for (size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos + 1)) {
      spans.emplace_back(pos, pos + s.size());
    }
  }
  std::sort(spans.begin(), spans.end());
  std::string out;
  out.reserve(text.size());
  size_t done = 0;
  for (size_t i = 0; i < spans.size();) {
    auto [begin, finish] = spans[i];
    for (++i; i < spans.size() && spans[i].first < finish; ++i) {
      finish = std::max(finish, spans[i].second);
    }
    out.append(text, done, begin - done).append("<redacted>");
    done = finish;
  }
  return out.append(text, done, std::string::npos);
}

}  // namespace nbu
