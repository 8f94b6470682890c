#include "core/config.h"

#include "azure/url.h"
#include "core/layout.h"
#include "util/fs.h"
#include "util/text.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

extern char** environ;

namespace nbu::core {
namespace {

std::string Trimmed(std::string_view s) { return std::string(TrimSpaceAscii(s)); }

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = Trimmed(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string DefaultHostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "replica";
  std::string h(buf);
  for (char& c : h) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) c = '-';
  }
  return h;
}

// Whether an ignore pattern matches every name a file can have that ends in `suffix` (every
// name at all for an empty one: *, ?*, [!.]*, *?*), dot-files aside unless `dot_files` (else
// skipped anyway: [!.]* then keeps them): tried on names that begin with each byte, and on ones
// whose part before the suffix ends with it. A pattern that matches each of those has one
// element besides its stars and the suffix, so this is exact for it. [!r]* keeps the names that
// begin with r, *[!é] those that end in é, and [a-z]* the file 2024.csv: they pass.
bool MatchesEveryName(const std::string& pattern, bool dot_files, const std::string& suffix = "") {
  for (int b = 1; b <= 0xFF; ++b) {
    const char c = static_cast<char>(b);
    if (c == '/') continue;
    const std::string one(1, c);
    if ((c != '.' || dot_files) &&
        (!GlobMatch(pattern, one + suffix) || !GlobMatch(pattern, one + "x9" + suffix))) {
      return false;
    }
    if (!GlobMatch(pattern, "x9" + one + suffix)) return false;
  }
  return true;
}

// Reads variables, collecting one error line per bad value.
class Reader {
 public:
  Reader(const EnvMap& env, std::vector<std::string>* errors) : env_(env), errors_(errors) {}

  const std::string* Raw(const char* name) const {
    auto it = env_.find(name);
    // Blank as empty: a value of spaces in a manifest is no more a choice than an empty one.
    return it == env_.end() || Trimmed(it->second).empty() ? nullptr : &it->second;
  }
  void Str(const char* name, std::string* out) const {
    if (const std::string* v = Raw(name)) *out = Trimmed(*v);
  }
  // A value with a default that an empty one must not stand for: `APP_NFS_INCOMING_DIR=` (a
  // variable left blank in a manifest, a .env line cut short) would otherwise quietly become
  // /mnt/nfs/incoming. Set but empty (or blank) is an error; unset keeps the default.
  void NonEmptyStr(const char* name, std::string* out) const {
    const auto it = env_.find(name);
    if (it == env_.end()) return;
    const std::string t = Trimmed(it->second);
    if (t.empty()) {
      Error(name, "is set but empty: give a value, or unset it for the default (" + *out + ")");
    } else {
      *out = t;
    }
  }
  void Double(const char* name, double* out, double min, double max) const {
    const std::string* v = Raw(name);
    if (v == nullptr) return;
    const std::string t = Trimmed(*v);
    // Decimal only: strtod would take "0x10" as 16 and "0x1p4" too. A leading '+' is allowed,
    // as strtod allowed it; "inf" and "nan" parse, and are refused as not finite.
    const std::string_view digits = t.starts_with('+') ? std::string_view(t).substr(1) : t;
    double d = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d,
                                           std::chars_format::general);
    if (digits.empty() || (t.starts_with('+') && digits.starts_with('-')) || ec != std::errc() ||
        ptr != digits.data() + digits.size() || !std::isfinite(d)) {
      Error(name, "must be a decimal number, got \"" + t + "\"");
    } else if (d < min || d > max) {
      Error(name, "must be between " + Num(min) + " and " + Num(max) + ", got " + t);
    } else {
      *out = d;
    }
  }
  template <typename T>
  void Int(const char* name, T* out, T min, T max) const {
    const std::string* v = Raw(name);
    if (v == nullptr) return;
    const std::string t = Trimmed(*v);
    T value{};
    auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
    if (ec != std::errc() || ptr != t.data() + t.size()) {
      Error(name, "must be an integer, got \"" + t + "\"");
    } else if (value < min || value > max) {
      Error(name, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                      ", got " + t);
    } else {
      *out = value;
    }
  }
  void Bool(const char* name, bool* out) const {
    const std::string* v = Raw(name);
    if (v == nullptr) return;
    const std::string t = LowerAscii(TrimSpaceAscii(*v));
    if (t == "1" || t == "true" || t == "yes" || t == "on")
      *out = true;
    else if (t == "0" || t == "false" || t == "no" || t == "off")
      *out = false;
    else
      Error(name, "must be true or false, got \"" + t + "\"");
  }
  void Error(const char* name, const std::string& what) const {
    errors_->push_back(std::string(name) + ": " + what);
  }

 private:
  static std::string Num(double d) {  // the shortest form that reads back as `d`
    std::array<char, 32> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), d);
    return ec == std::errc() ? std::string(buf.data(), end) : std::to_string(d);
  }
  const EnvMap& env_;
  std::vector<std::string>* errors_;
};

bool IsValidContainerName(const std::string& c) {
  if (c.size() < 3 || c.size() > 63) return false;
  if (!std::isalnum(static_cast<unsigned char>(c.front())) ||
      !std::isalnum(static_cast<unsigned char>(c.back()))) {
    return false;
  }
  for (size_t i = 0; i < c.size(); ++i) {
    const char ch = c[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) return false;
    if (ch == '-' && i > 0 && c[i - 1] == '-') return false;
  }
  return true;
}

