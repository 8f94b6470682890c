// URL helpers for the Blob REST API: percent-encoding of blob names and query values (the set the
// Azure C++ SDK keeps), decoding for signing, splitting, and redaction of SAS signatures for logs.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nbu::azure {

// Percent-encodes a blob path. Keeps `/`, unreserved (A-Z a-z 0-9 - . _ ~) and
// ! $ & ' ( ) * , ; = : @; everything else (space, +, %, ?, #, ", non-ASCII UTF-8 bytes, ...)
// becomes %XX (upper-case hex).
std::string UrlEncodePath(std::string_view text);

// Percent-encodes one query name or value: like UrlEncodePath but `+ = & /` are encoded too
// (Azurite drops query pairs whose raw text holds a second `=`, and turns `+` into a space).
std::string UrlEncodeQueryValue(std::string_view text);

// Decodes %XX sequences; `+` stays `+`. Malformed escapes are kept literally.
std::string UrlDecode(std::string_view text);

// Parts of an absolute URL "scheme://authority/path?query#fragment".
struct UrlParts {
  std::string scheme;     // "https"
  std::string authority;  // "acct.blob.core.windows.net" or "127.0.0.1:10000"
  std::string path;       // as written, "/" when absent
  std::string query;      // without '?', may be empty
};
UrlParts SplitUrl(std::string_view url);
// True when an authority ("host", "host:port", "[v6]:port") has no port or a port number (digits,
// at most 65535: curl refuses a URL with more, and every request would fail for ever). A
// password holding '/' ("https://me:p/w@host") ends the authority at "me:p"; when its first part
// is digits ("me:2024/w@host") the port passes, so the callers also refuse '@' in the path.
bool PortIsNumeric(std::string_view authority);
// True when a URL holds an '@' before its query or fragment: user info, or user info whose
// password holds a '/' ("https://svc:2024/Xy9@host" reads as host "svc", port 2024, and a path).
// No blob endpoint has one; either would be logged with the endpoint.
inline bool HoldsAtBeforeQuery(std::string_view url) {
  return url.substr(0, url.find_first_of("?#")).find('@') != std::string_view::npos;
}
// The host of an authority, without user info, port or an IPv6 literal's brackets; `v6` says
// whether it was bracketed. Empty for an unclosed bracket.
std::string_view AuthorityHost(std::string_view authority, bool* v6);

// True for 127.0.0.0/8 (in any form curl reads as a number: 127.0.0.1, 127.1, 0x7f.1, or
// IPv4-mapped, [::ffff:127.0.0.1]), ::1 and localhost (an authority "host[:port]" or
// "[v6]:port", user info allowed). A name that only looks like one (127.999.0.1) is not.
bool IsLoopbackAuthority(std::string_view authority);
// True for this host's own addresses (IsLoopbackAuthority) and link-local ones (169.254.0.0/16,
// fe80::/10), where the instance metadata service answers: no proxy can reach these for us.
bool IsHostLocalAuthority(std::string_view authority);

// Query string "a=1&b=2" split into raw (still encoded) name/value pairs; empty pieces skipped.
std::vector<std::pair<std::string, std::string>> SplitQuery(std::string_view query);

// Replaces the value of every `sig=` query parameter with "REDACTED", and drops user info
// (`user:password@`) and any `#fragment`, so the URL is safe to log.
std::string RedactUrl(std::string_view url);

}  // namespace nbu::azure
