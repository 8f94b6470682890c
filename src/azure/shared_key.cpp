// Shared Key string-to-sign and signing (see shared_key.h and AZURE.md §5).
#include "azure/shared_key.h"

#include "azure/url.h"
#include "util/crypto.h"
#include "util/text.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <vector>

namespace nbu::azure {
namespace {

// Trims and collapses runs of whitespace to one space (values we send are already single-spaced).
std::string CanonicalHeaderValue(const std::string& value) {
  std::string out;
  bool pending_space = false;
  for (const char c : value) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

std::string HeaderOrEmpty(const HttpRequest& req, const char* name) {
  const std::string* v = req.FindHeader(name);
  return v != nullptr ? *v : std::string();
}

std::string ContentLengthLine(const HttpRequest& req) {
  if (const std::string* v = req.FindHeader("Content-Length")) return *v == "0" ? "" : *v;
  const uint64_t n = req.BodySize();
  return n == 0 ? std::string() : std::to_string(n);
}

std::string CanonicalizedHeaders(const HttpRequest& req) {
  std::map<std::string, std::string> ms;
  for (const auto& [name, value] : req.headers) {
    std::string lname = LowerAscii(name);
    if (lname.rfind("x-ms-", 0) != 0) continue;
    auto [it, inserted] = ms.emplace(std::move(lname), CanonicalHeaderValue(value));
    if (!inserted) it->second.append(",").append(CanonicalHeaderValue(value));
  }
  std::string out;
  for (const auto& [name, value] : ms) out.append(name).append(":").append(value).append("\n");
  return out;
}

std::string CanonicalizedResource(const std::string& url, const std::string& account) {
  const UrlParts parts = SplitUrl(url);
  std::string out = "/" + account + parts.path;
  std::map<std::string, std::vector<std::string>> params;
  for (const auto& [name, value] : SplitQuery(parts.query)) {
    params[LowerAscii(UrlDecode(name))].push_back(UrlDecode(value));
  }
  for (auto& [name, values] : params) {
    std::sort(values.begin(), values.end());
    out.append("\n").append(name).append(":");
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out.push_back(',');
      out.append(values[i]);
    }
  }
  return out;
}

}  // namespace

std::string SharedKeyStringToSign(const HttpRequest& req, const std::string& account) {
  std::string s = req.method + "\n";
  s += HeaderOrEmpty(req, "Content-Encoding") + "\n";
  s += HeaderOrEmpty(req, "Content-Language") + "\n";
  s += ContentLengthLine(req) + "\n";
  s += HeaderOrEmpty(req, "Content-MD5") + "\n";
  s += HeaderOrEmpty(req, "Content-Type") + "\n";
  s += HeaderOrEmpty(req, "Date") + "\n";
  s += HeaderOrEmpty(req, "If-Modified-Since") + "\n";
  s += HeaderOrEmpty(req, "If-Match") + "\n";
  s += HeaderOrEmpty(req, "If-None-Match") + "\n";
  s += HeaderOrEmpty(req, "If-Unmodified-Since") + "\n";
  s += HeaderOrEmpty(req, "Range") + "\n";
  s += CanonicalizedHeaders(req);
  s += CanonicalizedResource(req.url, account);
  return s;
}

std::string SharedKeySignature(const HmacSha256Key& key, std::string_view string_to_sign) {
  return Base64Encode(key.Sign(string_to_sign));
}

std::string FormatRfc1123(WallTime t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

Result<std::shared_ptr<SharedKeyCredential>> SharedKeyCredential::Create(
    std::string account, std::string_view account_key_base64, Clock& clock) {
  if (account.empty()) return Status(ErrorKind::kAuth, "shared key: account name is empty");
  std::optional<std::string> key = Base64Decode(account_key_base64);
  if (!key || key->empty()) {
    return Status(ErrorKind::kAuth,
                  "shared key: account key for account " + account + " is not valid base64");
  }
  return std::shared_ptr<SharedKeyCredential>(
      new SharedKeyCredential(std::move(account), *key, clock));
}

Status SharedKeyCredential::Authorize(HttpRequest& req, const std::string& /*account*/,
                                      bool /*path_style*/) {
  // The wire path already holds the account on path-style endpoints, so "/account" + path
  // yields the doubled name Azurite expects; nothing depends on path_style here.
  req.SetHeader("x-ms-date", FormatRfc1123(clock_.WallNow()));
  const std::string signature = SharedKeySignature(key_, SharedKeyStringToSign(req, account_));
  req.SetHeader("Authorization", "SharedKey " + account_ + ":" + signature);
  return Status::Ok();
}

std::string SharedKeyCredential::Describe() const { return "shared-key(account=" + account_ + ")"; }

}  // namespace nbu::azure
