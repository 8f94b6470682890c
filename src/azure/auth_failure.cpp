// Storage's reason for refusing a request's credentials (see auth_failure.h).
#include "azure/auth_failure.h"

#include "util/text.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <regex>
#include <utility>

namespace nbu::azure {
namespace {

// The five named XML entities and numeric references (&#39;, &#x27;); others are kept as
// written.
std::string XmlUnescape(std::string_view text) {
  static constexpr std::array<std::pair<std::string_view, char>, 5> kEntities = {
      {{"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&amp;", '&'}}};
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto it = std::find_if(kEntities.begin(), kEntities.end(), [&](const auto& e) {
      return text.compare(i, e.first.size(), e.first) == 0;
    });
    if (it != kEntities.end()) {
      out += it->second;
      i += it->first.size();
      continue;
    }
    if (text.compare(i, 2, "&#") == 0) {
      const bool hex = i + 2 < text.size() && (text[i + 2] == 'x' || text[i + 2] == 'X');
      const size_t from = i + (hex ? 3 : 2);
      const size_t semi = text.find(';', from);
      unsigned code = 0;
      if (semi != std::string_view::npos && semi > from && semi - from <= 6 &&
          std::from_chars(text.data() + from, text.data() + semi, code, hex ? 16 : 10).ptr ==
              text.data() + semi &&
          code > 0 && code < 0x80) {
        out += static_cast<char>(code);
        i = semi + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

// The string storage signed names the request's headers and metadata, or a SAS's fields: the
// detail ends before the sentence that brings it in ("Server used following string to sign:
// '...'", "Signature did not match. String to sign used was ...").
void CutStringToSign(std::string& text) {
  static const std::regex kStringToSign("string[ _-]?to[ _-]?sign", std::regex::icase);
  std::smatch m;
  if (!std::regex_search(text, m, kStringToSign)) return;
  const size_t at = static_cast<size_t>(m.position(0));
  const size_t dot = text.rfind('.', at);
  text.resize(dot == std::string::npos ? 0 : dot + 1);
  text += " [string to sign left out]";
}

// Every value that follows `marker` (lower case), up to one of `ends`, becomes REDACTED.
void RedactAfter(std::string& text, std::string_view marker, std::string_view ends) {
  for (size_t from = 0;;) {
    const size_t at = LowerAscii(text).find(marker, from);
    if (at == std::string::npos) return;
    const size_t begin = at + marker.size();
    size_t end = text.find_first_of(ends, begin);
    if (end == std::string::npos) end = text.size();
    text.replace(begin, end - begin, "REDACTED");
    from = begin + 8;
  }
}

// Whatever a signature or key looks like, however storage words around it: a run of 32 or more
// base64 or URL-encoded characters with a digit in it becomes REDACTED.
void RedactLongTokens(std::string& text) {
  static const std::regex kToken("[A-Za-z0-9+/=%_-]{32,}");
  std::string out;
  auto from = text.cbegin();
  for (std::sregex_iterator it(text.begin(), text.end(), kToken), end; it != end; ++it) {
    const std::string token = it->str();
    if (std::none_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    out.append(from, (*it)[0].first);
    out += "REDACTED";
    from = (*it)[0].second;
  }
  out.append(from, text.cend());
  text = std::move(out);
}

// Control characters and runs of blanks become one space; no blank at either end.
std::string OneLine(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const bool blank = static_cast<unsigned char>(c) < 0x20 || c == ' ' || c == 0x7f;
    if (!blank) {
      out += c;
    } else if (!out.empty() && out.back() != ' ') {
      out += ' ';
    }
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// At most kMaxAuthFailureDetail bytes, "..." marking a cut, which never splits a UTF-8 character.
void Bound(std::string& text) {
  if (text.size() <= kMaxAuthFailureDetail) return;
  size_t keep = kMaxAuthFailureDetail - 3;
  while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  text.resize(keep);
  text += "...";
}

}  // namespace

std::string AuthFailureDetail(std::string_view body) {
  constexpr std::string_view kOpen = "<AuthenticationErrorDetail>";
  constexpr std::string_view kClose = "</AuthenticationErrorDetail>";
  const size_t open = body.find(kOpen);
  if (open == std::string_view::npos) return "";
  std::string_view raw = body.substr(open + kOpen.size());
  raw = raw.substr(0, raw.find(kClose));  // a body cut short: what there is
  // One line first: the phrases looked for below may be split by a line break.
  std::string text = OneLine(XmlUnescape(raw));
  CutStringToSign(text);
  // The request's own signature, quoted back: valid for that request for a while.
  RedactAfter(text, "in the http request '", "'");
  RedactAfter(text, "sig=", "&'\" <");
  RedactLongTokens(text);
  Bound(text);
  return text;
}

}  // namespace nbu::azure
