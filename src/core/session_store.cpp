#include "core/session_store.h"

#include "core/layout.h"
#include "util/fs.h"
#include "util/log.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <utility>

namespace nbu::core {
namespace {

constexpr size_t kMaxFileBytes = size_t{64} * 1024;
// A generation can be removed between listing and reading it (after two newer ones were
// published); each such miss lists again, a few times at most.
constexpr int kReadAttempts = 4;

// "<g>.json" with g >= 1, else nullopt (temp files, anything else).
std::optional<uint64_t> ParseGeneration(std::string_view name) {
  constexpr std::string_view kSuffix = ".json";
  if (!name.ends_with(kSuffix)) return std::nullopt;
  name.remove_suffix(kSuffix.size());
  uint64_t g = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), g);
  if (name.empty() || ec != std::errc() || end != name.data() + name.size() || g == 0) {
    return std::nullopt;
  }
  return g;
}

// A writer's temp file, "<g>.json.tmp-<random>" (fs::TempPathFor): the generation it meant to
// publish, else nullopt.
std::optional<uint64_t> ParseTempGeneration(std::string_view name) {
  const auto target = fs::AtomicWriteTarget(name);
  return target ? ParseGeneration(*target) : std::nullopt;
}

void RaiseTo(std::atomic<uint64_t>& v, uint64_t g) {
  uint64_t cur = v.load();
  while (cur < g && !v.compare_exchange_weak(cur, g)) {
  }
}

Result<std::optional<SessionState>> Parse(const std::string& path, const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    return Status(ErrorKind::kPermanent, path + ": not a valid session file");
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
    return Status(ErrorKind::kPermanent, path + ": invalid session name");
  }
  return std::optional<SessionState>(s);
}

}  // namespace

SessionStore::SessionStore(const std::string& processing_root, DirLister list_dir)
    : root_(processing_root),
      legacy_path_(fs::Join(processing_root, "_session.json")),
      dir_(fs::Join(processing_root, "_session")),
      list_dir_(std::move(list_dir)) {}

std::string SessionStore::GenerationPath(uint64_t generation) const {
  return fs::Join(dir_, std::to_string(generation) + ".json");
}

Result<uint64_t> SessionStore::Newest() const {
  uint64_t newest = known_.load();
  // Listed on every read (two or three names), though a lookup by name would do between
  // changes: a generation left behind by a failed removal must not pass for the newest.
  auto entries = list_dir_(dir_);
  if (!entries.ok() && entries.status().kind() != ErrorKind::kNotFound) return entries.status();
  if (entries.ok()) {
    for (const auto& e : *entries) newest = std::max(newest, ParseGeneration(e.name).value_or(0));
  }
  // Newer ones by name: an NFS client may serve a listing from its cache for a while (up to a
  // minute with default mount options), a failed lookup it does not cache (lookupcache=positive).
  // A gap of one is skipped, since each publish keeps the generation before it.
  for (;;) {
    if (fs::Stat(GenerationPath(newest + 1)).ok()) {
      newest += 1;
    } else if (fs::Stat(GenerationPath(newest + 2)).ok()) {
      newest += 2;
    } else {
      return newest;
    }
  }
}

Result<std::optional<SessionState>> SessionStore::Load(uint64_t* generation) const {
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    auto newest = Newest();
    if (!newest.ok()) return newest.status();
    const uint64_t g = *newest;
    const std::string path = g == 0 ? legacy_path_ : GenerationPath(g);
    auto text = fs::ReadSmallFile(path, kMaxFileBytes);
    if (!text.ok() && text.status().kind() == ErrorKind::kNotFound && g != 0) {
      // Removed since it was listed, or known here and gone (the directory cleared by hand, a
      // volume restored). In the second case this store's high-water mark no longer holds:
      // dropped, unless another thread has raised it meanwhile. Then asked again.
      uint64_t expected = g;
      known_.compare_exchange_strong(expected, 0);
      continue;
    }
    if (generation != nullptr) *generation = g;
    if (!text.ok() && text.status().kind() == ErrorKind::kNotFound) {
      // No session ever started, unless the processing root is gone too: a volume unmounted
      // under us, whose empty mount point says nothing of the session.
      if (auto root = fs::Stat(root_); !root.ok()) {
        return Status(ErrorKind::kTransient,
                      root.status().message() + " (the processing root: is the volume mounted?)");
      }
      return std::optional<SessionState>{};
    }
    if (!text.ok()) return text.status();
    RaiseTo(known_, g);
    return Parse(path, *text);
  }
  return Status(ErrorKind::kTransient, dir_ + ": generations removed faster than read");
}

Status SessionStore::Save(const SessionState& s, uint64_t loaded) const {
  nlohmann::json j = {{"name", s.name}, {"started_at", s.started_at}, {"active", s.active}};
  if (!s.stopped_at.empty()) j["stopped_at"] = s.stopped_at;
  if (Status st = fs::MkdirBelow(root_, dir_); !st.ok()) return st;  // never the root itself
  const uint64_t next = loaded + 1;
  const std::string path = GenerationPath(next);
  // Not a generation's name, so no reader takes it; unique, so no other writer touches it.
  const std::string tmp = fs::TempPathFor(path);
  if (Status st = fs::WriteNewFile(tmp, j.dump(2)); !st.ok()) return st;
  Status linked = fs::LinkNew(tmp, path);
  (void)fs::Unlink(tmp);  // the published name keeps the data
  if (linked.kind() == ErrorKind::kConflict) {
    RaiseTo(known_, next);  // so the next Load reads it even while our listing lags
    return Status(ErrorKind::kConflict, path + ": another replica changed the session first");
  }
  if (!linked.ok()) return linked;
  RaiseTo(known_, next);
  // A writer that stalled across two publishes links a name that the cleanup had removed, and
  // readers take the newer generations above it: the change is lost unless the caller decides
  // again. The cleanup removed it, so there are at least two above it. (One above it may also be
  // a publish made on ours since, which must not be decided again; two in that moment are not
  // expected.) The file is an old generation now, removed by the next cleanup.
  if (auto newest = Newest(); newest.ok() && *newest >= next + 2) {
    return Status(ErrorKind::kConflict, path + ": another replica changed the session first");
  }
  // Others may read the new generation already: a failed fsync must not deny it to the caller.
  if (Status st = fs::FsyncDir(dir_); !st.ok()) {
    LogWarn("cannot fsync the session directory", {{"error", st.ToString()}});
  }
  RemoveOldGenerations(next);
  return Status::Ok();
}

void SessionStore::RemoveOldGenerations(uint64_t newest) const {
  // The previous generation stays: a reader that listed just before this publish finds it. So
  // does a temp file meant for it or a later one: its writer may be about to link it (and lose).
  // An older temp file is a crashed writer's, between its write and its unlink.
  auto entries = list_dir_(dir_);
  if (!entries.ok()) return;
  for (const auto& e : *entries) {
    auto g = ParseGeneration(e.name);
    if (!g) g = ParseTempGeneration(e.name);
    if (g && *g + 1 < newest) (void)fs::Unlink(fs::Join(dir_, e.name));
  }
  if (newest >= 2) (void)fs::Unlink(legacy_path_);  // generation 0, superseded for good
}

}  // namespace nbu::core