// Whether one of two directories is, or lies inside, the other: compared as absolute paths with
// "." and ".." folded and trailing slashes dropped.
bool PathsOverlap(const std::string& a, const std::string& b) {
  const auto norm = [](const std::string& p) {
    std::string n = std::filesystem::absolute(p).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    return n;
  };
  const std::string x = norm(a), y = norm(b);
  const auto inside = [](const std::string& inner, const std::string& outer) {
    return inner.size() > outer.size() && inner.starts_with(outer) &&
           (outer == "/" || inner[outer.size()] == '/');
  };
  return x == y || inside(x, y) || inside(y, x);
}

// A variable name a .env line may set: [A-Za-z_][A-Za-z0-9_]*.
bool IsEnvName(const std::string& name) {
  const auto alpha = [](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_';
  };
  return !name.empty() && alpha(name.front()) &&
         std::all_of(name.begin(), name.end(),
                     [&](char ch) { return alpha(ch) || (ch >= '0' && ch <= '9'); });
}

// Whether `dir`, or a part of its path, is not a directory (then the error line for `var` is
// added); false when it is one or does not exist (yet). Said on its own: a failed create or
// rename in it would otherwise be explained as something else (ENOTDIR is no matter of mounts).
bool NotADirectory(const char* var, const std::string& dir, std::vector<std::string>* errors) {
  struct stat st {};
  std::string problem;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) problem = dir + " is not a directory";
  } else if (errno == ENOTDIR) {
    problem = dir + " is not a directory: a part of its path is a file";
  }
  if (!problem.empty()) errors->push_back(std::string(var) + ": " + problem);
  return !problem.empty();
}

// The four trees with their settings' names, in the order their overlaps are reported.
std::array<std::pair<const char*, const std::string*>, 4> Roots(const Config& c) {
  return {{{"APP_NFS_INCOMING_DIR", &c.incoming_dir},
           {"APP_NFS_PROCESSING_ROOT", &c.processing_root},
           {"APP_NFS_FAILED_ROOT", &c.failed_root},
           {"APP_LOCAL_STAGING_ROOT", &c.staging_root}}};
}

constexpr const char* kAuthModes[] = {
    "auto",        "connection-string", "shared-key",       "sas",
    "environment", "workload-identity", "managed-identity", "azure-cli"};

// A probe left behind would lie in a root until this replica's next start.
void RemoveProbe(const std::string& path) {
  (void)fs::Tried([&] { return fs::Unlink(path); });
}

// Whether a file made in incoming can be renamed into the processing and failed trees, as every
// claim and dead letter is; `probe` is a fresh name, and incoming holds a file of that name.
void ProbeRenames(const Config& c, const std::string& probe, std::vector<std::string>* errors) {
  std::string at = fs::Join(c.incoming_dir, probe);
  for (const auto& [var, root] :
       {std::pair<const char*, const std::string&>{"APP_NFS_PROCESSING_ROOT", c.processing_root},
        {"APP_NFS_FAILED_ROOT", c.failed_root}}) {
    if (NotADirectory(var, root, errors)) continue;
    const std::string to = fs::Join(root, probe);
    Status s = fs::Tried([&dir = root] { return fs::MkdirAll(dir); });
    if (s.ok()) s = fs::Tried([&] { return fs::RenameEntry(at, to); });
    if (s.ok()) {
      at = to;
    } else if (s.kind() == ErrorKind::kTransient) {
      errors->push_back(
          std::string(var) + ": renaming a file from APP_NFS_INCOMING_DIR (" + c.incoming_dir +
          ") into " + root +
          " kept failing (the volume's trouble, not the setting's?): " + s.ToString());
    } else {
      errors->push_back(std::string(var) + ": a file in APP_NFS_INCOMING_DIR (" + c.incoming_dir +
                        ") cannot be renamed into " + root +
                        "; both must be on one file system and one mount: " + s.ToString());
    }
  }
  RemoveProbe(at);
}

}  // namespace

