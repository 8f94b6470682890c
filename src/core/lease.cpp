#include "core/lease.h"

#include "core/layout.h"
#include "util/fs.h"
#include "util/log.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

namespace nbu::core {
namespace {
constexpr std::string_view kSuffix = ".lease";
}

std::string LeaseBook::Dir() const { return fs::Join(config_.processing_root, "_replicas"); }

Status LeaseBook::Heartbeat() {
  std::lock_guard lock(mu_);
  if (Status s = fs::MkdirAll(Dir()); !s.ok()) return s;
  const nlohmann::json body = {{"replica", config_.replica_id},
                               {"pid", ::getpid()},
                               {"seq", ++seq_},
                               {"time", FormatTimestamp(clock_.WallNow())}};
  return fs::AtomicWriteFile(PathOf(config_.replica_id), body.dump());
}

std::string LeaseBook::PathOf(const std::string& owner) const {
  return fs::Join(Dir(), owner + std::string(kSuffix));
}

void LeaseBook::Record(const std::string& owner, const Result<std::string>& content, MonoTime now) {
  // A missing file reads as empty; any other failure as a change (a sign of life).
  const bool failed = !content.ok() && content.status().kind() != ErrorKind::kNotFound;
  const std::string text = content.ok() ? *content : "";
  auto [it, inserted] = seen_.try_emplace(owner, Seen{text, now, now});
  if (inserted) return;
  it->second.read = now;
  if (failed || it->second.content != text) {
    it->second.content = failed ? it->second.content : text;
    it->second.changed = now;
  }
}

void LeaseBook::Observe() {
  auto entries = fs::ListDir(Dir());
  if (!entries.ok()) return;
  const MonoTime now = clock_.Now();
  for (const auto& e : *entries) {
    if (!e.name.ends_with(kSuffix)) continue;
    const std::string owner = e.name.substr(0, e.name.size() - kSuffix.size());
    if (!IsValidReplicaId(owner)) continue;
    Record(owner, fs::ReadSmallFile(fs::Join(Dir(), e.name), 4096), now);
  }
}

bool LeaseBook::IsDead(const std::string& owner) {
  if (owner == config_.replica_id) return false;
  const MonoTime now = clock_.Now();
  const auto it = seen_.find(owner);
  if (it == seen_.end() || now - it->second.read >= std::chrono::seconds(1)) {
    Record(owner, fs::ReadSmallFile(PathOf(owner), 4096), now);
  }
  return now - seen_.at(owner).changed >= FromSeconds(config_.lease_timeout_s);
}

void LeaseBook::Prune(const std::set<std::string>& owners_with_claims) {
  const MonoTime now = clock_.Now();
  for (auto it = seen_.begin(); it != seen_.end();) {
    const bool long_dead = now - it->second.changed >= FromSeconds(10 * config_.lease_timeout_s);
    if (it->first != config_.replica_id && long_dead && owners_with_claims.count(it->first) == 0) {
      ::unlink(PathOf(it->first).c_str());
      LogInfo("removed the lease of a replica gone for good", {{"replica", it->first}});
      it = seen_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace nbu::core
