// SAS credential (see sas.h).
#include "azure/sas.h"

#include "azure/url.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <ctime>
#include <optional>
#include <string_view>

namespace nbu::azure {
namespace {

// A SAS expiry (se): "YYYY-MM-DD", optionally followed by "Thh:mm[:ss[.fff]]Z", as UTC seconds;
// nullopt when it is none of these (storage judges it then).
std::optional<int64_t> ExpirySeconds(std::string_view se) {
  // `len` digits at `at` (no sign) within [lo, hi]: else timegm would quietly roll a month 13 or
  // an hour 24 into a date that looks valid.
  const auto field = [se](size_t at, size_t len, int* out, int lo, int hi) {
    if (at + len > se.size()) return false;
    const std::string_view digits = se.substr(at, len);
    if (digits.find_first_not_of("0123456789") != std::string_view::npos) return false;
    std::from_chars(digits.data(), digits.data() + len, *out);
    return *out >= lo && *out <= hi;
  };
  const auto is = [se](size_t at, char c) { return at < se.size() && se[at] == c; };
  std::tm tm{};
  if (!field(0, 4, &tm.tm_year, 1970, 9999) || !is(4, '-') || !field(5, 2, &tm.tm_mon, 1, 12) ||
      !is(7, '-') || !field(8, 2, &tm.tm_mday, 1, 31)) {
    return std::nullopt;
  }
  if (se.size() > 10) {
    if (!is(10, 'T') || !field(11, 2, &tm.tm_hour, 0, 23) || !is(13, ':') ||
        !field(14, 2, &tm.tm_min, 0, 59)) {
      return std::nullopt;
    }
    std::string_view rest = se.substr(16);
    if (rest.starts_with(':')) {
      if (!field(17, 2, &tm.tm_sec, 0, 60)) return std::nullopt;
      rest = se.substr(19);
    }
    if (rest.starts_with('.')) {
      rest.remove_prefix(std::min(rest.size(), rest.find_first_not_of("0123456789", 1)));
    }
    if (rest != "Z") return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm));
}

// A SAS field's value as a message or the credential's description shows it: as it is when it
// looks like one (permissions, services, a version, a time), else only its length. A signature
// pasted into the wrong field (`sp=rl%26sig%3D...`) is not shown: base64 ends in '='.
std::string Shown(std::string_view value) {
  const bool plain = value.size() <= 40 && std::all_of(value.begin(), value.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == ':' ||
                              c == '.' || c == '-' || c == '+';
                     });
  return plain ? std::string(value)
               : "(" + std::to_string(value.size()) + " characters, not shown)";
}

}  // namespace

std::vector<std::string> SasTokenProblems(const std::string& token) {
  if (token.find("://") != std::string::npos) {
    return {"is a URL; give only its query (the part after ?)"};
  }
  std::vector<std::string> out;
  std::string sig, sp, se, srt, ss, sr;
  for (const auto& [name, value] :
       SplitQuery(!token.empty() && token.front() == '?' ? token.substr(1) : token)) {
    if (name == "sig") sig = value;
    if (name == "sp") sp = UrlDecode(value);
    if (name == "se") se = UrlDecode(value);
    if (name == "srt") srt = UrlDecode(value);
    if (name == "ss") ss = UrlDecode(value);
    if (name == "sr") sr = UrlDecode(value);
  }
  if (sig.empty()) out.emplace_back("has no signature (no sig= parameter, or an empty one)");
  // Every upload writes; without it storage refuses every one with 403, for ever. A name
  // uploaded before, and every claim recovered, is looked at first (Get Blob Properties, Get
  // Block List): without read those are refused for ever.
  if (!sp.empty() && sp.find('w') == std::string::npos) {
    out.push_back("does not allow writes (sp=" + Shown(sp) + " has no w)");
  }
  if (!sp.empty() && sp.find('r') == std::string::npos) {
    out.push_back("does not allow reads (sp=" + Shown(sp) +
                  " has no r), which looking at a blob needs");
  }
  // An account SAS that does not reach objects, or not the blob service; a service SAS for one
  // blob: every upload refused.
  if (!srt.empty() && srt.find('o') == std::string::npos) {
    out.push_back("does not reach blobs (srt=" + Shown(srt) + " has no o)");
  }
  if (!ss.empty() && ss.find('b') == std::string::npos) {
    out.push_back("is not for the blob service (ss=" + Shown(ss) + " has no b)");
  }
  if (sr == "b" || sr == "bs" || sr == "bv") {
    out.push_back("is for one blob (sr=" + sr + "); give a container SAS (sr=c) or an account SAS");
  }
  const auto expiry = ExpirySeconds(se);
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  if (expiry && *expiry <= now) out.push_back("expired at " + se + " (se)");
  return out;
}

SasCredential::SasCredential(std::string token)
    : token_(!token.empty() && token.front() == '?' ? token.substr(1) : std::move(token)) {}

Status SasCredential::Authorize(HttpRequest& req, const std::string& /*account*/,
                                bool /*path_style*/) {
  if (token_.empty()) return Status(ErrorKind::kAuth, "SAS token is empty");
  req.url += (req.url.find('?') == std::string::npos ? "?" : "&") + token_;
  return Status::Ok();
}

std::string SasCredential::Describe() const {
  std::string out = "sas(";
  const char* sep = "";
  for (const auto& [name, value] : SplitQuery(token_)) {
    if (name == "sv" || name == "sp" || name == "se" || name == "sr" || name == "ss" ||
        name == "srt") {
      out.append(sep).append(name).append("=").append(Shown(UrlDecode(value)));
      sep = ", ";
    }
  }
  return out + ")";
}

}  // namespace nbu::azure
