#include "core/layout.h"

#include "core/blob_name.h"

#include "util/crypto.h"

#include <algorithm>
#include <vector>

namespace nbu::core {
namespace {

constexpr std::string_view kClaimed = "claimed";
constexpr std::string_view kDone = "done";

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool IsIdentifier(std::string_view s, size_t max_len) {
  if (s.empty() || s.size() > max_len || s == "." || s == "..") return false;
  for (char c : s) {
    if (!IsIdChar(c)) return false;
  }
  return true;
}

std::string JoinParts(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) {
    if (p.empty()) continue;
    if (!out.empty()) out.push_back('/');
    out.append(p);
  }
  return out;
}

// Splits "<date>/<session>/<reldir...>/<name>" into its pieces; false when too short or invalid.
bool SplitTree(std::string_view rel, std::string* date, std::string* session, std::string* reldir,
               std::string* name) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= rel.size()) {
    const size_t slash = rel.find('/', start);
    const size_t end = slash == std::string_view::npos ? rel.size() : slash;
    parts.push_back(rel.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 3) return false;
  for (std::string_view p : parts) {
    if (p.empty() || p == "." || p == "..") return false;
  }
  if (!IsDateDir(parts[0]) || !IsValidSessionName(parts[1])) return false;
  *date = parts[0];
  *session = parts[1];
  reldir->clear();
  for (size_t i = 2; i + 1 < parts.size(); ++i) {
    if (!reldir->empty()) reldir->push_back('/');
    reldir->append(parts[i]);
  }
  *name = parts.back();
  return true;
}

// "~<owner>~<nonce>[~<runs>].<state>": the claim entry's name after its base.
std::string ClaimSuffix(const ClaimPath& c) {
  return "~" + c.owner + "~" + c.nonce + (c.runs == 1 ? "" : "~" + std::to_string(c.runs)) + "." +
         std::string(c.state == ClaimState::kClaimed ? kClaimed : kDone);
}

// <date>/<session>/<reldir>/<base><suffix>, or <base>/<suffix> when held in the base's directory.
std::string TreePath(const std::string& date, const std::string& session, const std::string& reldir,
                     const std::string& base, const std::string& suffix, bool in_base_dir) {
  return in_base_dir ? JoinParts({date, session, reldir, base, suffix})
                     : JoinParts({date, session, reldir, base + suffix});
}

// An entry held in its base's directory: that directory, the last of *reldir, is the base.
bool TakeBaseFromDir(std::string* reldir, std::string* base) {
  if (reldir->empty()) return false;
  const size_t slash = reldir->rfind('/');
  *base = slash == std::string::npos ? *reldir : reldir->substr(slash + 1);
  reldir->resize(slash == std::string::npos ? 0 : slash);
  return true;
}

// "0" or 2-kMaxClaimRuns without leading zeros: the only run counts a claim name carries.
std::optional<int> ParseRuns(std::string_view s) {
  if (s.empty() || s.size() > 4 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  int n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  if (n == 1) return std::nullopt;
  return n;
}

}  // namespace

std::string ClaimPath::RelPath() const { return JoinParts({reldir, base}); }
std::string ClaimPath::BlobName() const {
  std::string out = date;
  for (std::string_view part :
       {std::string_view(session), std::string_view(reldir), std::string_view(base)}) {
    AppendBlobPath(out, part);
  }
  return out;
}
bool ClaimPath::InBaseDir() const {
  return base_dir || base.size() + ClaimSuffix(*this).size() > kMaxEntryName;
}
std::string ClaimPath::EntryName() const { return (InBaseDir() ? "" : base) + ClaimSuffix(*this); }
std::string ClaimPath::Path() const {
  return TreePath(date, session, reldir, base, ClaimSuffix(*this), InBaseDir());
}

ClaimPath ClaimPath::WithState(ClaimState s) const {
  ClaimPath c = *this;
  c.base_dir = InBaseDir();
  c.state = s;
  return c;
}

ClaimPath ClaimPath::WithOwner(std::string o) const {
  ClaimPath c = *this;
  c.base_dir = InBaseDir();
  c.owner = std::move(o);
  return c;
}

ClaimPath ClaimPath::WithRuns(int r) const {
  ClaimPath c = *this;
  c.base_dir = InBaseDir();
  c.runs = std::clamp(r, 0, kMaxClaimRuns);
  return c;
}

ClaimPath ClaimPath::Renewed(const std::string& o) const {
  ClaimPath c = WithOwner(o).WithState(ClaimState::kClaimed).WithRuns(0);
  c.nonce = NewNonce();
  return c;
}

