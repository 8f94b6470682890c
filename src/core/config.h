// Service configuration: APP_* variables from the environment and an optional .env file (the
// environment wins). Validation reports one line per problem, naming the variable; secrets are
// never echoed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace nbu::core {

struct Config {
  // Azure
  std::string azure_account_url;  // https://<acct>.blob.core.windows.net
  std::string azure_container = "ingest";
  std::string azure_connection_string;  // secret
  std::string azure_account_name;
  std::string azure_account_key;  // secret
  std::string azure_sas_token;    // secret
  std::string azure_auth = "auto";
  std::string azure_ca_file;
  std::string azure_access_tier;  // "", Hot, Cool, Cold, Archive
  uint64_t azure_put_blob_max_bytes = 64ull << 20;
  std::string azure_put_blob_checksum = "auto";  // auto, crc64, md5
  uint64_t azure_block_size = 8ull << 20;
  int azure_max_concurrency = 8;
  int azure_retry_max_attempts = 6;
  double azure_retry_base_s = 0.8;
  double azure_retry_max_s = 60;

  // Volumes
  std::string incoming_dir = "/mnt/nfs/incoming";
  std::string processing_root = "/mnt/nfs/.processing";
  std::string failed_root = "/mnt/nfs/.failed";
  std::string staging_root = "/mnt/staging";
  std::vector<std::string> nfs_require_fs_type;  // empty: any

  // Pipeline
  double poll_interval_s = 2.0;
  double min_file_age_s = 5.0;
  bool change_hints = true;
  bool include_dot_files = false;            // dot-files and dot-directories, as other names
  std::vector<std::string> file_extensions;  // lower-case, with leading dot; empty = all
  std::vector<std::string> ignore_patterns = {"*.tmp", "*.part", "*.partial", "*.swp"};
  int worker_concurrency = 4;
  double upload_cap_mbps = 0;  // 0: none
  int max_queue_size = 2000;
  double gc_interval_s = 30.0;
  double completed_retention_s = 0;
  int max_file_attempts = 5;
  // Storage unreachable for one file while it takes others (or the volume failing to read one
  // claim while it reads others): once no other file has found it so for this long, and others
  // are still uploaded (read) between this file's failures, its failures count
  // (FileProcessor::FailsOnlyThis). Not an environment variable; tests shorten it.
  double unavailable_counts_after_s = 600;
  bool staging_fsync = false;
  double lease_timeout_s = 30.0;

  // Process
  std::string http_host = "127.0.0.1";
  int http_port = 8000;
  std::string http_token;  // secret; empty: the POST routes are open
  std::string replica_id;  // default: host name
  double shutdown_grace_s = 25.0;
  std::string log_level = "info";
};

struct ConfigVar {
  const char* name;
  const char* default_text;
  const char* description;
  bool secret;
};
// Every APP_* variable the service reads (for --config-vars, docs and manifest checks).
const std::vector<ConfigVar>& ConfigVars();
// The table of ConfigVars() in Markdown, as the README shows it (--config-markdown).
std::string ConfigMarkdown();
// APP_* names in `env` that the service does not read (typos, as a rule), sorted.
std::vector<std::string> UnknownVariables(const std::map<std::string, std::string>& env);

using EnvMap = std::map<std::string, std::string>;

// Parses a .env file body: KEY=VALUE lines, `export ` prefix, # comments, single or double quotes.
// Each other non-blank line (no `=`, or a KEY not of [A-Za-z_][A-Za-z0-9_]*) appends "line N ..."
// to `errors`, naming the line by number and never echoing it (it may hold a secret).
EnvMap ParseDotEnv(const std::string& text, std::vector<std::string>* errors);
// The process environment merged over the .env file at `dotenv_path`. A missing file is fine
// unless `required` (a file the user named); then, when it cannot be read, and for each line
// that is not KEY=VALUE, the problem is appended to `errors`.
EnvMap LoadEnvironment(const std::string& dotenv_path, bool required,
                       std::vector<std::string>* errors);

// Builds and validates the configuration; on failure `errors` holds one line per problem, each
// starting with the variable's name and ": ". `out` is set either way (a refused value may be
// in it, or its default) so that checks of the other variables can still run; true when no line
// was added.
bool ParseConfig(const EnvMap& env, Config* out, std::vector<std::string>* errors);
// Whether a line of `errors` is about `variable` (starts with "<variable>: ").
bool ErrorNames(const std::vector<std::string>& errors, std::string_view variable);

// Checks the directories on the volume, creating them when missing: a file can be made in each,
// and one made in incoming can be renamed into the processing and failed roots (every state
// change is a rename: another file system, or another mount of the same one, gives EXDEV on
// every claim). Appends one line per problem to `errors`. Probe files are dot-files (which the
// scanner skips) and are removed. With APP_NFS_REQUIRE_FS_TYPE, the NFS roots' file system types
// are checked first, and nothing is made when one is wrong.
void CheckVolume(const Config& c, std::vector<std::string>* errors);

// Glob match as fnmatch(3) does it (*, ?, [...] classes and ranges, [!...], \ escapes; no path
// separators special), ASCII letters in any case, as used by APP_IGNORE_PATTERNS: "*.tmp" skips a
// Windows tool's DATA.TMP too, as APP_FILE_EXTENSIONS' endings match in any case. In the C
// locale: ? is one byte, and a character of UTF-8 beyond ASCII is several.
bool GlobMatch(const std::string& pattern, const std::string& name);

}  // namespace nbu::core
