#include "core/session_store.h"

#include "core/layout.h"
#include "util/fs.h"

#include <nlohmann/json.hpp>

namespace nbu::core {

Result<std::optional<SessionState>> SessionStore::Load() const {
  auto text = fs::ReadSmallFile(path_, size_t{64} * 1024);
  if (!text.ok()) {
    if (text.status().kind() == ErrorKind::kNotFound) return std::optional<SessionState>{};
    return text.status();
  }
  const auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    return Status(ErrorKind::kPermanent, path_ + ": not a valid session file");
  }
  auto str = [&](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
  };
  SessionState s;
  s.name = str("name");
  s.started_at = str("started_at");
  s.active = j.contains("active") && j["active"].is_boolean() && j["active"].get<bool>();
  s.stopped_at = str("stopped_at");
  if (!IsValidSessionName(s.name)) {  // never scan outside <incoming> because of a bad file
    return Status(ErrorKind::kPermanent, path_ + ": invalid session name");
  }
  return std::optional<SessionState>(s);
}

Status SessionStore::Save(const SessionState& s) const {
  nlohmann::json j = {{"name", s.name}, {"started_at", s.started_at}, {"active", s.active}};
  if (!s.stopped_at.empty()) j["stopped_at"] = s.stopped_at;
  if (Status st = fs::MkdirAll(fs::Dirname(path_)); !st.ok()) return st;
  return fs::AtomicWriteFile(path_, j.dump(2));
}

}  // namespace nbu::core
