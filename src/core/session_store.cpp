#include "core/session_store.h"

#include "util/fs.h"

#include <nlohmann/json.hpp>

namespace nbu::core {

Result<std::optional<SessionState>> SessionStore::Load() const {
  auto text = fs::ReadSmallFile(path_, 64 * 1024);
  if (!text.ok()) {
    if (text.status().kind() == ErrorKind::kNotFound) return std::optional<SessionState>{};
    return text.status();
  }
  const auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    return Status(ErrorKind::kPermanent, path_ + ": not a valid session file");
  }
  SessionState s;
  s.name = j["name"].get<std::string>();
  s.started_at = j.value("started_at", "");
  s.active = j.value("active", false);
  s.stopped_at = j.value("stopped_at", "");
  return std::optional<SessionState>(s);
}

Status SessionStore::Save(const SessionState& s) const {
  nlohmann::json j = {{"name", s.name}, {"started_at", s.started_at}, {"active", s.active}};
  if (!s.stopped_at.empty()) j["stopped_at"] = s.stopped_at;
  if (Status st = fs::MkdirAll(fs::Dirname(path_)); !st.ok()) return st;
  return fs::AtomicWriteFile(path_, j.dump(2));
}

}  // namespace nbu::core
