#include "core/blob_name.h"

#include "util/utf8.h"

#include <algorithm>

namespace nbu::core {
namespace {

constexpr char32_t kQuote = 0x201B;                    // ‛ SINGLE HIGH-REVERSED-9 QUOTATION MARK
constexpr char32_t kSymbolForNull = 0x2400;            // ␀; ␁-␟ follow it for 0x01-0x1F
constexpr char32_t kSymbolForDelete = 0x2421;          // ␡
constexpr char32_t kFullwidthReverseSolidus = 0xFF3C;  // ＼
constexpr char32_t kFullwidthFullStop = 0xFF0E;        // ．
constexpr std::string_view kFullwidthFullStopUtf8 = "\uFF0E";
constexpr size_t kMaxNameUnits = 1024;
constexpr size_t kMaxSegments = 254;

// A code point the encoding produces, so a producer's own one is quoted (． only at the end).
bool IsReplacement(char32_t cp) {
  return cp == kQuote || (cp >= kSymbolForNull && cp <= kSymbolForNull + 0x1F) ||
         cp == kSymbolForDelete || cp == kFullwidthReverseSolidus;
}

// Well-formed, but code points Azure refuses even percent-encoded (its naming rules name control
// characters, U+0081 and U+E000): the C1 controls, the private use area of the basic plane and
// the noncharacters. Azurite takes them, so only Azure would dead-letter such a file.
bool IsRefusedByAzure(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || (cp >= 0xE000 && cp <= 0xF8FF) ||
         (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
}

bool NeedsEncoding(std::string_view s) {
  if (!s.empty() && s.back() == '.') return true;
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7F || c == '\\' || c >= 0x80;
  });
}

}  // namespace

std::string EncodeBlobSegment(std::string_view in) {
  if (!NeedsEncoding(in)) return std::string(in);
  std::string out;
  out.reserve(in.size() + 8);
  std::string suffix;
  if (!in.empty() && in.back() == '.') {
    AppendUtf8(suffix, kFullwidthFullStop);
    in.remove_suffix(1);
  } else if (in.ends_with(kFullwidthFullStopUtf8)) {
    AppendUtf8(suffix, kQuote);
    AppendUtf8(suffix, kFullwidthFullStop);
    in.remove_suffix(kFullwidthFullStopUtf8.size());
  }
  for (size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      if (c == '\\') {
        AppendUtf8(out, kFullwidthReverseSolidus);
      } else if (c < 0x20) {
        AppendUtf8(out, kSymbolForNull + c);
      } else if (c == 0x7F) {
        AppendUtf8(out, kSymbolForDelete);
      } else {
        out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    char32_t cp = 0;
    const size_t len = DecodeUtf8(in, i, &cp);
    // A stray byte is quoted on its own; each byte of a refused code point is quoted as one
    // (no stray bytes can read the same: together they would have decoded).
    if (len == 0 || IsRefusedByAzure(cp)) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      for (size_t k = 0; k < std::max<size_t>(len, 1); ++k) {
        const auto b = static_cast<unsigned char>(in[i + k]);
        AppendUtf8(out, kQuote);
        out.push_back(kHex[b >> 4]);
        out.push_back(kHex[b & 0xF]);
      }
      i += std::max<size_t>(len, 1);
      continue;
    }
    if (IsReplacement(cp)) AppendUtf8(out, kQuote);
    out.append(in.substr(i, len));
    i += len;
  }
  return out + suffix;
}

void AppendBlobPath(std::string& out, std::string_view path) {
  while (!path.empty()) {
    const size_t slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    if (!segment.empty()) {
      if (!out.empty()) out.push_back('/');
      out += EncodeBlobSegment(segment);
    }
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
}

Status CheckBlobName(std::string_view name) {
  size_t units = 0;
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c & 0xC0) != 0x80) units += c >= 0xF0 ? 2 : 1;  // a code point past U+FFFF takes two
  }
  if (units > kMaxNameUnits) {
    return {ErrorKind::kPermanent, "the blob name is " + std::to_string(units) +
                                       " characters long; Azure allows at most " +
                                       std::to_string(kMaxNameUnits)};
  }
  const size_t segments = static_cast<size_t>(std::count(name.begin(), name.end(), '/')) + 1;
  if (segments > kMaxSegments) {
    return {ErrorKind::kPermanent, "the blob name has " + std::to_string(segments) +
                                       " path segments; Azure allows at most " +
                                       std::to_string(kMaxSegments)};
  }
  return Status::Ok();
}

}  // namespace nbu::core
