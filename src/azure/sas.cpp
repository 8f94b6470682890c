// SAS credential (see sas.h).
#include "azure/sas.h"

#include "azure/url.h"

namespace nbu::azure {

std::optional<std::string> SasTokenProblem(const std::string& token) {
  if (token.find("://") != std::string::npos) {
    return "is a URL; give only its query (the part after ?)";
  }
  if (token.find("sig=") == std::string::npos) return "has no sig= parameter";
  return std::nullopt;
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
      out.append(sep).append(name).append("=").append(UrlDecode(value));
      sep = ", ";
    }
  }
  return out + ")";
}

}  // namespace nbu::azure