const std::vector<ConfigVar>& ConfigVars() {
  static const std::vector<ConfigVar> kVars = {
      {"APP_AZURE_ACCOUNT_URL", "", "Blob endpoint, e.g. https://<account>.blob.core.windows.net",
       false},
      {"APP_AZURE_CONTAINER", "ingest", "Target container (created if missing)", false},
      {"APP_AZURE_CONNECTION_STRING", "",
       "Connection string with AccountKey or SharedAccessSignature", true},
      {"APP_AZURE_ACCOUNT_NAME", "",
       "Account name for shared-key auth; without APP_AZURE_ACCOUNT_URL it makes the host "
       "<name>.blob.core.windows.net, so letters, digits and inner hyphens; beside an Azure "
       "blob host of another account (<other>.blob.core.windows.net) it stops start-up, as "
       "storage would refuse every request",
       false},
      {"APP_AZURE_ACCOUNT_KEY", "", "Account key (base64) for shared-key auth", true},
      {"APP_AZURE_SAS_TOKEN", "",
       "SAS token (with or without leading ?) used with APP_AZURE_ACCOUNT_URL", true},
      {"APP_AZURE_AUTH", "auto",
       "One of auto, connection-string, shared-key, sas, environment, workload-identity, "
       "managed-identity, azure-cli",
       false},
      {"APP_AZURE_CA_FILE", "",
       "PEM bundle for a private CA, for storage and token requests (default: SSL_CERT_FILE, "
       "then the system store). A path that is not a readable file of PEM certificates (a "
       "directory, a DER certificate) stops start-up, as does such an SSL_CERT_FILE unless every "
       "request is plain http",
       false},
      {"APP_AZURE_MANAGED_IDENTITY_OBJECT_ID", "",
       "Managed identity: the object (principal) id of the user-assigned identity to use, instead "
       "of `AZURE_CLIENT_ID`",
       false},
      {"APP_AZURE_MANAGED_IDENTITY_RESOURCE_ID", "",
       "Managed identity: the ARM resource id of the user-assigned identity to use, instead of "
       "`AZURE_CLIENT_ID`",
       false},
      {"APP_AZURE_ACCESS_TIER", "",
       "Hot, Cool, Cold or Archive; empty = account default. Start-up writes one empty blob with "
       "it, and waits while storage refuses it (a premium or GPv1 account). An archived blob "
       "cannot be written over: a new version of its file (or a re-upload after a late write) "
       "is dead-lettered until the blob is rehydrated or deleted; so is one that an "
       "immutability policy or legal hold keeps",
       false},
      {"APP_AZURE_PUT_BLOB_MAX_BYTES", "67108864",
       "Files up to this size use one Put Blob (one request; with `crc64`, storage computes the "
       "blob's MD5, not this service); larger use blocks, several in flight per file",
       false},
      {"APP_AZURE_PUT_BLOB_CHECKSUM", "auto",
       "What storage checks a file sent in one Put Blob against: `crc64` (x-ms-content-crc64; the "
       "blob stores the MD5 storage computes of what it took), `md5` (Content-MD5, computed "
       "here), or `auto`: `crc64` when a probe at start-up shows storage checks it, else `md5`. "
       "`crc64` set here skips the probe: storage is trusted to check the header",
       false},
      {"APP_AZURE_BLOCK_SIZE", "8388608",
       "Block size for block uploads (grown so a blob stays under 50,000 blocks)", false},
      {"APP_AZURE_MAX_CONCURRENCY", "8",
       "Blocks in flight per file; its staging copy holds at most this many blocks plus two",
       false},
      {"APP_UPLOAD_CAP_MBPS", "0",
       "Cap on what this replica sends to storage, every upload together, in megabits per second "
       "(as AzCopy's `--cap-mbps`); 0 = no cap. Each request in flight (up to "
       "`APP_WORKER_CONCURRENCY` x `APP_AZURE_MAX_CONCURRENCY`) must get 2 KiB/s of it at least, "
       "or a transfer would be taken for stalled",
       false},
      {"APP_AZURE_RETRY_MAX_ATTEMPTS", "6", "Tries per HTTP request", false},
      {"APP_AZURE_RETRY_BASE_S", "0.8", "First retry delay (doubles each try, jitter 0.8-1.3)",
       false},
      {"APP_AZURE_RETRY_MAX_S", "60", "Cap on a retry delay, including Retry-After", false},
      {"APP_NFS_INCOMING_DIR", "/mnt/nfs/incoming", "Where producers drop files, under <session>/",
       false},
      {"APP_NFS_PROCESSING_ROOT", "/mnt/nfs/.processing",
       "Claims, completion markers, leases (same volume as incoming)", false},
      {"APP_NFS_FAILED_ROOT", "/mnt/nfs/.failed", "Dead-letter area (same volume as incoming)",
       false},
      {"APP_NFS_REQUIRE_FS_TYPE", "",
       "File system types, comma-separated as the kernel names them (`nfs,nfs4`), that the "
       "incoming, processing and failed roots must be on, checked at start-up before anything is "
       "made there: a volume that is not mounted (its empty mount point on the local disk) then "
       "stops start-up instead of being scanned. Empty: not checked",
       false},
      {"APP_LOCAL_STAGING_ROOT", "/mnt/staging",
       "Fast local disk for staging copies (per replica): per worker at most "
       "max(`APP_AZURE_PUT_BLOB_MAX_BYTES`, (`APP_AZURE_MAX_CONCURRENCY` + 2) x block size); a "
       "volume smaller than that is named by a warning at start-up",
       false},
      {"APP_POLL_INTERVAL_S", "2.0", "Seconds between scans of the session directory", false},
      {"APP_MIN_FILE_AGE_S", "5.0",
       "A file must be unchanged this long (service clock) before upload. A writer on another NFS "
       "client may hold its pages back longer (its writeback): have producers rename whole files "
       "into place, or see docs/deploy.md",
       false},
      {"APP_CHANGE_HINTS", "true",
       "Scan at once when inotify reports a change in the session directory. It sees files written "
       "on this host only (not by other NFS clients), so the poll still finds every file",
       false},
      {"APP_FILE_EXTENSIONS", "",
       "Comma-separated name endings to upload, not globs (e.g. `.csv,.bin`); empty = all", false},
      {"APP_IGNORE_PATTERNS", "*.tmp,*.part,*.partial,*.swp",
       "Comma-separated globs (`*`, `?`, `[...]`, as fnmatch(3); `?` is one byte) matched "
       "against the file name (not its path), in any case as the extensions are (ASCII letters "
       "and ranges fold; classes such as `[[:upper:]]` do not), to skip; "
       "dot-files are skipped unless `APP_INCLUDE_DOT_FILES` is true. Set but empty: no patterns",
       false},
      {"APP_INCLUDE_DOT_FILES", "false",
       "Upload dot-files (`.zattrs`) and enter dot-directories (`.zarr/`, `.git/`) as other names, "
       "through the same filters; NFS silly renames (`.nfs` and hex digits) and the names of "
       "snapshot directories (`.snapshot`, `.snapshots`, `.zfs`, a file's too) stay skipped. A "
       "producer's hidden temporaries and lock files must then be in `APP_IGNORE_PATTERNS` "
       "(rsync's `.name.XXXXXX`: `.*.??????`, or run it with `--inplace` or `--temp-dir` "
       "elsewhere; `.~lock.*`, `*.lock`, `.fuse_hidden*`, `*.sw?`), else one that holds still for "
       "`APP_MIN_FILE_AGE_S` is claimed, and its owner's rename or unlock fails",
       false},
      {"APP_WORKER_CONCURRENCY", "4", "Files processed in parallel", false},
      {"APP_MAX_QUEUE_SIZE", "2000",
       "Ready files waiting for a worker; the scanner waits when full", false},
      {"APP_GC_INTERVAL_S", "30.0", "Seconds between GC / recovery sweeps", false},
      {"APP_COMPLETED_RETENTION_S", "0",
       "Keep completion markers this long (on the file server's clock) before GC removes them. A "
       "file written to again through a descriptor its producer kept open is uploaded again if "
       "the write comes while its marker is kept: set this above the longest pause of such "
       "producers. A write whose producer then sets the file's times back (as `cp -p` does) is "
       "told by the look each worker takes after the upload, noted for up to 100,000 markers per "
       "process and not across a restart; a warning says when more are kept",
       false},
      {"APP_MAX_FILE_ATTEMPTS", "5",
       "Failed attempts before a file is dead-lettered. A run of the file that ended with the "
       "service (a crash, SIGKILL, an OOM kill) counts as one, across restarts and replicas; a "
       "shutdown does not",
       false},
      {"APP_STAGING_FSYNC", "false",
       "fsync each staging copy before its blob is committed. Off by default: the copy is scratch "
       "(recovery copies the claim again) and every body read back from it is sent with a "
       "checksum computed from the source bytes (Content-MD5 or x-ms-content-crc64), which "
       "storage verifies",
       false},
      {"APP_LEASE_TIMEOUT_S", "30",
       "A replica whose heartbeat is this stale is dead; its claims are taken over at the next "
       "sweep (`APP_GC_INTERVAL_S`): less than this plus two sweep intervals after its last "
       "heartbeat (this plus one interval where this is a whole number of intervals, as with the "
       "defaults: 60 s), counted by a replica just started from its first look at that lease",
       false},
      {"APP_HTTP_HOST", "127.0.0.1",
       "API listen address: this host only by default (the images set `0.0.0.0`). Anyone who can "
       "reach it can stop the watch unless `APP_HTTP_TOKEN` is set",
       false},
      {"APP_HTTP_PORT", "8000", "API port; 0 takes a free one, named by the starting log line",
       false},
      {"APP_HTTP_TOKEN", "",
       "Bearer token the POST routes require (`Authorization: Bearer <token>`), 16-256 "
       "characters of [A-Za-z0-9._~+/=-]; unset = none (set but empty is refused). The GET routes "
       "stay open for probes and "
       "scrapers",
       true},
      {"APP_REPLICA_ID", "<host name>",
       "Unique id of this replica (pod name): 1-224 characters of `[A-Za-z0-9._-]`, not `.` or "
       "`..`. A second live process with the same id on the volume is refused at start-up and "
       "reported in the status",
       false},
      {"APP_SHUTDOWN_GRACE_S", "25",
       "Seconds in-flight uploads get after SIGTERM (or SIGINT, SIGHUP). Then their requests are "
       "aborted (within about a second) and their claims left for recovery, which resumes them "
       "(blocks already staged are not sent again). A second signal does not shorten it (it is "
       "answered in the log); SIGKILL does",
       false},
      {"APP_LOG_LEVEL", "info", "debug, info, warn or error", false},
      {"APP_ENV_FILE", ".env",
       "File of KEY=VALUE defaults (the environment wins), at most 1 MiB; symlinks and pipes "
       "are read. The default `.env` may be missing; a file named here must be readable",
       false},
  };
  return kVars;
}

