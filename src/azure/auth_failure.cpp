// Storage's reason for refusing a request's credentials (see auth_failure.h).
#include "azure/auth_failure.h"

#include "util/text.h"

#include <algorithm>
#include <array>
#include <utility>

namespace nbu::azure {
namespace {

// The five named XML entities; others are kept as written.
std::string XmlUnescape(std::string_view text) {
  static constexpr std::array<std::pair<std::string_view, char>, 5> kEntities = {
      {{"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}, {"&amp;", '&'}}};
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto it = std::find_if(kEntities.begin(), kEntities.end(), [&](const auto& e) {
      return text.compare(i, e.first.size(), e.first) == 0;
    });
    if (it == kEntities.end()) {
      out += text[i++];
    } else {
      out += it->second;
      i += it->first.size();
    }
  }
  return out;
}

// The string storage signed names the request's headers and metadata, or a SAS's fields: the
// detail ends before the sentence that brings it in ("Server used following string to sign:
// '...'", "Signature did not match. String to sign used was ...").
void CutStringToSign(std::string& text) {
  const size_t at = LowerAscii(text).find("string to sign");
  if (at == std::string::npos) return;
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
  std::string text = XmlUnescape(raw);
  CutStringToSign(text);
  // The request's own signature, quoted back: valid for that request for a while.
  RedactAfter(text, "in the http request '", "'");
  RedactAfter(text, "sig=", "&'\" \t\r\n<");
  text = OneLine(text);
  Bound(text);
  return text;
}

}  // namespace nbu::azure
