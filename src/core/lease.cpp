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
  return fs::AtomicWriteFile(fs::Join(Dir(), config_.replica_id + std::string(kSuffix)),
                             body.dump());
}

void LeaseBook::Observe() {
  auto entries = fs::ListDir(Dir());
  if (!entries.ok()) return;
  const MonoTime now = clock_.Now();
  for (const auto& e : *entries) {
    if (!e.name.ends_with(kSuffix)) continue;
    const std::string owner = e.name.substr(0, e.name.size() - kSuffix.size());
    if (!IsValidReplicaId(owner)) continue;
    auto content = fs::ReadSmallFile(fs::Join(Dir(), e.name), 4096);
    if (!content.ok()) continue;
    auto [it, inserted] = seen_.try_emplace(owner, Seen{*content, now});
    if (!inserted && it->second.content != *content) it->second = Seen{*content, now};
  }
}

bool LeaseBook::IsDead(const std::string& owner) {
  if (owner == config_.replica_id) return false;
  const MonoTime now = clock_.Now();
  auto [it, inserted] = seen_.try_emplace(owner, Seen{"", now});
  return now - it->second.changed >= FromSeconds(config_.lease_timeout_s);
}

void LeaseBook::Prune(const std::set<std::string>& owners_with_claims) {
  const MonoTime now = clock_.Now();
  for (auto it = seen_.begin(); it != seen_.end();) {
    const bool long_dead = now - it->second.changed >= FromSeconds(10 * config_.lease_timeout_s);
    if (it->first != config_.replica_id && long_dead && owners_with_claims.count(it->first) == 0) {
      ::unlink(fs::Join(Dir(), it->first + std::string(kSuffix)).c_str());
      LogInfo("removed the lease of a replica gone for good", {{"replica", it->first}});
      it = seen_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace nbu::core