std::string ConfigMarkdown() {
  std::string out = "| Variable | Default | Meaning |\n|---|---|---|\n";
  for (const auto& v : ConfigVars()) {
    const std::string def = *v.default_text ? "`" + std::string(v.default_text) + "`" : "(empty)";
    out += "| `" + std::string(v.name) + "` | " + def + " | " + v.description + "." +
           (v.secret ? " **Secret.**" : "") + " |\n";
  }
  return out;
}

std::vector<std::string> UnknownVariables(const std::map<std::string, std::string>& env) {
  std::vector<std::string> out;
  const auto& vars = ConfigVars();
  for (const auto& entry : env) {
    const std::string& name = entry.first;  // a structured binding cannot be captured (clang 14)
    if (!name.starts_with("APP_")) continue;
    if (std::none_of(vars.begin(), vars.end(), [&](const ConfigVar& v) { return name == v.name; }))
      out.push_back(name);
  }
  return out;
}

EnvMap ParseDotEnv(const std::string& text, std::vector<std::string>* errors) {
  EnvMap out;
  std::istringstream in(text);
  std::string line;
  size_t number = 0;
  for (bool first = true; std::getline(in, line); first = false) {
    ++number;
    if (first && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3);  // a UTF-8 byte-order mark
    std::string t = Trimmed(line);
    if (t.empty() || t[0] == '#') continue;
    if (t.rfind("export ", 0) == 0) t = Trimmed(t.substr(7));
    const size_t eq = t.find('=');
    const std::string key = Trimmed(t.substr(0, eq));
    // `APP_HTTP_TOKEN: c2Vj...=` would otherwise set a variable named after most of the secret
    // (which the unknown-variable warning prints) and leave the token unset. The line is not
    // echoed: it may hold a secret.
    if (eq == std::string::npos || !IsEnvName(key)) {
      errors->push_back("line " + std::to_string(number) +
                        " is not KEY=VALUE with a KEY of letters, digits and _ (not starting "
                        "with a digit); the line is not shown, it may hold a secret");
      continue;
    }
    std::string value = Trimmed(t.substr(eq + 1));
    // A quoted value ends at its closing quote; a comment may follow it, as after a bare value
    // (as Docker Compose reads the same file).
    const size_t close = value.empty() || (value.front() != '"' && value.front() != '\'')
                             ? std::string::npos
                             : value.find(value.front(), 1);
    if (close != std::string::npos &&
        (close + 1 == value.size() || Trimmed(value.substr(close + 1)).starts_with('#'))) {
      value = value.substr(1, close - 1);
    } else if (const size_t hash = value.find(" #"); hash != std::string::npos) {
      value = Trimmed(value.substr(0, hash));
    }
    out[key] = value;
  }
  return out;
}

