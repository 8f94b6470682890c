// The little XML that storage answers with: an element found by its name, and text unescaped.
// Not a parser: storage's answers are flat and known, and nothing here is for XML in general.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace nbu::azure {

// The raw text of the first <tag> ... </tag> that opens at or after `from` and closes by `limit`
// (npos-safe); `*next` (optional) is set past its close tag. An open tag may carry attributes
// (<Name Encoded="true">), which `*attributes` (optional) receives as written; a self-closing
// one (<NextMarker />) has no text and is not found.
std::optional<std::string> XmlElement(std::string_view xml, std::string_view tag, size_t from,
                                      size_t limit, size_t* next = nullptr,
                                      std::string* attributes = nullptr);

// The five named entities and numeric references (&#39;, &#xE9;, as UTF-8); a reference to no
// character (0, a surrogate, past U+10FFFF) and any other entity are kept as written.
std::string XmlUnescape(std::string_view text);

}  // namespace nbu::azure
