// See xml.h.
#include "azure/xml.h"

#include "util/utf8.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <utility>

namespace nbu::azure {
std::optional<std::string> XmlElement(std::string_view xml, std::string_view tag, size_t from,
                                      size_t limit, size_t* next, std::string* attributes) {
  const std::string open = "<" + std::string(tag);
  const std::string close = "</" + std::string(tag) + ">";
  for (size_t b = xml.find(open, from); b != std::string_view::npos && b < limit;
       b = xml.find(open, b + 1)) {
    const size_t after = b + open.size();
    // <tag> or <tag attr...>, not <tagX> nor <tag/>.
    if (after >= xml.size() || (xml[after] != '>' && xml[after] != ' ')) continue;
    const size_t gt = xml.find('>', after);
    if (gt == std::string_view::npos || xml[gt - 1] == '/') continue;
    const size_t e = xml.find(close, gt + 1);
    if (e == std::string_view::npos || e > limit) return std::nullopt;
    if (next != nullptr) *next = e + close.size();
    if (attributes != nullptr) *attributes = std::string(xml.substr(after, gt - after));
    return std::string(xml.substr(gt + 1, e - gt - 1));
  }
  return std::nullopt;
}

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
      uint32_t code = 0;
      if (semi != std::string_view::npos && semi > from && semi - from <= 7 &&
          std::from_chars(text.data() + from, text.data() + semi, code, hex ? 16 : 10).ptr ==
              text.data() + semi &&
          code > 0 && code <= 0x10FFFF && (code < 0xD800 || code > 0xDFFF)) {
        AppendUtf8(out, code);
        i = semi + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

}  // namespace nbu::azure
