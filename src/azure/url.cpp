// URL encoding, decoding, splitting and redaction (see url.h).
#include "azure/url.h"
#include "util/text.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <optional>

namespace nbu::azure {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

bool IsUnreserved(unsigned char c) {
  return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~';
}

bool IsKeptInPath(unsigned char c) {
  if (IsUnreserved(c)) return true;
  switch (c) {
    case '/':
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':
    case ',':
    case ';':
    case '=':
    case ':':
    case '@': return true;
    default: return false;
  }
}

bool IsKeptInQuery(unsigned char c) {
  return IsKeptInPath(c) && c != '/' && c != '=' && c != '&' && c != '+';
}

template <typename Keep>
std::string Encode(std::string_view text, Keep keep) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x80 && keep(c)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

int HexValue(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

}  // namespace

std::string UrlEncodePath(std::string_view text) { return Encode(text, IsKeptInPath); }

std::string UrlEncodeQueryValue(std::string_view text) { return Encode(text, IsKeptInQuery); }

std::string UrlDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && HexValue(text[i + 1]) >= 0 &&
        HexValue(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(text[i + 1]) * 16 + HexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

UrlParts SplitUrl(std::string_view url) {
  UrlParts parts;
  if (const size_t hash = url.find('#'); hash != std::string_view::npos) url = url.substr(0, hash);
  if (const size_t q = url.find('?'); q != std::string_view::npos) {
    parts.query = std::string(url.substr(q + 1));
    url = url.substr(0, q);
  }
  if (const size_t sep = url.find("://"); sep != std::string_view::npos) {
    parts.scheme = std::string(url.substr(0, sep));
    url = url.substr(sep + 3);
    const size_t slash = url.find('/');
    parts.authority = std::string(url.substr(0, slash));
    url = slash == std::string_view::npos ? std::string_view() : url.substr(slash);
  }
  parts.path = url.empty() ? "/" : std::string(url);
  return parts;
}

bool PortIsNumeric(std::string_view authority) {
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    authority.remove_prefix(close + 1);
    if (authority.empty()) return true;
    if (authority.front() != ':') return false;
  }
  const size_t colon = authority.rfind(':');
  if (colon == std::string_view::npos) return true;
  const std::string_view port = authority.substr(colon + 1);
  return !port.empty() && port.size() <= 5 &&
         port.find_first_not_of("0123456789") == std::string_view::npos &&
         std::stoi(std::string(port)) <= 65535;
}

std::string_view AuthorityHost(std::string_view authority, bool* v6) {
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  *v6 = !authority.empty() && authority.front() == '[';
  if (*v6) {
    const auto close = authority.find(']');
    return close == std::string_view::npos ? std::string_view() : authority.substr(1, close - 1);
  }
  return authority.substr(0, authority.find(':'));
}

namespace {

// The address of a literal host, as curl reads the URL: an IPv4 number in any of the forms
// inet_aton takes (127.0.0.1, 127.1, 0x7f.1, 2130706433), or a bracketed IPv6 address (its
// zone, "%25eth0", dropped). Anything else is a name, looked up in DNS, which may answer with
// any address (127.999.0.1 among them). An IPv4-mapped IPv6 address is taken as its IPv4 one.
struct Literal {
  bool is_v4 = false;
  uint32_t v4 = 0;  // host order
  in6_addr v6{};
};

std::optional<Literal> LiteralAddress(std::string_view authority) {
  bool bracketed = false;
  std::string host(AuthorityHost(authority, &bracketed));
  Literal out;
  if (bracketed) {
    if (const size_t zone = host.find('%'); zone != std::string::npos) host.resize(zone);
    if (inet_pton(AF_INET6, host.c_str(), &out.v6) != 1) return std::nullopt;
    if (IN6_IS_ADDR_V4MAPPED(&out.v6)) {
      out.is_v4 = true;
      std::memcpy(&out.v4, &out.v6.s6_addr[12], 4);
      out.v4 = ntohl(out.v4);
    }
    return out;
  }
  // inet_aton takes anything after a space, which is no part of a host.
  in_addr v4{};
  if (host.empty() || host.find_first_not_of("0123456789abcdefxABCDEFX.") != std::string::npos ||
      inet_aton(host.c_str(), &v4) == 0) {
    return std::nullopt;
  }
  out.is_v4 = true;
  out.v4 = ntohl(v4.s_addr);
  return out;
}

}  // namespace

bool IsLoopbackAuthority(std::string_view authority) {
  bool bracketed = false;
  const std::string host = LowerAscii(AuthorityHost(authority, &bracketed));
  if (host == "localhost" && !bracketed) return true;
  const auto a = LiteralAddress(authority);
  if (!a) return false;
  return a->is_v4 ? (a->v4 >> 24) == 127 : IN6_IS_ADDR_LOOPBACK(&a->v6);
}

bool IsHostLocalAuthority(std::string_view authority) {
  if (IsLoopbackAuthority(authority)) return true;
  const auto a = LiteralAddress(authority);
  if (!a) return false;
  return a->is_v4 ? (a->v4 >> 16) == 0xA9FE         // 169.254.0.0/16
                  : IN6_IS_ADDR_LINKLOCAL(&a->v6);  // fe80::/10
}

std::vector<std::pair<std::string, std::string>> SplitQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (piece.empty()) continue;
    const size_t eq = piece.find('=');
    if (eq == std::string_view::npos) {
      out.emplace_back(std::string(piece), std::string());
    } else {
      out.emplace_back(std::string(piece.substr(0, eq)), std::string(piece.substr(eq + 1)));
    }
  }
  return out;
}

std::string RedactUrl(std::string_view url) {
  std::string whole(url);
  if (const auto user = UserInfoSpan(whole)) whole.erase(user->first, user->second - user->first);
  // A fragment is never sent; a pasted SAS may sit there.
  url = whole;
  url = url.substr(0, url.find('#'));
  const size_t q = url.find('?');
  if (q == std::string_view::npos) return std::string(url);
  std::string out(url.substr(0, q));
  char sep = '?';
  for (const auto& [name, value] : SplitQuery(url.substr(q + 1))) {
    out.push_back(sep);
    sep = '&';
    const bool secret = EqualsIgnoreCaseAscii(name, "sig");
    out.append(name).append("=").append(secret ? "REDACTED" : value);
  }
  return out;
}

}  // namespace nbu::azure
