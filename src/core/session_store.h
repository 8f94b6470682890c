// The watch session, persisted on the shared volume (<processing>/_session.json, written
// atomically) so a restarted or rescheduled replica resumes it, and every replica watches it.
#pragma once

#include "util/status.h"

#include <optional>
#include <string>

namespace nbu::core {

struct SessionState {
  std::string name;
  std::string started_at;  // RFC 3339
  bool active = false;
  std::string stopped_at;
};

class SessionStore {
 public:
  explicit SessionStore(std::string path) : path_(std::move(path)) {}
  // nullopt when no session was ever started; an unreadable file is an error.
  Result<std::optional<SessionState>> Load() const;
  Status Save(const SessionState& state) const;

 private:
  std::string path_;
};

}  // namespace nbu::core
