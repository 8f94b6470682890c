#include "server/app.h"

#include "azure/blob_client.h"
#include "azure/http.h"
#include "azure/url.h"
#include "core/config.h"
#include "core/file_processor.h"
#include "core/service.h"
#include "server/api.h"
#include "server/storage_target.h"
#include "telemetry/telemetry.h"
#include "util/crypto.h"
#include "util/listen_socket.h"
#include "util/log.h"
#include "util/md5_pair.h"
#include "util/text.h"

#include <netdb.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace nbu::server {
namespace {

constexpr const char* kVersion = NBU_VERSION;  // the CMake project's

void PrintUsage(FILE* out) {
  std::fprintf(
      out,
      "nfs-blob-uploader %s: uploads files dropped on an NFS volume to Azure Blob Storage.\n"
      "Configuration comes from APP_* environment variables and an optional .env file.\n"
      "  --config-vars   print every APP_* variable the service reads, one per line\n"
      "  --config-help   print each variable with its default and meaning\n"
      "  --config-markdown  the same as a Markdown table (README)\n"
      "  --version       print the version\n",
      kVersion);
}

// The signals that stop the service gracefully. SIGHUP too: a closed terminal (`make run`) or a
// supervisor's hang-up must not end it abruptly, which would count as an interrupted run of
// every file in flight.
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, sig);
  return set;
}

// The MD5 builds timed fastest on this CPU (util/md5_pair), e.g. "pair:scalar 2:scalar
// 3:avx512 4:avx512 file:openssl": figures from different machines compare only with this.
std::string Md5Builds() {
  const Md5Pair::Choice& c = Md5Pair::Chosen();
  std::string out = std::string("pair:") + c.by_count[1];
  for (int n = 2; n <= Md5Pair::kMaxTogether; ++n) {
    out += " " + std::to_string(n) + ":" + c.by_count[n];
  }
  return out + (c.file_alone_in_pair ? " file:pair" : " file:openssl");
}

int WaitForSignal() {
  const sigset_t set = StopSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

std::string SignalName(int sig) {
  return sigabbrev_np(sig) != nullptr ? std::string("SIG") + sigabbrev_np(sig)
                                      : std::to_string(sig);
}

// Runs work() while a thread waits for the stop signals (blocked in every thread) and calls
// on_signal(signal) for each, until it returns false. Returns what the work returns.
template <typename Work, typename OnSignal>
auto WithSignalsWatched(const Work& work, const OnSignal& on_signal) {
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    const sigset_t set = StopSignals();
    const timespec tick{0, 100'000'000};
    while (!done.load()) {
      if (const int sig = sigtimedwait(&set, nullptr, &tick); sig > 0 && !on_signal(sig)) return;
    }
  });
  auto result = work();
  done = true;
  watcher.join();
  return result;
}

// Runs work(stop_token) for a start-up step that can wait (the first token fetch, the
// replica-id check), with the token requested by a stop signal, so that the step ends at once.
// Returns what the work returns; *signal: the signal that ended it (0: none).
template <typename Work>
auto WatchingSignals(const Work& work, int* signal) {
  std::stop_source stop;
  std::atomic<int> caught{0};
  auto result = WithSignalsWatched([&] { return work(stop.get_token()); },
                                   [&](int sig) {
                                     caught = sig;
                                     stop.request_stop();
                                     return false;
                                   });
  *signal = caught.load();
  return result;
}

// The line for a listen address that cannot be used, or nothing.
// One line per problem: a value a message quotes may hold a line break (a .env line's value, a
// manifest's block string), printed as \n; other control characters as \xNN.
void PrintConfigError(const std::string& error) {
  std::string line;
  for (const char c : error) {
    if (c == '\n') {
      line += "\\n";
    } else if (c == '\r') {
      line += "\\r";
    } else if ((c >= 0 && c < 0x20) || c == 0x7f) {
      line += "\\x" + HexEncode(std::string_view(&c, 1));
    } else {
      line += c;
    }
  }
  std::fprintf(stderr, "config error: %s\n", line.c_str());
}

std::string CannotListen(const std::string& host, int port) {
  return "APP_HTTP_HOST, APP_HTTP_PORT: cannot listen on " + host + ":" + std::to_string(port) +
         " (not an address of this host, or the port is taken)";
}

