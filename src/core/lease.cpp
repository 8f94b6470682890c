#include "core/lease.h"

#include "core/layout.h"
#include "util/fs.h"
#include "util/log.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>

namespace nbu::core {

// A lease's fields, as far as they are there and of the right type (older leases lack some).
struct LeaseText {
  std::string instance;
  std::string host;
  std::string pid_space;
  int64_t pid = 0;
  bool stopped = false;
};

namespace {
constexpr std::string_view kSuffix = ".lease";

// Steady-clock times in atomics: ticks + 1, so that 0 means never.
int64_t Ticks(MonoTime t) { return t.time_since_epoch().count() + 1; }
MonoTime FromTicks(int64_t ticks) { return MonoTime(MonoTime::duration(ticks - 1)); }

std::string HostName() {
  char buf[256] = {};
  return ::gethostname(buf, sizeof buf - 1) == 0 ? buf : "";
}

std::optional<LeaseText> ParseLease(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  LeaseText out;
  const auto str = [&](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
  };
  out.instance = str("instance");
  out.host = str("host");
  out.pid_space = str("pid_space");
  if (j.contains("pid") && j["pid"].is_number_integer()) out.pid = j["pid"].get<int64_t>();
  out.stopped = j.contains("stopped") && j["stopped"].is_boolean() && j["stopped"].get<bool>();
  return out;
}

// Whether no process runs as `pid` here: none has it, or the one that has it has exited and waits
// to be reaped (a zombie, which kill() still finds: a parent that reaps late, such as a shell
// that started the service in the background, or an init that reaps every few seconds).
bool NoProcessRuns(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const auto stat = fs::ReadSmallFile("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!stat.ok()) return false;
  // "pid (comm) S ...": the name may hold anything, ')' included; the state follows the last ')'.
  const size_t close = stat->rfind(')');
  return close != std::string::npos && close + 2 < stat->size() &&
         ((*stat)[close + 2] == 'Z' || (*stat)[close + 2] == 'X');
}
}  // namespace

std::string PidSpace() {
  static const std::string space = [] {
    const auto boot = fs::ReadSmallFile("/proc/sys/kernel/random/boot_id", 64);
    struct stat ns {};
    if (!boot.ok() || boot->empty() || ::stat("/proc/self/ns/pid", &ns) != 0) return std::string();
    std::string id = *boot;
    while (!id.empty() && id.back() == '\n') id.pop_back();
    return id + "/" + std::to_string(ns.st_ino);
  }();
  return space;
}

LeaseBook::LeaseBook(const Config& config, Clock& clock)
    : config_(config), clock_(clock), instance_(NewNonce()), own_write_last_(clock.Now()) {}

std::string LeaseBook::Dir() const { return fs::Join(config_.processing_root, "_replicas"); }

std::optional<std::string> LeaseBook::CheckIdFree(std::stop_token stop) {
  const std::string path = PathOf(config_.replica_id);
  const auto first = fs::ReadSmallFile(path, 4096);
  if (!first.ok()) return std::nullopt;  // none yet (or unreadable: the heartbeat says so)
  const auto lease = ParseLease(*first);
  if (!lease || lease->stopped) return std::nullopt;
  // Left by a process that is gone, of this boot of this host and of this pid namespace, where
  // its pid means what kill() finds: a predecessor, not a twin. A host name is no such proof: a
  // cloned VM keeps it, and the host-name default id with it. (Not one that had our pid either:
  // a restarted container waits. A lease of an older version, without a pid space, waits too.)
  if (!lease->pid_space.empty() && lease->pid_space == PidSpace() && lease->host == HostName() &&
      lease->pid > 0 && lease->pid != ::getpid() && NoProcessRuns(static_cast<pid_t>(lease->pid))) {
    return std::nullopt;
  }
  const Duration wait = Interval() * 3 / 2;
  LogInfo("this replica id's lease is recent; waiting to see whether its process still runs",
          {{"replica", config_.replica_id},
           {"host", lease->host},
           {"pid", lease->pid},
           {"wait_s", ToSeconds(wait)}});
  const MonoTime until = clock_.Now() + wait;
  while (clock_.Now() < until) {
    if (!clock_.SleepFor(std::min<Duration>(std::chrono::milliseconds(200), until - clock_.Now()),
                         stop)) {
      return std::nullopt;
    }
    const auto now = fs::ReadSmallFile(path, 4096);
    if (now.ok() && *now != *first) {
      const auto other = ParseLease(*now);
      // The process watched has just stopped cleanly (not a third one writing "stopped").
      if (other && other->stopped && other->instance == lease->instance) return std::nullopt;
      return "APP_REPLICA_ID: \"" + config_.replica_id + "\" is in use by a live process (host " +
             (other ? other->host : std::string("?")) + ", pid " +
             std::to_string(other ? other->pid : 0) + "); give each replica its own id";
    }
  }
  return std::nullopt;
}

std::optional<LeaseText> LeaseBook::AnothersLease() const {
  const auto text = fs::ReadSmallFile(PathOf(config_.replica_id), 4096);
  auto lease = text.ok() ? ParseLease(*text) : std::nullopt;
  if (lease && lease->instance == instance_) return std::nullopt;
  return lease;
}

Status LeaseBook::Write(bool stopped) {
  // Never the processing root itself: see MkdirBelow.
  if (Status s = fs::MkdirBelow(config_.processing_root, Dir()); !s.ok()) return s;
  nlohmann::json body = {{"replica", config_.replica_id},
                         {"instance", instance_},
                         {"host", HostName()},
                         {"pid", ::getpid()},
                         {"pid_space", PidSpace()},
                         {"seq", ++seq_},
                         {"time", FormatTimestamp(clock_.WallNow())}};
  if (stopped) body["stopped"] = true;
  Status s = fs::AtomicWriteFile(PathOf(config_.replica_id), body.dump());
  if (s.ok()) written_ = true;
  return s;
}

Status LeaseBook::Heartbeat() {
  std::lock_guard lock(mu_);
  // Since our last write, only a process with our id writes this file: compared by instance
  // (a write of ours whose status was lost reads as ours).
  if (const auto other = written_ ? AnothersLease() : std::nullopt) {
    if (!IdInUseElsewhere()) {
      LogError(
          "another live process uses this replica id: each may take the other's claims for "
          "orphans; give each replica its own APP_REPLICA_ID",
          {{"replica", config_.replica_id}, {"host", other->host}, {"pid", other->pid}});
    }
    id_in_use_seen_ = Ticks(clock_.Now());
  }
  Status s = Write(/*stopped=*/false);
  if (s.ok()) {
    std::lock_guard credit(credit_mu_);
    const MonoTime now = clock_.Now();
    const Duration gap = now - own_write_last_;
    const MonoTime began = CreditedAt(own_write_last_);
    own_write_excess_ += std::max(gap - Interval(), Duration::zero());
    own_write_last_ = now;
    if (gap > FromSeconds(config_.lease_timeout_s / 2)) {
      if (long_gaps_.size() == kLongGapsKept) long_gaps_.pop_front();
      long_gaps_.emplace_back(began, CreditedAt(now));
    }
  }
  return s;
}

Duration LeaseBook::Interval() const { return FromSeconds(config_.lease_timeout_s / 4); }

MonoTime LeaseBook::CreditedAt(MonoTime now) const {
  const Duration open = std::max(now - own_write_last_ - Interval(), Duration::zero());
  return now - own_write_excess_ - open;
}

MonoTime LeaseBook::Credited() const {
  std::lock_guard lock(credit_mu_);
  return CreditedAt(clock_.Now());
}

Duration LeaseBook::SilenceSince(MonoTime changed) const {
  std::lock_guard lock(credit_mu_);
  MonoTime from = changed;
  for (const auto& [began, ended] : long_gaps_) {
    if (began - changed < FromSeconds(config_.lease_timeout_s)) from = std::max(from, ended);
  }
  return CreditedAt(clock_.Now()) - from;
}

bool LeaseBook::IdInUseElsewhere() const {
  const int64_t seen = id_in_use_seen_.load();
  return seen != 0 && clock_.Now() - FromTicks(seen) < FromSeconds(config_.lease_timeout_s);
}

void LeaseBook::MarkStopped() {
  std::lock_guard lock(mu_);
  // Only over a lease of ours: a process refused at start-up, or a twin whose heartbeat found
  // the other's write, must not mark that process's lease stopped.
  if (!written_ || AnothersLease()) return;
  if (Status s = Write(/*stopped=*/true); !s.ok()) {
    LogWarn("could not mark the lease stopped", {{"error", s.ToString()}});
  }
}

std::string LeaseBook::PathOf(const std::string& owner) const {
  return fs::Join(Dir(), owner + std::string(kSuffix));
}

void LeaseBook::Record(const std::string& owner, const Result<std::string>& content, MonoTime now) {
  // A missing file reads as empty. Any other failure shows nothing: neither silence nor life.
  // Its time is not a change (with reads failing now and then, a dead replica would never be
  // judged dead), and IsDead holds off while the last read failed. But a failure with a file
  // there (EACCES on a file of another uid, EISDIR, too large: one a stat finds; not a passing
  // EIO or ESTALE, nor a lookup refused as a whole, as when Kerberos tickets expire) where the
  // last good read found none leaves the content unknown, so that the next good read counts as
  // a change whatever it finds: a live replica's lease unreadable until removed reads as
  // missing, as it read before. Where the last good read found content, finding it again means
  // no write, so that reads refused now and then do not keep a dead replica alive either.
  const bool failed = !content.ok() && content.status().kind() != ErrorKind::kNotFound;
  const bool something_there =
      failed && content.status().kind() != ErrorKind::kTransient && fs::Stat(PathOf(owner)).ok();
  const std::string text = content.ok() ? *content : "";
  // Credited once the read is done, not when it began: a read held up through an outage of the
  // volume returns after this replica's heartbeat took the outage out of the credited clock.
  const MonoTime credited = Credited();
  auto [it, inserted] =
      seen_.try_emplace(owner, Seen{text, !failed, credited, now, std::nullopt, false});
  Seen& seen = it->second;
  if (something_there && seen.content.empty()) seen.known = false;
  if (!failed) {
    if (seen.unreadable_told) {
      unreadable_leases_.fetch_sub(1);
      LogInfo("the lease of a replica can be read again", {{"replica", owner}});
    }
    seen.unreadable_since.reset();
    seen.unreadable_told = false;
  } else if (!seen.unreadable_since) {
    seen.unreadable_since = now;
  } else if (!seen.unreadable_told &&
             now - *seen.unreadable_since >= FromSeconds(config_.lease_timeout_s)) {
    seen.unreadable_told = true;
    unreadable_leases_.fetch_add(1);
    LogWarn(
        "the lease of a replica cannot be read: its claims are not taken over while it cannot "
        "be read",
        {{"replica", owner}, {"error", content.status().ToString()}});
  }
  if (inserted) return;
  seen.read = now;
  if (!failed && (!seen.known || seen.content != text)) {
    seen.content = text;
    seen.known = true;
    seen.changed = credited;
  }
}

void LeaseBook::Observe() {
  auto entries = fs::ListDir(Dir());
  if (!entries.ok()) return;
  const MonoTime now = clock_.Now();
  std::map<std::string, MonoTime> temps;
  std::set<std::string> listed;
  for (const auto& e : *entries) {
    if (const auto target = fs::AtomicWriteTarget(e.name); target && target->ends_with(kSuffix)) {
      const auto known = temps_.find(e.name);
      const MonoTime first_seen = known == temps_.end() ? now : known->second;
      temps.emplace(e.name, first_seen);
      RemoveTempIfLeft(e.name, std::string(target->substr(0, target->size() - kSuffix.size())),
                       first_seen);
      continue;
    }
    if (!e.name.ends_with(kSuffix)) continue;
    const std::string owner = e.name.substr(0, e.name.size() - kSuffix.size());
    if (!IsValidReplicaId(owner)) continue;
    listed.insert(owner);
    Record(owner, fs::ReadSmallFile(fs::Join(Dir(), e.name), 4096), now);
  }
  temps_ = std::move(temps);
  // A lease that could not be read and is listed no more (removed by hand, or by a replica that
  // could read it) reads as missing: else it would be told unreadable for good, as nothing else
  // reads the lease of a replica that owns no claim.
  for (const auto& [owner, seen] : seen_) {
    if (seen.unreadable_since && listed.count(owner) == 0) {
      Record(owner, Status(ErrorKind::kNotFound, "not listed"), now);
    }
  }
}

void LeaseBook::RemoveTempIfLeft(const std::string& name, const std::string& owner,
                                 MonoTime first_seen) {
  if (!IsValidReplicaId(owner) ||
      clock_.Now() - first_seen < FromSeconds(config_.lease_timeout_s)) {
    return;
  }
  if (owner == config_.replica_id) {
    // Not one a heartbeat of ours is writing now (it holds mu_ while it writes).
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    (void)fs::Unlink(fs::Join(Dir(), name));
    return;
  }
  // Another replica's, once that replica is dead: a live one may be about to rename it.
  if (IsDead(owner)) (void)fs::Unlink(fs::Join(Dir(), name));
}

bool LeaseBook::IsDead(const std::string& owner) {
  if (owner == config_.replica_id) return false;
  const MonoTime now = clock_.Now();
  const auto it = seen_.find(owner);
  if (it == seen_.end() || now - it->second.read >= std::chrono::seconds(1)) {
    Record(owner, fs::ReadSmallFile(PathOf(owner), 4096), now);
  }
  const Seen& seen = seen_.at(owner);
  return !seen.unreadable_since &&
         SilenceSince(seen.changed) >= FromSeconds(config_.lease_timeout_s);
}

std::optional<Duration> LeaseBook::Silence(const std::string& owner) const {
  const auto it = seen_.find(owner);
  if (it == seen_.end() || it->second.unreadable_since) return std::nullopt;
  return SilenceSince(it->second.changed);
}

void LeaseBook::Prune(const std::set<std::string>& owners_with_claims) {
  for (auto it = seen_.begin(); it != seen_.end();) {
    const bool long_dead =
        !it->second.unreadable_since &&
        SilenceSince(it->second.changed) >= FromSeconds(10 * config_.lease_timeout_s);
    if (it->first != config_.replica_id && long_dead && owners_with_claims.count(it->first) == 0) {
      // Gone already when only a temp file of its was left (RemoveTempIfLeft): nothing to say.
      if (::unlink(PathOf(it->first).c_str()) == 0) {
        LogInfo("removed the lease of a replica gone for good", {{"replica", it->first}});
      }
      if (it->second.unreadable_told) unreadable_leases_.fetch_sub(1);
      it = seen_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace nbu::core