EnvMap LoadEnvironment(const std::string& dotenv_path, bool required,
                       std::vector<std::string>* errors) {
  EnvMap env;
  // Followed if a symlink (a ConfigMap or Secret volume's files are), unlike the service's
  // other reads. O_NONBLOCK: a FIFO without a writer must not hang start-up. A pipe (bash's
  // <(...)) is read as its writer writes, waiting at most 10 s for each piece; /dev/zero no
  // further than the cap.
  if (const int fd = ::open(dotenv_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC); fd >= 0) {
    constexpr size_t kMaxEnvFile = size_t{1} << 20;
    std::string text;
    std::string problem;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
      problem = "is not a file";
    } else {
      char buf[8192];
      ssize_t n = 0;
      while (text.size() <= kMaxEnvFile) {
        n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
          text.append(buf, static_cast<size_t>(n));
        } else if (n < 0 && errno == EAGAIN) {
          pollfd p{fd, POLLIN, 0};
          if (::poll(&p, 1, 10'000) == 0) {
            problem = "gave no data within 10 s";
            break;
          }
        } else if (n == 0 || errno != EINTR) {
          break;
        }
      }
      if (n < 0 && problem.empty()) {
        problem = std::string("cannot be read: ") + std::strerror(errno);
      }
      if (text.size() > kMaxEnvFile) problem = "is larger than 1 MiB";
    }
    ::close(fd);
    if (problem.empty()) {
      std::vector<std::string> lines;
      env = ParseDotEnv(text, &lines);
      for (const auto& e : lines) errors->push_back("APP_ENV_FILE: " + dotenv_path + " " + e);
    } else {
      errors->push_back("APP_ENV_FILE: " + dotenv_path + " " + problem);
    }
  } else if (required || errno != ENOENT) {
    errors->push_back("APP_ENV_FILE: cannot open " + dotenv_path + ": " + std::strerror(errno));
  }
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

