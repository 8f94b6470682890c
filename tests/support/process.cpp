#include "support/process.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>

extern char** environ;

namespace nbu::test {
namespace {

// The runner's variables a child starts with: what finding programs, a home, temporary files and
// the locale need, and the sanitizers' options (so a child of an ASan/TSan build reports as the
// test binary does). Azurite needs nothing more: it is started as `/usr/bin/env node ...`.
bool InheritedByChildren(const std::string& name) {
  static const std::set<std::string> kNames = {"PATH",     "HOME", "TMPDIR", "LANG",
                                               "LANGUAGE", "USER", "LOGNAME"};
  return kNames.count(name) > 0 || name.rfind("LC_", 0) == 0 ||
         (name.size() > 11 && name.ends_with("SAN_OPTIONS"));
}

sockaddr_in LoopbackAddress(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

// 127.0.0.1:port can be bound now. No SO_REUSEADDR: a port with a connection in TIME_WAIT is
// passed over too.
bool LoopbackPortBinds(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  sockaddr_in addr = LoopbackAddress(port);
  const bool ok = ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(s);
  return ok;
}

// A port the kernel picks (from the ephemeral range), bound and released.
int KernelChosenPort() {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = LoopbackAddress(0);
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  return ntohs(addr.sin_port);
}

}  // namespace

ChildProcess::ChildProcess(std::vector<std::string> argv, std::map<std::string, std::string> env,
                           std::string log_path)
    : log_path_(std::move(log_path)) {
  // Only what a program needs to run (and the sanitizers' options) comes from the test runner:
  // its proxies, OTLP endpoints and APP_*/AZURE_* settings would otherwise reach the child and
  // could send it off this machine or change what the test starts.
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos && InheritedByChildren(kv.substr(0, eq))) {
      merged[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  for (const auto& [k, v] : env) {
    if (v.empty())
      merged.erase(k);
    else
      merged[k] = v;
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  name_ = argv.empty() ? "" : std::filesystem::path(argv[0]).filename().string();
  const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("open log " + log_path_);
  struct stat log_stat {};
  if (::fstat(fd, &log_stat) == 0) log_start_ = static_cast<size_t>(log_stat.st_size);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Killed when the test binary dies, even by a crash or SIGKILL that runs no destructor. The
    // signal is tied to the thread that forked, which is the test's main thread (gtest runs tests,
    // fixtures and SetUpTestSuite there); a parent already gone before prctl took effect is
    // caught by the getppid() check.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    const int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::execve(args[0], args.data(), envp.data());
    std::fprintf(stderr, "execve %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fd);
}

ChildProcess::~ChildProcess() {
  if (check_stop_within_) {
    StopAndCheck();
    return;
  }
  if (Running()) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    Reap(std::chrono::seconds(10));
  }
}

void ChildProcess::CheckAtEnd(std::chrono::milliseconds stop_within) {
  check_stop_within_ = stop_within;
}

namespace {

std::string DescribeExit(int code) {
  return code > 128 ? "was killed by signal " + std::to_string(code - 128) + " (" +
                          strsignal(code - 128) + ")"
                    : "exited with status " + std::to_string(code);
}

// The last `n` lines of `text`.
std::string LastLines(const std::string& text, size_t n) {
  size_t from = text.size();
  if (from > 0 && text[from - 1] == '\n') --from;
  for (size_t lines = 0; from > 0; --from) {
    if (text[from - 1] == '\n' && ++lines == n) break;
  }
  return text.substr(from);
}

}  // namespace

void ChildProcess::StopAndCheck() {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const auto started = std::chrono::steady_clock::now();
  std::string problem;  // what is wrong with how the child ended, if anything
  if (pid_ > 0 && !Reap(milliseconds(0))) {
    // SIGCONT only to a child the test left stopped, and before the SIGTERM: a SIGCONT discards
    // any pending stop, the one LeakSanitizer sends as it attaches at exit included, and the
    // child then hangs in that check for good (seen about once in 300 ASan runs).
    if (left_stopped_) ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGTERM);
    if (!Reap(*check_stop_within_)) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      Reap(std::chrono::seconds(10));
      problem = "did not exit within " + std::to_string(check_stop_within_->count()) +
                " ms of the SIGTERM sent at the end of the test (then SIGKILLed)";
    } else if (*exit_code_ != 0) {
      problem =
          DescribeExit(*exit_code_) + " after the SIGTERM sent at the end of the test (" +
          std::to_string(
              duration_cast<milliseconds>(std::chrono::steady_clock::now() - started).count()) +
          " ms)";
    }
  } else if (exit_code_ && !exit_seen_ && *exit_code_ != 0) {
    problem = DescribeExit(*exit_code_) + " during the test, which did not wait for it";
  }
  const std::string log = ReadLog();
  const std::string own = log.substr(std::min(log_start_, log.size()));
  const std::string report = SanitizerReport(own);
  if (problem.empty() && report.empty()) return;
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string test_name =
      test != nullptr ? std::string(test->test_suite_name()) + "." + test->name() : "(no test)";
  std::ostringstream msg;
  msg << test_name << ": " << name_ << " (pid " << pid_ << ", log " << log_path_ << " from byte "
      << log_start_ << ")";
  if (!problem.empty()) msg << " " << problem;
  if (!report.empty()) {
    msg << (problem.empty() ? "" : ";") << " its log holds a sanitizer's report:\n" << report;
  } else {
    msg << "; the last lines of its log:\n" << LastLines(own, 30);
  }
  ADD_FAILURE() << msg.str();
}

std::string SanitizerReport(const std::string& log) {
  static constexpr std::array<std::string_view, 4> kMarks = {"AddressSanitizer", "LeakSanitizer",
                                                             "ThreadSanitizer", "runtime error:"};
  constexpr size_t kFirstReportLines = 60;
  constexpr size_t kLaterLines = 20;
  std::string out;
  size_t quoted = 0;  // lines of the first report quoted so far (0: none found yet)
  size_t later = 0;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    const bool marked = std::any_of(kMarks.begin(), kMarks.end(), [&](std::string_view m) {
      return line.find(m) != std::string::npos;
    });
    if (quoted > 0 && quoted < kFirstReportLines) {
      ++quoted;
    } else if (marked && quoted == 0) {
      quoted = 1;
    } else if (marked && later < kLaterLines) {
      ++later;
      if (later == 1) out += "...\n";
    } else {
      continue;
    }
    out += line + "\n";
  }
  return out;
}

void ChildProcess::Signal(int sig) {
  if (pid_ <= 0 || exit_code_) return;
  if (sig == SIGSTOP || sig == SIGTSTP) left_stopped_ = true;
  if (sig == SIGCONT) left_stopped_ = false;
  ::kill(pid_, sig);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  auto code = Reap(timeout);
  if (code) exit_seen_ = true;
  return code;
}

std::optional<int> ChildProcess::Reap(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    struct timespec ts {
      0, 10'000'000
    };
    nanosleep(&ts, nullptr);
  }
}

