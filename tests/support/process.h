// Test support: run a real binary as a child process with its own environment and log file.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace nbu::test {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with `env` (an empty value unsets) over a few of the parent's
  // variables: PATH, HOME, TMPDIR, LANG, LANGUAGE, LC_*, USER, LOGNAME and *SAN_OPTIONS; nothing
  // else of the test runner's environment (proxies, APP_*, AZURE_*, OTEL_*) reaches the child.
  // stdout and stderr go to `log_path` (appended). The child is killed when this process dies.
  ChildProcess(std::vector<std::string> argv, std::map<std::string, std::string> env,
               std::string log_path);
  // A child still running is SIGKILLed; one under CheckAtEnd() is stopped and checked instead.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // For a program under test (the service, nfs-testgen): at destruction the child is checked
  // as a test of it. One still running is sent SIGTERM (after a SIGCONT, should the test have
  // left it stopped through Signal()) and must exit 0 within `stop_within`; if it has not, it is
  // SIGKILLed. One that ended
  // before without the test taking its status from Wait() (a crash, say) must have exited 0. And
  // its part of the log (what was appended from its start on) must hold no sanitizer's report,
  // whether it exited or was killed (a report written before a SIGKILL counts). Each of these
  // fails the current test (ADD_FAILURE), naming it and the child and quoting the log. Without
  // this, a SIGKILL at the end of a test keeps LeakSanitizer from ever running, and a report
  // written after the test's last look at the log goes unseen.
  void CheckAtEnd(std::chrono::milliseconds stop_within);

  int pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit; returns the exit code (128+signal if killed) or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool Running();
  const std::string& log_path() const { return log_path_; }
  // The log's size before the child started: its own lines are those from here on (a log that
  // several processes append to in turn holds theirs before).
  size_t log_start() const { return log_start_; }
  std::string ReadLog() const;

 private:
  std::optional<int> Reap(std::chrono::milliseconds timeout);
  void StopAndCheck();

  int pid_ = -1;
  std::string name_;  // argv[0]'s file name, for messages
  std::optional<int> exit_code_;
  bool exit_seen_ = false;     // the test took the exit status from Wait()
  bool left_stopped_ = false;  // the last of SIGSTOP, SIGTSTP, SIGCONT sent by Signal() stopped it
  std::optional<std::chrono::milliseconds> check_stop_within_;
  std::string log_path_;
  size_t log_start_ = 0;
};

// What a sanitizer wrote in `log`: the first report from its first line (its stack with it, at
// most 60 lines), then any later line naming a sanitizer (at most 20); empty when there is none.
// The marks: "AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:" (UBSan).
std::string SanitizerReport(const std::string& log);

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// The first piece of `n` consecutive characters of `secret` that `text` holds; empty when none
// does (a shortened message may keep part of a secret that scrubbing missed).
std::string PieceOf(const std::string& secret, const std::string& text, size_t n);

// Polls `pred` every 20 ms until it is true or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    struct timespec ts {
      0, 20'000'000
    };
    nanosleep(&ts, nullptr);
  }
  return pred();
}

// Calls fn(token) with a stop token that is stopped once `limit` has passed, and returns what fn
// returns: a blocking call that ends on a stop request (ChangeHints::Wait, say) bounded in time.
template <typename Fn>
auto CallWithDeadline(std::chrono::milliseconds limit, Fn fn) {
  std::stop_source stop;
  std::jthread timer([&stop, limit](std::stop_token own) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_for(lock, own, limit, [] { return false; });  // until the limit, or fn returned
    stop.request_stop();
  });
  return fn(stop.get_token());
}

// Removes `name` under the directory `parent` (AT_FDCWD: the working directory) and all below
// it, by descriptors: paths longer than PATH_MAX cannot be removed by name.
void RemoveTreeAt(int parent, const std::string& name);
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& data);  // creates parent dirs
// Deterministic pseudo-random bytes for test files.
std::string PatternBytes(size_t n, uint32_t seed);
// A TCP port on 127.0.0.1 that was free a moment ago: random, below the ephemeral port range
// (so no outgoing connection takes it before the caller's child binds it), and not returned
// before by this process.
int FreeLoopbackPort();
// A TCP connection to 127.0.0.1:port (-1 on failure), and a send of all of `data` on it.
int ConnectLoopback(int port);
// A socket listening on 127.0.0.1:port with SO_REUSEPORT set, as cpp-httplib sets it on its own
// sockets (-1 on failure): a port another server holds, which a second one may then share
// unless it leaves SO_REUSEPORT out.
int ListenLoopbackShared(int port);
bool SendAll(int fd, const std::string& data);
// `n` connections to 127.0.0.1:port that send nothing, closed when this goes (or by Close()).
// Opened 2 ms apart: cpp-httplib 0.11 listens with a backlog of 5, and a connection past it is
// accepted only when the kernel resends its SYN-ACK, a second or more later.
class IdleConnections {
 public:
  IdleConnections(int port, int n);
  ~IdleConnections() { Close(); }
  IdleConnections(const IdleConnections&) = delete;
  IdleConnections& operator=(const IdleConnections&) = delete;
  bool all_open() const { return all_open_; }
  const std::vector<int>& fds() const { return fds_; }
  void Close();

 private:
  std::vector<int> fds_;
  bool all_open_ = true;
};
// Path of a built binary in the build's bin directory.
std::string BinaryPath(const std::string& name);
std::string SourceDir();

}  // namespace nbu::test