// A passing error of the volume (fs::Tried) is tried again: one hiccup at start-up must not read
// as a misconfiguration (exit code 2).
void CheckVolume(const Config& c, std::vector<std::string>* errors) {
  // First, before a root is made: on a volume that is not mounted, MkdirAll would make the roots
  // on the disk under the mount point, and a later mount would hide whatever was claimed there.
  if (!c.nfs_require_fs_type.empty()) {
    const size_t before = errors->size();
    std::string wanted;
    for (const std::string& type : c.nfs_require_fs_type) {
      wanted += (wanted.empty() ? "" : " or ") + type;
    }
    for (const auto& [var, root] : Roots(c)) {
      if (root == &c.staging_root) continue;
      // Tried again on a passing error of the volume, as every look at it here.
      Result<fs::Mount> mount = fs::Mount{};
      (void)fs::Tried([&mount, root = root] {
        mount = fs::MountOf(*root);
        return mount.status();
      });
      if (!mount.ok()) {
        errors->push_back(std::string(var) +
                          ": its file system cannot be told: " + mount.status().ToString());
      } else if (std::find(c.nfs_require_fs_type.begin(), c.nfs_require_fs_type.end(),
                           mount->type) == c.nfs_require_fs_type.end()) {
        errors->push_back(std::string(var) + ": " + *root + " is on " + mount->type +
                          " (mounted at " + mount->point + "), not " + wanted +
                          " as APP_NFS_REQUIRE_FS_TYPE requires: is the volume mounted?");
      }
    }
    if (errors->size() != before) return;
  }
  const std::string ours = ".nbu-probe-" + c.replica_id + "-";
  // Probes of this replica left by a process killed mid-check: only this replica makes these
  // names (the nonce must follow at once: replica r1-x's probes are not r1's), and unlink leaves
  // a directory of such a name, say a session's, alone.
  for (const std::string* root :
       {&c.staging_root, &c.incoming_dir, &c.processing_root, &c.failed_root}) {
    if (auto entries = fs::ListDir(*root); entries.ok()) {
      for (const auto& e : *entries) {
        if (e.name.starts_with(ours) && IsNonce(std::string_view(e.name).substr(ours.size()))) {
          RemoveProbe(fs::Join(*root, e.name));
        }
      }
    }
  }
  const std::string probe = ours + NewNonce();
  const auto made = [&](const char* var, const std::string& dir) {
    if (NotADirectory(var, dir, errors)) return false;
    Status s = fs::Tried([&] { return fs::MkdirAll(dir); });
    // A fresh name: one found there was made by a try whose reply was lost.
    if (s.ok()) s = fs::Tried([&] { return fs::CreateFresh(fs::Join(dir, probe)).status(); });
    if (!s.ok()) {
      errors->push_back(std::string(var) + ": cannot create a file in " + dir + ": " +
                        s.ToString());
    }
    return s.ok();
  };
  if (made("APP_LOCAL_STAGING_ROOT", c.staging_root)) RemoveProbe(fs::Join(c.staging_root, probe));
  if (made("APP_NFS_INCOMING_DIR", c.incoming_dir)) ProbeRenames(c, probe, errors);
  // ParseConfig compared the paths as written; a symlink can still make one tree another or put
  // it inside another: staging into the volume (start-up empties staging), or the failed tree
  // into incoming (its dead letters would be taken as producer files). Resolved once each exists.
  const auto roots = Roots(c);
  std::array<std::optional<std::string>, roots.size()> resolved;
  for (size_t i = 0; i < roots.size(); ++i) {
    std::error_code error;
    const auto path = std::filesystem::canonical(*roots[i].second, error);
    if (!error) resolved[i] = path.string();
  }
  // The line names the setting that goes through a link (the later one if both or neither do).
  const auto linked = [&](size_t k) {
    return *resolved[k] != std::filesystem::absolute(*roots[k].second).lexically_normal().string();
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    for (size_t j = i + 1; j < roots.size(); ++j) {
      if (!resolved[i] || !resolved[j] || !PathsOverlap(*resolved[i], *resolved[j])) continue;
      const auto [named, other] = linked(i) && !linked(j) ? std::pair(i, j) : std::pair(j, i);
      errors->push_back(std::string(roots[named].first) + ": " + *roots[named].second +
                        " resolves to " + *resolved[named] +
                        ", which is, contains or lies inside " + roots[other].first + " (" +
                        *resolved[other] + ")");
    }
  }
}

bool GlobMatch(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), FNM_CASEFOLD) == 0;
}

bool ErrorNames(const std::vector<std::string>& errors, std::string_view variable) {
  return std::any_of(errors.begin(), errors.end(), [&](const std::string& e) {
    return e.size() > variable.size() && e.starts_with(variable) && e[variable.size()] == ':';
  });
}

