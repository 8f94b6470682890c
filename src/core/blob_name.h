// Blob names from file paths. Azure (and Azurite) store some names a file system allows under
// another name: a backslash becomes '/', and a '.' ending a path segment is dropped. So `a\b` and
// `a/b`, or `x.` and `x`, would land on one blob, the second upload replacing the first
// producer's bytes. Others it refuses: bytes that are not UTF-8, control characters. Each path
// segment is therefore encoded as rclone's azureblob backend encodes it (its default encoding:
// BackSlash, Ctl, Del, RightPeriod, InvalidUtf8), so a name that needs no change keeps it, and
// `rclone copy` from the container restores the producer's names:
//
//   \                  -> ＼ (U+FF3C)            a segment's last '.' -> ． (U+FF0E)
//   0x01-0x1F          -> U+2401-U+241F (␁-␟)   0x7F -> ␡ (U+2421)
//   a byte not in UTF-8 -> ‛ (U+201B) + two upper-case hex digits
//
// A producer's own ‛ or ␀, and a replacement character where it would be read as one (＼, ␁-␟,
// ␡ anywhere; ． at a segment's end), get a ‛ before them. So the encoding is one-to-one: two
// paths never share a blob name.
#pragma once

#include "util/status.h"

#include <string>
#include <string_view>

namespace nbu::core {

// One path segment (no '/'), encoded as above; the same string when nothing needs a change.
std::string EncodeBlobSegment(std::string_view segment);

// Appends `path`'s segments, each encoded, to `out` ('/' between them and after a non-empty
// `out`). Empty segments are skipped.
void AppendBlobPath(std::string& out, std::string_view path);

// Azure's limits on a whole (encoded) name: at most 1,024 characters, counted in UTF-16 code
// units as the service counts them, and at most 254 segments. kPermanent when over either.
Status CheckBlobName(std::string_view name);

}  // namespace nbu::core