// The longest a failed entry's name gets after its base: "~<nonce>.failed.json" and the
// ".tmp-<12 hex>" of the reason's atomic write.
constexpr size_t kFailedSuffixMax = 1 + 16 + 12 + 5 + 12;

std::string FailedPath::RelPath() const { return JoinParts({reldir, base}); }
bool FailedPath::InBaseDir() const {
  return base_dir || base.size() + kFailedSuffixMax > kMaxEntryName;
}
std::string FailedPath::DataPath() const {
  return TreePath(date, session, reldir, base, "~" + nonce + ".failed", InBaseDir());
}
std::string FailedPath::ReasonPath() const { return DataPath() + ".json"; }

std::optional<ClaimPath> ParseClaimPath(std::string_view rel) {
  ClaimPath c;
  std::string name;
  if (!SplitTree(rel, &c.date, &c.session, &c.reldir, &name)) return std::nullopt;
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string_view state = std::string_view(name).substr(dot + 1);
  if (state == kClaimed)
    c.state = ClaimState::kClaimed;
  else if (state == kDone)
    c.state = ClaimState::kDone;
  else
    return std::nullopt;
  std::string_view stem = std::string_view(name).substr(0, dot);
  // A last field that is not a nonce is the run count, written only when it is not 1.
  if (const size_t t = stem.rfind('~'); t != std::string_view::npos) {
    const std::optional<int> runs = ParseRuns(stem.substr(t + 1));
    if (runs) {
      c.runs = *runs;
      stem = stem.substr(0, t);
    }
  }
  const size_t t2 = stem.rfind('~');
  if (t2 == std::string_view::npos) return std::nullopt;
  const size_t t1 = t2 == 0 ? std::string_view::npos : stem.rfind('~', t2 - 1);
  if (t1 == std::string_view::npos) return std::nullopt;
  c.nonce = stem.substr(t2 + 1);
  c.owner = stem.substr(t1 + 1, t2 - t1 - 1);
  c.base = stem.substr(0, t1);
  if (!IsNonce(c.nonce) || !IsValidReplicaId(c.owner)) return std::nullopt;
  if (c.base.empty() && !TakeBaseFromDir(&c.reldir, &c.base)) return std::nullopt;
  c.base_dir = t1 == 0;
  return c;
}

std::optional<FailedPath> ParseFailedPath(std::string_view rel) {
  FailedPath f;
  std::string name;
  if (!SplitTree(rel, &f.date, &f.session, &f.reldir, &name)) return std::nullopt;
  std::string_view stem = name;
  constexpr std::string_view kReason = ".failed.json";
  constexpr std::string_view kData = ".failed";
  if (stem.ends_with(kReason)) {
    f.is_reason = true;
    stem.remove_suffix(kReason.size());
  } else if (stem.ends_with(kData)) {
    stem.remove_suffix(kData.size());
  } else {
    return std::nullopt;
  }
  const size_t t = stem.rfind('~');
  if (t == std::string_view::npos) return std::nullopt;
  f.nonce = stem.substr(t + 1);
  f.base = stem.substr(0, t);
  if (!IsNonce(f.nonce)) return std::nullopt;
  if (f.base.empty() && !TakeBaseFromDir(&f.reldir, &f.base)) return std::nullopt;
  f.base_dir = t == 0;
  return f;
}

FailedPath FailedPathFor(const ClaimPath& claim) {
  return FailedPath{claim.date, claim.session, claim.reldir, claim.base, claim.nonce, false, false};
}

std::string StagingPath(const ClaimPath& claim) {
  const std::string suffix = "~" + claim.nonce;
  return TreePath(claim.date, claim.session, claim.reldir, claim.base, suffix,
                  claim.base.size() + suffix.size() > kMaxEntryName);
}

bool IsValidSessionName(std::string_view name) { return IsIdentifier(name, 128); }
bool IsNewSessionName(std::string_view name) {
  return IsValidSessionName(name) && name.back() != '.';
}
bool IsValidReplicaId(std::string_view id) { return IsIdentifier(id, kMaxReplicaId); }

bool IsDateDir(std::string_view name) {
  if (name.size() != 8) return false;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool IsNonce(std::string_view s) {
  if (s.size() != 16) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string NewNonce() { return FastRandomHex(8); }

bool IsHiddenName(std::string_view name) { return name.empty() || name.front() == '.'; }

bool IsSnapshotDirName(std::string_view name) {
  return name == ".snapshot" || name == ".snapshots" || name == ".zfs";
}

bool IsNfsSillyName(std::string_view name) {
  if (!name.starts_with(".nfs") || name.size() == 4) return false;
  return std::all_of(name.begin() + 4, name.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.';
  });
}

}  // namespace nbu::core