bool ParseConfig(const EnvMap& env, Config* out, std::vector<std::string>* errors) {
  const size_t before = errors->size();
  Config c;
  const Reader r(env, errors);
  r.Str("APP_AZURE_ACCOUNT_URL", &c.azure_account_url);
  r.NonEmptyStr("APP_AZURE_CONTAINER", &c.azure_container);
  r.Str("APP_AZURE_CONNECTION_STRING", &c.azure_connection_string);
  r.Str("APP_AZURE_ACCOUNT_NAME", &c.azure_account_name);
  r.Str("APP_AZURE_ACCOUNT_KEY", &c.azure_account_key);
  r.Str("APP_AZURE_SAS_TOKEN", &c.azure_sas_token);
  r.Str("APP_AZURE_AUTH", &c.azure_auth);
  r.Str("APP_AZURE_CA_FILE", &c.azure_ca_file);
  r.Str("APP_AZURE_ACCESS_TIER", &c.azure_access_tier);
  // Put Blob takes 5000 MiB, but a file whose name another writer's uncommitted blocks hold is
  // sent as one Put Block (PutAsOneBlock), which Azure takes up to 4000 MiB.
  r.Int<uint64_t>("APP_AZURE_PUT_BLOB_MAX_BYTES", &c.azure_put_blob_max_bytes, 0, 4000ull << 20);
  r.Str("APP_AZURE_PUT_BLOB_CHECKSUM", &c.azure_put_blob_checksum);
  r.Int<uint64_t>("APP_AZURE_BLOCK_SIZE", &c.azure_block_size, 64 << 10, 4000ull << 20);
  r.Int("APP_AZURE_MAX_CONCURRENCY", &c.azure_max_concurrency, 1, 256);
  r.Int("APP_AZURE_RETRY_MAX_ATTEMPTS", &c.azure_retry_max_attempts, 1, 100);
  r.Double("APP_AZURE_RETRY_BASE_S", &c.azure_retry_base_s, 0.001, 600);
  r.Double("APP_AZURE_RETRY_MAX_S", &c.azure_retry_max_s, 0.001, 3600);
  r.NonEmptyStr("APP_NFS_INCOMING_DIR", &c.incoming_dir);
  r.NonEmptyStr("APP_NFS_PROCESSING_ROOT", &c.processing_root);
  r.NonEmptyStr("APP_NFS_FAILED_ROOT", &c.failed_root);
  r.NonEmptyStr("APP_LOCAL_STAGING_ROOT", &c.staging_root);
  if (const std::string* v = r.Raw("APP_NFS_REQUIRE_FS_TYPE")) {
    for (const std::string& type : SplitList(*v)) {
      // As /proc/self/mountinfo spells them: "nfs4", "fuse.sshfs", "ext4".
      if (type.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") != std::string::npos) {
        r.Error("APP_NFS_REQUIRE_FS_TYPE",
                "\"" + type + "\" is not a file system type such as nfs or nfs4 (lower case)");
      } else {
        c.nfs_require_fs_type.push_back(type);
      }
    }
  }
  r.Double("APP_POLL_INTERVAL_S", &c.poll_interval_s, 0.01, 3600);
  r.Double("APP_MIN_FILE_AGE_S", &c.min_file_age_s, 0, 86400);
  r.Bool("APP_CHANGE_HINTS", &c.change_hints);
  r.Bool("APP_INCLUDE_DOT_FILES", &c.include_dot_files);
  if (const std::string* v = r.Raw("APP_FILE_EXTENSIONS")) {
    for (std::string ext : SplitList(*v)) {
      ext = LowerAscii(ext);
      if (ext.front() != '.') ext.insert(ext.begin(), '.');
      // "*.csv" would be taken as the ending ".*.csv", which no file has: nothing would upload.
      // So would ".csv\n.bin", a list put on lines of its own: blanks and control characters.
      const bool blank = std::any_of(ext.begin(), ext.end(),
                                     [](char ch) { return (ch >= 0 && ch <= ' ') || ch == 0x7f; });
      if (ext.size() < 2 || blank || ext.find_first_of("/*?[]") != std::string::npos) {
        r.Error("APP_FILE_EXTENSIONS",
                "invalid extension \"" + ext + "\": a name ending such as .csv, not a glob");
      } else {
        c.file_extensions.push_back(ext);
      }
    }
  }
  if (env.count("APP_IGNORE_PATTERNS") != 0)
    c.ignore_patterns = SplitList(env.at("APP_IGNORE_PATTERNS"));
  // Filters that leave nothing to upload are mistakes, not choices: refused at start-up rather
  // than run a service that uploads nothing and says nothing.
  for (const std::string& p : c.ignore_patterns) {
    if (p.find('/') != std::string::npos) {
      r.Error("APP_IGNORE_PATTERNS", "\"" + p +
                                         "\" has a /: patterns are matched against the file "
                                         "name, not its path, so it would never match");
    } else if (MatchesEveryName(p, c.include_dot_files)) {
      r.Error("APP_IGNORE_PATTERNS", "\"" + p + "\" ignores every file: nothing would be uploaded");
    }
  }
  for (const std::string& ext : c.file_extensions) {
    const auto ignores_all = std::find_if(
        c.ignore_patterns.begin(), c.ignore_patterns.end(),
        [&](const std::string& p) { return MatchesEveryName(p, c.include_dot_files, ext); });
    if (ignores_all != c.ignore_patterns.end()) {
      r.Error("APP_FILE_EXTENSIONS", "files ending in " + ext +
                                         " are all ignored by the pattern \"" + *ignores_all +
                                         "\" of APP_IGNORE_PATTERNS: none would be "
                                         "uploaded");
    }
  }
  r.Int("APP_WORKER_CONCURRENCY", &c.worker_concurrency, 1, 256);
  r.Double("APP_UPLOAD_CAP_MBPS", &c.upload_cap_mbps, 0, 1e6);
  if (const double share = c.upload_cap_mbps * 125000.0 /
                           (c.worker_concurrency * static_cast<double>(c.azure_max_concurrency));
      c.upload_cap_mbps > 0 && share < 2048) {
    r.Error("APP_UPLOAD_CAP_MBPS",
            "shared by up to " + std::to_string(c.worker_concurrency * c.azure_max_concurrency) +
                " requests at once (APP_WORKER_CONCURRENCY x APP_AZURE_MAX_CONCURRENCY), each "
                "would get " +
                std::to_string(static_cast<int>(share)) +
                " bytes/s, under the 2 KiB/s a transfer needs not to be taken for stalled: raise "
                "it or lower those");
  }
  r.Int("APP_MAX_QUEUE_SIZE", &c.max_queue_size, 1, 10'000'000);
  r.Double("APP_GC_INTERVAL_S", &c.gc_interval_s, 0.05, 86400);
  r.Double("APP_COMPLETED_RETENTION_S", &c.completed_retention_s, 0, 365 * 86400.0);
  r.Int("APP_MAX_FILE_ATTEMPTS", &c.max_file_attempts, 1, 1000);
  r.Bool("APP_STAGING_FSYNC", &c.staging_fsync);
  r.Double("APP_LEASE_TIMEOUT_S", &c.lease_timeout_s, 1, 86400);
  r.Str("APP_HTTP_HOST", &c.http_host);
  r.Int("APP_HTTP_PORT", &c.http_port, 0, 65535);
  r.Str("APP_HTTP_TOKEN", &c.http_token);
  r.Str("APP_REPLICA_ID", &c.replica_id);
  r.Double("APP_SHUTDOWN_GRACE_S", &c.shutdown_grace_s, 0, 3600);
  r.Str("APP_LOG_LEVEL", &c.log_level);

  if (c.replica_id.empty()) c.replica_id = DefaultHostName();
  if (!IsValidReplicaId(c.replica_id)) {
    r.Error("APP_REPLICA_ID", "must be 1-" + std::to_string(kMaxReplicaId) +
                                  " characters of [A-Za-z0-9._-], not . or ..");
  }
  if (!IsValidContainerName(c.azure_container)) {
    r.Error("APP_AZURE_CONTAINER",
            "must be 3-63 lower-case letters, digits and single hyphens, starting and ending "
            "with a letter or digit");
  }
  if (std::find(std::begin(kAuthModes), std::end(kAuthModes), c.azure_auth) ==
      std::end(kAuthModes)) {
    r.Error("APP_AZURE_AUTH",
            "must be one of auto, connection-string, shared-key, sas, "
            "environment, workload-identity, managed-identity, azure-cli");
  }
  if (!c.azure_access_tier.empty() && c.azure_access_tier != "Hot" &&
      c.azure_access_tier != "Cool" && c.azure_access_tier != "Cold" &&
      c.azure_access_tier != "Archive") {
    r.Error("APP_AZURE_ACCESS_TIER", "must be Hot, Cool, Cold or Archive");
  }
  if (c.azure_put_blob_checksum != "auto" && c.azure_put_blob_checksum != "crc64" &&
      c.azure_put_blob_checksum != "md5") {
    r.Error("APP_AZURE_PUT_BLOB_CHECKSUM", "must be auto, crc64 or md5");
  }
  if (!c.azure_account_url.empty()) {
    const size_t scheme = c.azure_account_url.rfind("https://", 0) == 0  ? 8
                          : c.azure_account_url.rfind("http://", 0) == 0 ? 7
                                                                         : 0;
    const std::string_view authority =
        std::string_view(c.azure_account_url)
            .substr(scheme)
            .substr(0, c.azure_account_url.find('/', scheme) - scheme);
    if (scheme == 0) {
      r.Error("APP_AZURE_ACCOUNT_URL", "must start with https:// (or http:// for an emulator)");
    } else if (azure::HoldsAtBeforeQuery(c.azure_account_url)) {
      // A user and password would be printed with the endpoint: the value is not echoed.
      r.Error("APP_AZURE_ACCOUNT_URL",
              "must not hold a user name or password (user@host), nor '@' in its path");
    } else if (authority.empty() || authority.front() == ':') {
      r.Error("APP_AZURE_ACCOUNT_URL", "has no host name");
    } else if (!azure::PortIsNumeric(authority)) {
      r.Error("APP_AZURE_ACCOUNT_URL", "has a port that is not a number");
    }
  }
  // A portal "SAS URL" pasted here would carry its signature into every URL and log line: the
  // value is not echoed, and the SAS belongs in APP_AZURE_SAS_TOKEN.
  if (c.azure_account_url.find_first_of("?#") != std::string::npos) {
    r.Error("APP_AZURE_ACCOUNT_URL",
            "must not have a query or fragment (a SAS token goes in APP_AZURE_SAS_TOKEN)");
  }
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
      c.log_level != "error") {
    r.Error("APP_LOG_LEVEL", "must be debug, info, warn or error");
  }
  for (const auto& [name, value] : std::initializer_list<std::pair<const char*, std::string*>>{
           {"APP_NFS_INCOMING_DIR", &c.incoming_dir},
           {"APP_NFS_PROCESSING_ROOT", &c.processing_root},
           {"APP_NFS_FAILED_ROOT", &c.failed_root},
           {"APP_LOCAL_STAGING_ROOT", &c.staging_root}}) {
    while (value->size() > 1 && value->back() == '/') value->pop_back();
    if (value->empty()) r.Error(name, "must not be empty");
  }
  // The four trees must be apart: start-up empties staging, GC prunes the processing tree, and
  // the scanner takes every file under incoming. Compared as absolute, normalised paths
  // (symlinks are not resolved: the directories need not exist yet; CheckVolume resolves them).
  const auto roots = Roots(c);
  for (size_t i = 0; i < std::size(roots); ++i) {
    for (size_t j = i + 1; j < std::size(roots); ++j) {
      if (!roots[i].second->empty() && !roots[j].second->empty() &&
          PathsOverlap(*roots[i].second, *roots[j].second)) {
        r.Error(roots[j].first, "must not be, contain or lie inside " +
                                    std::string(roots[i].first) + " (" + *roots[i].second + ")");
      }
    }
  }
  if (c.azure_retry_base_s > c.azure_retry_max_s) {
    r.Error("APP_AZURE_RETRY_BASE_S", "must not exceed APP_AZURE_RETRY_MAX_S");
  }
  // Sent in a header: printable, no spaces; long enough not to be guessed in a few tries. The
  // value is not echoed.
  // Set but empty (an environment entry over the env file's, a Secret whose `openssl rand`
  // printed nothing) would open the POST routes without a word: refused like a bad token.
  if (const auto token = env.find("APP_HTTP_TOKEN");
      token != env.end() && Trimmed(token->second).empty()) {
    r.Error("APP_HTTP_TOKEN",
            "is set but empty, which would leave the POST routes open: give a token, or unset it "
            "to run without one");
  } else if (!c.http_token.empty() &&
             (c.http_token.size() < 16 || c.http_token.size() > 256 ||
              c.http_token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                             "0123456789._~+/=-") != std::string::npos)) {
    r.Error("APP_HTTP_TOKEN", "must be 16-256 characters of [A-Za-z0-9._~+/=-]");
  }
  *out = std::move(c);
  return errors->size() == before;
}

}  // namespace nbu::core
