// Storage's reason for refusing a request's credentials (see auth_failure.h).
#include "azure/auth_failure.h"

#include "azure/xml.h"
#include "util/text.h"

#include <algorithm>
#include <regex>
#include <utility>

namespace nbu::azure {
namespace {

// What of a detail is read: Azure's are a few hundred bytes.
constexpr size_t kMaxAuthFailureInput = 16 << 10;

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

// Every value that follows `marker` (lower case), up to one of `ends`, becomes REDACTED. One pass
// over the text, however many values.
void RedactAfter(std::string& text, std::string_view marker, std::string_view ends) {
  const std::string lower = LowerAscii(text);
  std::string out;
  size_t from = 0;  // the text before it is in `out`
  for (size_t at = lower.find(marker); at != std::string::npos; at = lower.find(marker, from)) {
    const size_t begin = at + marker.size();
    const size_t end = std::min(text.find_first_of(ends, begin), text.size());
    out.append(text, from, begin - from);
    out += "REDACTED";
    from = end;
  }
  if (from == 0) return;  // none
  out.append(text, from);
  text = std::move(out);
}

bool TokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/' || c == '=' || c == '%' || c == '_' || c == '-';
}

// Whatever a signature or key looks like, however storage words around it: a run of 32 or more
// base64 or URL-encoded characters with a digit in it becomes REDACTED. (A scan by hand: a regex
// of libstdc++'s recurses once per character of a run, and a long one overflows the stack.)
void RedactLongTokens(std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (!TokenChar(text[i])) {
      out += text[i++];
      continue;
    }
    size_t end = i;
    bool digit = false;
    for (; end < text.size() && TokenChar(text[end]); ++end) {
      digit = digit || (text[end] >= '0' && text[end] <= '9');
    }
    if (end - i >= 32 && digit) {
      out += "REDACTED";
    } else {
      out.append(text, i, end - i);
    }
    i = end;
  }
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
  // Azure's details are a few hundred bytes; a proxy's or a broken server's may be megabytes,
  // and what is shown is kMaxAuthFailureDetail.
  const bool cut = raw.size() > kMaxAuthFailureInput;
  std::string text = XmlUnescape(raw.substr(0, kMaxAuthFailureInput));
  if (cut) {
    // A run of token characters reaching the cut is left out whole: it could be the start of a
    // secret (unescaped first, so that one written with &#43; is one run; and a reference the
    // cut split, "&#4", is taken into it).
    size_t keep = text.size();
    while (keep > 0 && (TokenChar(text[keep - 1]) || text[keep - 1] == '&' ||
                        text[keep - 1] == '#' || text[keep - 1] == ';')) {
      --keep;
    }
    text.resize(keep);
  }
  // One line first: the phrases looked for below may be split by a line break.
  text = OneLine(text);
  CutStringToSign(text);
  // The request's own signature, quoted back: valid for that request for a while.
  RedactAfter(text, "in the http request '", "'");
  RedactAfter(text, "sig=", "&'\" <");
  RedactLongTokens(text);
  Bound(text);
  return text;
}

}  // namespace nbu::azure