bool ChildProcess::Running() { return pid_ > 0 && !Reap(std::chrono::milliseconds(0)); }

std::string ChildProcess::ReadLog() const { return ReadFile(log_path_); }

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/nbu-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) RemoveTreeAt(AT_FDCWD, path_);  // paths past PATH_MAX, which remove_all cannot take
}

// Removes `name` under the directory `parent` and all below it, by descriptors: paths longer
// than PATH_MAX cannot be removed by name.
void RemoveTreeAt(int parent, const std::string& name) {
  const int fd = ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    ::unlinkat(parent, name.c_str(), 0);
    return;
  }
  if (DIR* d = ::fdopendir(::dup(fd))) {
    std::vector<std::pair<std::string, bool>> children;
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") children.emplace_back(n, e->d_type == DT_DIR);
    }
    ::closedir(d);
    for (const auto& [n, dir] : children) {
      if (dir) {
        RemoveTreeAt(fd, n);
      } else {
        ::unlinkat(fd, n.c_str(), 0);
      }
    }
  }
  ::close(fd);
  ::unlinkat(parent, name.c_str(), AT_REMOVEDIR);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("write " + path);
}

std::string PatternBytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x & 0xFF);
  }
  return out;
}

int FreeLoopbackPort() {
  // A port the caller's child binds later. One from the ephemeral range could meanwhile become
  // the local end of any outgoing connection (this process's to Azurite, say); ports below that
  // range are only ever taken by a bind. So: a random one in [10000, start of the range), which
  // binds now and was not handed out before by this process (two ports asked for before either
  // is bound differ). The kernel's choice only if that range is too small or all tries fail.
  int ephemeral_low = 32768;
  {
    std::istringstream range(ReadFile("/proc/sys/net/ipv4/ip_local_port_range"));
    int low = 0;
    if (range >> low && low > 0) ephemeral_low = low;
  }
  constexpr int kFirst = 10000;
  const int last = ephemeral_low - 1;
  if (last - kFirst >= 1000) {
    static std::mutex mu;
    static std::set<int> handed_out;
    static std::mt19937 rng(std::random_device{}());
    std::lock_guard lock(mu);
    std::uniform_int_distribution<int> pick(kFirst, last);
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const int port = pick(rng);
      if (handed_out.count(port) == 0 && LoopbackPortBinds(port)) {
        handed_out.insert(port);
        return port;
      }
    }
  }
  return KernelChosenPort();
}

int ConnectLoopback(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  const sockaddr_in addr = LoopbackAddress(port);
  if (::connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

std::string PieceOf(const std::string& secret, const std::string& text, size_t n) {
  for (size_t at = 0; at + n <= secret.size(); ++at) {
    if (text.find(secret.substr(at, n)) != std::string::npos) return secret.substr(at, n);
  }
  return "";
}

int ListenLoopbackShared(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  const int yes = 1;
  const sockaddr_in addr = LoopbackAddress(port);
  if (::setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes) != 0 ||
      ::bind(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(s, 4) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

IdleConnections::IdleConnections(int port, int n) {
  for (int i = 0; i < n; ++i) {
    const int fd = ConnectLoopback(port);
    if (fd < 0) {
      all_open_ = false;
      return;
    }
    fds_.push_back(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void IdleConnections::Close() {
  for (const int fd : fds_) ::close(fd);
  fds_.clear();
}

bool SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string BinaryPath(const std::string& name) { return std::string(NBU_BINARY_DIR) + "/" + name; }
std::string SourceDir() { return NBU_SOURCE_DIR; }

}  // namespace nbu::test