// Whether the API could listen on host:port, tried with a socket closed at once, so that a taken
// port is told with the other configuration errors instead of at the next start. The API binds
// it for good later (and says so too if the port was taken in between). Port 0: any is free.
bool CanListen(const std::string& host, int port) {
  if (port == 0) return true;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints,
                    &found) != 0) {
    return false;
  }
  bool ok = false;
  for (const addrinfo* a = found; a != nullptr && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    ReuseAddressOnly(fd);  // as the API's socket: a port in TIME_WAIT is free, a listener's not
    ok = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

// The soft limit on open files raised to the hard one, as Go's runtime and many daemons do:
// container runtimes often leave 1024, which the control API's held connections (up to 256
// waiting for their request and 64 lingering), staging files and storage connections share.
// Nothing here uses select(): cpp-httplib (Debian's build) and libcurl poll.
void RaiseOpenFileLimit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config-vars") {
      for (const auto& v : core::ConfigVars()) std::printf("%s\n", v.name);
      return 0;
    }
    if (arg == "--config-help") {
      for (const auto& v : core::ConfigVars()) {
        std::string text = v.description;
        std::erase(text, '`');
        std::printf("%-30s default %-22s %s\n", v.name,
                    *v.default_text ? v.default_text : "(empty)", text.c_str());
      }
      return 0;
    }
    if (arg == "--config-markdown") {
      std::fputs(core::ConfigMarkdown().c_str(), stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("%s\n", kVersion);
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      PrintUsage(stdout);
      return 0;
    }
    // A mistyped flag is named, so that it is not taken for a start-up failure.
    std::fprintf(stderr, "nfs-blob-uploader: unknown argument \"%s\"\n", arg.c_str());
    PrintUsage(stderr);
    return 2;
  }

  RaiseOpenFileLimit();
  // Block the shutdown signals in every thread; one thread waits for them with sigwait.
  const sigset_t stop_signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const char* env_file = std::getenv("APP_ENV_FILE");
  const bool named = env_file != nullptr && !TrimSpaceAscii(env_file).empty();  // blank: unset
  std::vector<std::string> errors;
  const core::EnvMap env = core::LoadEnvironment(named ? env_file : ".env", named, &errors);
  core::Config config;
  core::ParseConfig(env, &config, &errors);
  const azure::EnvLookup lookup = [&env](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  auto tcfg = telemetry::ParseTelemetryConfig(lookup);
  for (auto& e : tcfg.errors) errors.push_back(std::move(e));
  Clock& clock = RealClock::Instance();
  StorageTarget target;
  // Every problem in one start: the checks without network I/O run whatever else is wrong. Not
  // on values known to be wrong or missing (a refused variable they read, or an APP_ENV_FILE
  // that could not be read in full): the volume check creates the directories it names.
  // ResolveStorageTarget skips what it would repeat, and its token fetch, itself.
  const auto any_named = [&errors](std::initializer_list<std::string_view> vars) {
    return std::any_of(vars.begin(), vars.end(),
                       [&](std::string_view v) { return core::ErrorNames(errors, v); });
  };
  if (!any_named({"APP_ENV_FILE", "APP_NFS_INCOMING_DIR", "APP_NFS_PROCESSING_ROOT",
                  "APP_NFS_FAILED_ROOT", "APP_LOCAL_STAGING_ROOT", "APP_REPLICA_ID"})) {
    core::CheckVolume(config, &errors);
  }
  if (!any_named({"APP_ENV_FILE", "APP_HTTP_HOST", "APP_HTTP_PORT"}) &&
      !CanListen(config.http_host, config.http_port)) {
    errors.push_back(CannotListen(config.http_host, config.http_port));
  }
  int early_signal = 0;
  const size_t found_before_storage = errors.size();
  if (!any_named({"APP_ENV_FILE"})) {
    WatchingSignals(
        [&](std::stop_token stop) {
          return ResolveStorageTarget(config, clock, &target, &errors, &env, stop);
        },
        &early_signal);
  }
  // A stop during the first token fetch (made only while nothing else is wrong) is not a
  // configuration error; errors found before it are still told.
  if (early_signal != 0 && found_before_storage == 0) {
    LogInfo("signal received before the service started", {{"signal", SignalName(early_signal)}});
    return 0;
  }
  if (!errors.empty()) {
    for (const auto& e : errors) PrintConfigError(e);
    // A misspelt name is often the cause (APP_AZURE_SAS for APP_AZURE_SAS_TOKEN): named here
    // too, not only once start-up succeeds. Names only: a value may be a secret.
    for (const auto& name : core::UnknownVariables(env)) {
      std::fprintf(stderr,
                   "config note: %s is not read by this service (a typo? --config-vars "
                   "lists them all)\n",
                   name.c_str());
    }
    return 2;
  }
  LogLevel level = LogLevel::kInfo;
  ParseLogLevel(config.log_level, &level);
  SetLogLevel(level);
  for (const auto& w : tcfg.warnings) LogWarn("telemetry configuration", {{"warning", w}});
  for (const auto& name : core::UnknownVariables(env)) {
    LogWarn("unknown variable ignored (a typo? --config-vars lists them all)", {{"name", name}});
  }
  if (struct statvfs vfs{}; ::statvfs(config.staging_root.c_str(), &vfs) == 0) {
    const uint64_t room = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
    if (auto w = core::CheckStagingRoom(config, room)) LogWarn("staging volume", {{"warning", *w}});
  }

  azure::GlobalHttpInit();
  tcfg.config.service_version = kVersion;
  tcfg.config.service_instance_id = config.replica_id;
  telemetry::Telemetry telemetry(tcfg.config, clock);
  core::Instruments* inst = nullptr;
  azure::BlobClientObserver observer;
  observer.on_try = [&inst, &clock](azure::TryOutcome outcome) {
    if (inst != nullptr) inst->storage.Record(outcome, clock.Now());
  };
  observer.on_retry = [&inst](const std::string& reason) {
    if (inst != nullptr) inst->retries.Add(1, {{"reason", reason}});
  };
  observer.on_throttled = [&inst, &clock] {
    if (inst == nullptr) return;
    inst->throttled.Add();
    inst->throttled_at = clock.Now().time_since_epoch().count();
  };
  observer.on_container_missing = [&inst, &clock] {
    if (inst != nullptr) inst->container_missing_at = clock.Now().time_since_epoch().count();
  };
  observer.on_checksum_mismatch = [&inst](const std::string& op) {
    if (inst != nullptr) inst->checksum_mismatches.Add(1, {{"op", op}});
  };
  const azure::HttpTransportOptions topts = StorageTransportOptions(config, lookup);
  azure::BlobClientOptions bopts;
  bopts.endpoint = target.endpoint;
  bopts.account = target.account;
  bopts.container = config.azure_container;
  bopts.retry.max_attempts = config.azure_retry_max_attempts;
  bopts.retry.base_delay =
      std::chrono::milliseconds(static_cast<int64_t>(config.azure_retry_base_s * 1000));
  bopts.retry.max_delay =
      std::chrono::milliseconds(static_cast<int64_t>(config.azure_retry_max_s * 1000));
  azure::BlobClient blob(bopts, target.credential, std::make_shared<azure::HttpTransport>(topts),
                         clock, observer);

  core::Service service(config, clock, blob, telemetry.metrics(), telemetry.tracer());
  inst = &service.instruments();
  Api api(service, telemetry.metrics(), clock, config.http_token);
  const int port = api.Bind(config.http_host, config.http_port);
  if (port < 0) {
    // The library's errno is not reliable here (its address lookup does not set it).
    PrintConfigError(CannotListen(config.http_host, config.http_port));
    return 2;
  }
  LogInfo("starting", {{"version", kVersion},
                       {"replica", config.replica_id},
                       {"endpoint", azure::RedactUrl(blob.BlobUrl(""))},
                       {"credential", target.credential->Describe()},
                       {"incoming", config.incoming_dir},
                       {"http", config.http_host + ":" + std::to_string(port)},
                       {"http_post_auth", config.http_token.empty() ? "none" : "bearer token"},
                       {"workers", config.worker_concurrency},
                       {"md5", Md5Builds()}});
  std::atomic<bool> api_done{false};
  std::thread api_thread([&] {
    api.Serve();
    api_done = true;
  });
  // Stops the API; true once its thread is done. A client still reading its answer (slowly, or
  // not at all) holds that thread: it gets a few seconds, not the rest of the pod's termination
  // period.
  const auto stop_api = [&] {
    api.Stop();
    for (int i = 0; i < 50 && !api_done.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return api_done.load();
  };
  // A signal handled before the listener runs would stop nothing, and it would run on.
  if (!api.WaitServing(std::chrono::seconds(10))) LogWarn("the API did not start listening", {});
  // While the API answers (a wait here outlasting a liveness probe's patience would restart
  // the pod); nothing is claimed or written before it ends (POSTs get 503 until then).
  const auto in_use = WatchingSignals(
      [&](std::stop_token stop) { return service.CheckReplicaIdFree(stop); }, &early_signal);
  if (in_use || early_signal != 0) {
    if (in_use) {
      PrintConfigError(*in_use);
    } else {
      LogInfo("signal received before the service started", {{"signal", SignalName(early_signal)}});
    }
    const int code = in_use ? 2 : 0;
    if (!stop_api()) std::_Exit(code);
    api_thread.join();
    return code;
  }
  telemetry.Start();
  service.Start();

  const int sig = WaitForSignal();
  LogInfo("signal received", {{"signal", SignalName(sig)}});
  // A second Ctrl-C or SIGTERM does not cut the grace short (a supervisor's SIGKILL does that),
  // but it is answered: silence would look like a hang.
  const auto [joined, api_joined] = WithSignalsWatched(
      [&] {
        const bool workers = service.Shutdown(FromSeconds(config.shutdown_grace_s));
        const bool api_stopped = stop_api();
        telemetry.Shutdown(clock.Now() + std::chrono::seconds(3));
        return std::pair(workers, api_stopped);
      },
      [&](int again) {
        LogWarn(
            "signal received while stopping: the shutdown goes on (uploads in flight get up to "
            "APP_SHUTDOWN_GRACE_S from the first signal); SIGKILL stops at once, and the files "
            "then in flight are resumed from their claims at the next start (or by another "
            "replica)",
            {{"signal", SignalName(again)}, {"grace_s", config.shutdown_grace_s}});
        return true;
      });
  LogInfo("stopped", {{"workers_joined", joined}, {"api_joined", api_joined}});
  // A worker still blocked in I/O (its claim is left for recovery), or a client holding the API:
  // nothing of ours is left to finish.
  if (!joined || !api_joined) std::_Exit(0);
  api_thread.join();
  return 0;
}

}  // namespace nbu::server
