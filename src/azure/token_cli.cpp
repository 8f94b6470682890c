#include "azure/token_cli.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <thread>

extern char** environ;

namespace nbu::azure {
namespace {

std::optional<std::string> FindOnPath(const std::string& name, const std::string& path_var) {
  size_t start = 0;
  while (start <= path_var.size()) {
    size_t end = path_var.find(':', start);
    if (end == std::string::npos) end = path_var.size();
    std::string dir = path_var.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

std::string FirstLine(const std::string& s, size_t max) {
  size_t b = s.find_first_not_of(" \r\n\t");
  if (b == std::string::npos) return "";
  std::string line = s.substr(b, s.find_first_of("\r\n", b) - b);
  if (line.size() > max) line.replace(max, std::string::npos, "...");
  return line;
}

// "2022-08-24 00:43:08.000000" in local time.
std::optional<WallTime> ParseLocalTime(const std::string& s) {
  int year = 0, mon = 0, day = 0, hour = 0, min = 0, sec = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%d %d:%d:%d", &year, &mon, &day, &hour, &min, &sec) != 6) {
    return std::nullopt;
  }
  std::tm tm = CalendarTime(year, mon, day, hour, min, sec);
  tm.tm_isdst = -1;
  const std::time_t t = std::mktime(&tm);
  if (t <= 0 || static_cast<double>(t) > kMaxTokenEpochS) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return ErrnoStatus("pipe", e);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Its own process group, so a timeout kills what it started too (`az` is a shell script that
  // runs python without exec).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return ErrnoStatus("spawn " + argv[0], rc);
  }
  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    const int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  // It may have closed its output and still run: it gets what is left of the timeout too.
  int status = 0;
  for (;;) {
    if (result.timed_out) ::kill(-pid, SIGKILL);
    const pid_t r = ::waitpid(pid, &status, result.timed_out ? 0 : WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) break;
    if (r == 0 && std::chrono::steady_clock::now() >= deadline) result.timed_out = true;
    if (r == 0 && !result.timed_out) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

Result<AccessToken> ParseAzureCliToken(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status(ErrorKind::kAuth, "azure-cli: output is not a JSON object");
  }
  AccessToken t;
  if (auto it = j.find("accessToken"); it != j.end() && it->is_string()) t.token = *it;
  if (t.token.empty()) return Status(ErrorKind::kAuth, "azure-cli: output has no accessToken");
  // Beyond kMaxTokenEpochS (a value in milliseconds), expiresOn is read instead.
  if (auto on = NumberField(j, "expires_on", kMaxTokenEpochS); on && *on >= 1) {
    t.expires_on = WallTime(std::chrono::duration_cast<WallTime::duration>(
        std::chrono::seconds(static_cast<int64_t>(*on))));
    return t;
  }
  if (auto it = j.find("expiresOn"); it != j.end() && it->is_string()) {
    if (auto when = ParseLocalTime(*it)) {
      t.expires_on = *when;
      return t;
    }
  }
  return Status(ErrorKind::kAuth, "azure-cli: output has no usable expires_on or expiresOn");
}

AzureCliCredential::AzureCliCredential(std::string path_var, AzureCliOptions options)
    : TokenCredential(*options.clock),
      path_var_(std::move(path_var)),
      options_(std::move(options)) {}

std::shared_ptr<AzureCliCredential> AzureCliCredential::FromEnv(const EnvLookup& env,
                                                                AzureCliOptions options) {
  return std::shared_ptr<AzureCliCredential>(new AzureCliCredential(
      env("PATH").value_or("/usr/local/bin:/usr/bin:/bin"), std::move(options)));
}

// `az` is not interrupted by a stop: it is bounded by options_.timeout (13 s).
Result<AccessToken> AzureCliCredential::FetchToken(std::stop_token /*stop*/) {
  const std::optional<std::string> az = FindOnPath("az", path_var_);
  if (!az) return Status(ErrorKind::kAuth, "azure-cli: 'az' not found on PATH");
  std::vector<std::string> argv = {*az,    "account",    "get-access-token", "--output",
                                   "json", "--resource", kStorageResource};
  if (!options_.tenant_id.empty()) {
    argv.emplace_back("--tenant");
    argv.push_back(options_.tenant_id);
  }
  Result<ProcessResult> run = RunProcess(argv, options_.timeout);
  if (!run.ok()) return Status(ErrorKind::kAuth, "azure-cli: " + run.status().message());
  if (run->timed_out) {
    return Status(ErrorKind::kAuth, "azure-cli: az did not answer within " +
                                        std::to_string(options_.timeout.count() / 1000) + " s");
  }
  if (run->exit_code != 0) {
    std::string why = FirstLine(run->err, 200);
    if (why.empty()) why = "no error output";
    return Status(ErrorKind::kAuth,
                  "azure-cli: az exited with " + std::to_string(run->exit_code) + ": " + why);
  }
  return ParseAzureCliToken(run->out);
}

}  // namespace nbu::azure
