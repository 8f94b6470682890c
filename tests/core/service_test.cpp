// The whole service in-process (scanner, workers, block uploads, sweeper, heartbeat) against a
// real Azurite: the concurrency test that also runs under ThreadSanitizer.
#include "core/service.h"

#include "support/azurite.h"
#include "support/azurite_client.h"
#include "support/captured_log.h"
#include "support/fault_proxy.h"
#include "support/fs_seams.h"
#include "support/gate.h"
#include "support/process.h"
#include "support/test_config.h"
#include "util/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <latch>
#include <mutex>
#include <thread>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;
using nbu::test::Azurite;
using nbu::test::FreshContainer;
using nbu::test::PatternBytes;
using nbu::test::SharedAzurite;
using nbu::test::TempDir;
using nbu::test::WaitFor;
using nbu::test::WriteFile;

// The service of `config` on `blob`, started (ready comes later).
struct Started {
  Started(const Config& config, azure::BlobClient& blob)
      : service(config, RealClock::Instance(), blob, metrics, tracer) {
    service.Start();
  }
  telemetry::MetricsRegistry metrics;
  telemetry::Tracer tracer{RealClock::Instance()};
  Service service;
};

// The value of the gauge `name` now; -1 when there is none.
double GaugeValue(const telemetry::MetricsRegistry& metrics, std::string_view name) {
  for (const auto& g : metrics.Gauges()) {
    if (g.info.name == name) return g.read();
  }
  return -1.0;
}

// The blob uploaded for incoming/`session`/`rel`. Its name has the UTC date the file was
// claimed on: today's, or yesterday's for a run that crossed midnight UTC meanwhile (as
// e2e_support's BlobNames allows). Any other answer than "not found" under today's is final.
Result<std::string> GetUploaded(azure::BlobClient& blob, const std::string& session,
                                const std::string& rel) {
  const auto now = std::chrono::system_clock::now();
  const std::string path = "/" + session + "/" + rel;
  Result<std::string> got = blob.GetBlob(UtcDate(now) + path);
  if (got.ok() || got.status().kind() != ErrorKind::kNotFound) return got;
  return blob.GetBlob(UtcDate(now - 24h) + path);
}

using nbu::test::TestConfig;

// A client of `config`'s container through `proxy`, one try per request: each start-up check
// the service makes is then one answer of the proxy's.
std::unique_ptr<azure::BlobClient> OneTryClientVia(const nbu::test::FaultProxy& proxy,
                                                   const Config& config) {
  azure::RetryOptions retry;
  retry.max_attempts = 1;
  return nbu::test::MakeBlobClient(nbu::test::BlobEndpointVia(proxy.port()), config.azure_container,
                                   retry);
}

TEST(ServiceTest, ManyWorkersAndBlockUploadsInOneProcess) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("svc"));
  config.poll_interval_s = 0.05;
  config.min_file_age_s = 0.1;
  config.gc_interval_s = 0.1;
  config.worker_concurrency = 4;
  config.max_queue_size = 8;  // small: the scanner must wait, not drop
  config.azure_put_blob_max_bytes = 256 << 10;
  config.azure_block_size = 64 << 10;
  config.azure_max_concurrency = 4;
  config.replica_id = "svc-test";

  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  azure::BlobClient& blob = *blob_client;
  Started started(config, blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("t", &s, &error), Service::WatchError::kNone) << error;

  std::map<std::string, std::string> files;
  for (uint32_t i = 0; i < 60; ++i) {
    const std::string rel = "d" + std::to_string(i % 5) + "/f" + std::to_string(i);
    files[rel] = PatternBytes(i % 10 == 0 ? (1 << 20) + i : 4096 + i, i);  // some in blocks
    WriteFile(config.incoming_dir + "/t/" + rel, files[rel]);
  }
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["uploaded"] == files.size(); }, 120s))
      << service.StatusJson().dump();
  for (const auto& [rel, data] : files) {
    auto got = GetUploaded(blob, "t", rel);
    ASSERT_TRUE(got.ok()) << rel << ": " << got.status().ToString();
    EXPECT_EQ(*got, data) << rel;
  }
  EXPECT_TRUE(service.Shutdown(5s));
  const auto st = service.StatusJson();
  EXPECT_EQ(st["failed"], 0);
  EXPECT_EQ(st["state"], "stopping");
}

TEST(ServiceTest, AChangeHintQueuesAFileLongBeforeTheNextPoll) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("hints"));
  config.poll_interval_s = 3600;  // only the hint can bring a scan within the test's time
  config.min_file_age_s = 0;
  config.replica_id = "hint-test";

  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("t", &s, &error), Service::WatchError::kNone) << error;
  // The scan the watch starts has watched incoming/ and incoming/t.
  ASSERT_TRUE(
      WaitFor([&] { return service.StatusJson()["change_hints"]["watched_dirs"] == 2; }, 30s))
      << service.StatusJson().dump();

  const std::string data = PatternBytes(5000, 7);
  WriteFile(config.incoming_dir + "/t/sub/f.bin", data);  // a new directory, then a file in it
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["uploaded"] == 1; }, 60s))
      << service.StatusJson().dump();
  auto got = GetUploaded(*blob_client, "t", "sub/f.bin");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_TRUE(service.Shutdown(5s));
}

// The oldest pending file's age is that of a file the watch waits for; once the watch stops,
// nothing is pending, and the age does not keep growing (a backlog alert firing for ever).
// The last scan in the status counts the files the filters skip, with an example, and does not
// call them degraded. The file not ready when the watch stops stays in incoming, and that is
// told: a warning, the recent errors, and the last scan's not_ready.
TEST(ServiceTest, TheOldestPendingAgeEndsWithTheWatch) {
  test::CapturedLog told("the watch stopped before these files were ready");
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("pending"));
  config.poll_interval_s = 0.05;
  config.min_file_age_s = 3600;  // seen, never old enough to be claimed
  config.replica_id = "pending-test";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  WriteFile(config.incoming_dir + "/p/young.bin", "x");
  WriteFile(config.incoming_dir + "/p/sub/.young.bin.XyZ12", "an rsync temporary");
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("p", &s, &error), Service::WatchError::kNone) << error;
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["oldest_pending_age_s"] > 0.1; }, 30s))
      << service.StatusJson().dump();
  // The scan's stats reach the status just after its pending ages: wait for them.
  EXPECT_TRUE(WaitFor([&] { return service.StatusJson()["last_scan"]["ignored"] == 1; }, 30s))
      << service.StatusJson().dump();
  const auto st = service.StatusJson();
  EXPECT_EQ(st["last_scan"]["ignored_example"], "sub/.young.bin.XyZ12") << st.dump();
  EXPECT_EQ(st["last_scan"]["not_ready"], 1) << st.dump();
  EXPECT_EQ(st["degraded"], nlohmann::json::array()) << st.dump();
  EXPECT_TRUE(told.Lines().empty()) << "not while watching";
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  EXPECT_TRUE(WaitFor([&] { return service.StatusJson()["oldest_pending_age_s"] == 0.0; }, 30s))
      << service.StatusJson().dump();
  ASSERT_TRUE(WaitFor([&] { return !told.Lines().empty(); }, 30s));
  const auto stopped = service.StatusJson();
  EXPECT_EQ(stopped["last_scan"]["not_ready_example"], "young.bin") << stopped.dump();
  ASSERT_EQ(stopped["recent_errors"].size(), 1u) << stopped.dump();
  EXPECT_EQ(stopped["recent_errors"][0]["file"], "p/young.bin") << stopped.dump();
  EXPECT_TRUE(service.Shutdown(5s));
  const auto lines = told.Json();
  ASSERT_EQ(lines.size(), 1u) << "told once";
  EXPECT_EQ(lines[0]["count"], 1);
  EXPECT_EQ(lines[0]["session"], "p");
}

// A file written after the last scan and before the stop (no change hint: another NFS client's
// write; no poll: an hour apart) is seen by the stopped session's last scan, and told with the
// others not ready, at once rather than at the next poll: not left in incoming without a word.
TEST(ServiceTest, AFileWrittenJustBeforeTheStopIsTold) {
  test::CapturedLog told("the watch stopped before these files were ready");
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("late"));
  config.poll_interval_s = 3600;
  config.change_hints = false;
  config.min_file_age_s = 3600;  // seen, never old enough to be claimed
  config.replica_id = "late-test";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  WriteFile(config.incoming_dir + "/q/seen.bin", "x");
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("q", &s, &error), Service::WatchError::kNone) << error;
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["last_scan"]["not_ready"] == 1; }, 30s))
      << service.StatusJson().dump();
  WriteFile(config.incoming_dir + "/q/late.bin", "y");
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  ASSERT_TRUE(WaitFor([&] { return !told.Lines().empty(); }, 30s)) << "told at the stop";
  const auto lines = told.Json();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["count"], 2) << lines[0].dump();
  const auto st = service.StatusJson();
  EXPECT_EQ(st["last_scan"]["not_ready"], 2) << st.dump();
  EXPECT_EQ(st["state"], "idle") << st.dump();
  EXPECT_TRUE(service.Shutdown(5s));
}

// A stop that comes while a scan runs (a hint's scan, held here at its start) wakes no sleep, as
// the loop is not asleep: it is acted on when that scan ends, not at the next poll an hour on.
TEST(ServiceTest, AStopDuringAScanIsActedOnWhenTheScanEnds) {
  test::CapturedLog told("the watch stopped before these files were ready");
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("stop-scan"));
  config.poll_interval_s = 3600;
  config.min_file_age_s = 3600;  // seen, never old enough to be claimed
  config.replica_id = "stop-scan-test";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  telemetry::MetricsRegistry metrics;
  telemetry::Tracer tracer{RealClock::Instance()};
  Service service(config, RealClock::Instance(), *blob_client, metrics, tracer);
  nbu::test::Gate gate;
  std::atomic<bool> hold{false};
  std::atomic<int> held{0};
  service.SetScanHookForTest([&](std::string_view call, const std::string& rel) {
    if (call == "open" && rel.empty() && hold.exchange(false)) {  // the session directory
      ++held;
      EXPECT_TRUE(gate.Wait(60s));
    }
    return 0;
  });
  const auto open_at_exit = gate.OpenAtExit();
  service.Start();
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  WriteFile(config.incoming_dir + "/q/seen.bin", "x");
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("q", &s, &error), Service::WatchError::kNone) << error;
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto st = service.StatusJson();
        return st["last_scan"]["not_ready"] == 1 && st["change_hints"]["watched_dirs"] == 2;
      },
      30s))
      << service.StatusJson().dump();
  hold = true;
  WriteFile(config.incoming_dir + "/q/hinted.bin", "y");  // its hint brings a scan, held
  ASSERT_TRUE(WaitFor([&] { return held.load() == 1; }, 30s));
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  gate.Open();
  ASSERT_TRUE(WaitFor([&] { return !told.Lines().empty(); }, 30s)) << "told when the scan ended";
  const auto lines = told.Json();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["count"], 2) << lines[0].dump();
  EXPECT_TRUE(service.Shutdown(5s));
}

// Files put beside the watched session's directory are never uploaded by its watch: the status
// counts them, with an example, and a warning and the recent errors say so once, not at every
// scan. With no watch, nothing is counted.
TEST(ServiceTest, FilesOutsideTheWatchedSessionAreTold) {
  test::CapturedLog told("outside the watched session");
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("outside"));
  config.poll_interval_s = 0.05;
  config.replica_id = "outside-test";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  WriteFile(config.incoming_dir + "/stray.bin", "at the top");
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("run", &s, &error), Service::WatchError::kNone) << error;
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["outside_session"]["entries"] == 1; }, 30s))
      << service.StatusJson().dump();
  const auto st = service.StatusJson();
  EXPECT_EQ(st["outside_session"]["example"], "stray.bin") << st.dump();
  std::this_thread::sleep_for(500ms);  // ten polls
  ASSERT_EQ(told.Lines().size(), 1u) << "told once, not at every scan";
  EXPECT_EQ(told.Json()[0]["example"], "stray.bin");
  EXPECT_EQ(told.Json()[0]["session"], "run");
  const auto errors = service.StatusJson()["recent_errors"];
  ASSERT_EQ(errors.size(), 1u) << errors.dump();
  EXPECT_NE(errors[0]["error"].get<std::string>().find(": stray.bin"), std::string::npos);
  EXPECT_EQ(errors[0]["count"], 1);
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  // At once, not when the look's loop next wakes (up to a second later): a count is shown only
  // beside the watch it was found for.
  EXPECT_EQ(service.StatusJson()["outside_session"]["entries"], 0);
  EXPECT_TRUE(service.Shutdown(5s));
}

// Holds the look beside the session at a gate, counting looks: only the look opens incoming/
// through the opendir seam. Made before the service starts (the seam's rule), and the gate's
// OpenAtExit after it, so that a look waiting at the end is let through before the join.
struct HeldLook {
  explicit HeldLook(const std::string& incoming)
      : seam([this, incoming](const char* op, const std::string& path) {
          if (std::string_view(op) == "opendir" && path == incoming) {
            ++looks;
            EXPECT_TRUE(gate.Wait(60s));
          }
          return 0;
        }) {}
  nbu::test::Gate gate;
  std::atomic<int> looks{0};
  nbu::test::ScopedPathCall seam;
};

// The look beside the session has a thread of its own: one held up (a slow volume, a tree of
// thousands of directories) holds up no scan, and what it finds shows once it is done.
TEST(ServiceTest, ALookBesideTheSessionHeldUpHoldsUpNoScan) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("outside-slow"));
  config.poll_interval_s = 0.05;
  config.replica_id = "outside-slow-test";
  config.min_file_age_s = 0.1;
  HeldLook held(config.incoming_dir);
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  const auto open_at_exit = held.gate.OpenAtExit();
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  WriteFile(config.incoming_dir + "/stray.bin", "at the top");
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("run", &s, &error), Service::WatchError::kNone) << error;
  // The look starts within a second of the watch; the file goes in once it is held.
  ASSERT_TRUE(WaitFor([&] { return held.looks.load() == 1; }, 30s));
  WriteFile(config.incoming_dir + "/run/data.bin", "data");
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["counters"]["uploaded"] == 1; }, 30s))
      << "scanned and uploaded while the look waits: " << service.StatusJson().dump();
  EXPECT_EQ(held.looks.load(), 1);
  EXPECT_EQ(service.StatusJson()["outside_session"]["entries"], 0) << "not looked through yet";
  held.gate.Open();
  EXPECT_TRUE(WaitFor([&] { return service.StatusJson()["outside_session"]["entries"] == 1; }, 30s))
      << service.StatusJson().dump();
  EXPECT_TRUE(service.Shutdown(5s));
}

// A look that ends after its watch stopped is stale: neither shown nor told.
TEST(ServiceTest, ALookThatOutlastsItsWatchIsDropped) {
  test::CapturedLog told("outside the watched session");
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("outside-stale"));
  config.poll_interval_s = 0.05;
  config.replica_id = "outside-stale-test";
  HeldLook held(config.incoming_dir);
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  const auto open_at_exit = held.gate.OpenAtExit();
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  WriteFile(config.incoming_dir + "/stray.bin", "at the top");
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("run", &s, &error), Service::WatchError::kNone) << error;
  ASSERT_TRUE(WaitFor([&] { return held.looks.load() == 1; }, 30s));
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  held.gate.Open();
  std::this_thread::sleep_for(300ms);  // six polls
  EXPECT_EQ(service.StatusJson()["outside_session"]["entries"], 0);
  EXPECT_TRUE(told.Lines().empty()) << told.Lines().front();
  EXPECT_TRUE(service.Shutdown(5s));
}

// Azurite behind a proxy that holds each upload of session "recovered" until Release() (at the
// latest when the test ends), and `count` claims of `config`'s replica in that session, as
// start-up recovery finds them.
struct SlowRecovery {
  SlowRecovery(const Config& config, uint32_t count)
      : proxy(azurite.port(), [this](const nbu::test::ProxyRequest& r) {
          if (r.method == "PUT" && r.target.find("/recovered/") != std::string::npos) {
            EXPECT_TRUE(gate.Wait(120s));
          }
          return nbu::test::FaultAction::Forward();
        }) {
    const std::string date = UtcDate(std::chrono::system_clock::now());
    for (uint32_t i = 0; i < count; ++i) {
      const ClaimPath c{
          date,       "recovered",         "", "f" + std::to_string(i), config.replica_id,
          NewNonce(), ClaimState::kClaimed};
      WriteFile(config.processing_root + "/" + c.Path(), PatternBytes(1000, i));
    }
    blob =
        nbu::test::MakeBlobClient(nbu::test::BlobEndpointVia(proxy.port()), config.azure_container);
  }
  ~SlowRecovery() { Release(); }  // before the proxy joins its handlers
  void Release() { gate.Open(); }
  nbu::test::Gate gate;
  Azurite& azurite = SharedAzurite();
  nbu::test::FaultProxy proxy;
  std::unique_ptr<azure::BlobClient> blob;
};

// A claim recovered at start-up that cannot finish (here its upload hangs at a slow storage)
// does not keep the replica from becoming ready: readiness waits until every recovered claim
// has been picked up by a worker, not until each is done.
TEST(ServiceTest, ReadyOnceRecoveredClaimsArePickedUpNotFinished) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("ready"));
  config.worker_concurrency = 2;
  config.replica_id = "ready-test";
  SlowRecovery slow(config, 1);
  Started started(config, *slow.blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 60s)) << service.StatusJson().dump();
  EXPECT_EQ(service.StatusJson()["in_progress"], 1) << "ready while the claim still uploads";
  EXPECT_EQ(service.StatusJson()["uploaded"], 0);
  EXPECT_TRUE(service.Shutdown(1s));
}

// Recovered claims wait in the queue while the one worker's upload hangs at a slow storage. A
// shutdown drops the queued ones (they stay claimed on the volume) and must not keep waiting
// for them as if they were in flight: it ends within its grace, with nothing lost. Through the
// grace the lease stays fresh, so no other replica takes over the upload still running.
TEST(ServiceTest, ShutdownKeepsItsLeaseFreshAndDoesNotWaitForQueuedClaims) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("claims"));
  config.worker_concurrency = 1;
  config.replica_id = "shutdown-test";
  config.lease_timeout_s = 1;    // a heartbeat every 0.25 s
  SlowRecovery slow(config, 4);  // held until the shutdown's grace ends
  Started started(config, *slow.blob);
  Service& service = started.service;
  // One claim is uploading (held by the proxy), the other three wait behind it.
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["queue_depth"] == 3; }, 30s))
      << service.StatusJson().dump();
  const std::string lease = config.processing_root + "/_replicas/shutdown-test.lease";
  std::atomic<bool> shut{false};
  std::thread shutdown([&] { shut = service.Shutdown(2s); });
  std::this_thread::sleep_for(200ms);
  const std::string early = nbu::test::ReadFile(lease);
  std::this_thread::sleep_for(1200ms);  // within the grace, the upload still held
  EXPECT_NE(nbu::test::ReadFile(lease), early) << "no heartbeat during the grace";
  shutdown.join();
  EXPECT_TRUE(shut);
  int claimed = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(config.processing_root)) {
    if (e.path().extension() == ".claimed") ++claimed;
  }
  EXPECT_EQ(claimed, 4);
}

// The scan loop rereads the session file each poll, without holding the service's lock (the
// volume may be slow). A read that began before a StartWatch or StopWatch wrote the file must
// not be cached after it: the watch would seem stopped, or keep scanning, for a poll interval.
// Polls every millisecond make the scan loop's reads overlap the writes many times over.
TEST(ServiceTest, AWatchStartOrStopIsNotUndoneByAnEarlierReadOfTheSessionFile) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("watch"));
  config.poll_interval_s = 0.001;
  config.replica_id = "watch-test";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  int wrong = 0;
  for (int i = 0; i < 150; ++i) {
    SessionState s;
    std::string error;
    const bool start = i % 2 == 0;
    ASSERT_EQ(start ? service.StartWatch("w" + std::to_string(i), &s, &error)
                    : service.StopWatch(&s, &error),
              Service::WatchError::kNone)
        << error;
    // Until the next call only this replica could change the file, so every look agrees.
    const auto until = std::chrono::steady_clock::now() + 5ms;
    while (std::chrono::steady_clock::now() < until) {
      const auto seen = service.StatusJson()["session"];
      if (seen.is_null() || seen["active"] != start || seen["name"] != s.name) ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0) << "looks that saw the session as it was before the last start or stop";
  EXPECT_TRUE(service.Shutdown(5s));
}

// Two replicas on one volume start sessions at the same moment: watch_mu_ orders only one
// process, so only the session store's compare-and-swap keeps both from answering success (and
// one session from being dropped while its caller holds a 200). The same for two stops.
TEST(ServiceTest, ReplicasStartingOrStoppingAtOnceAgreeOnOneWinner) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config a_config = TestConfig(dir, FreshContainer("race"));
  a_config.replica_id = "race-a";
  Config b_config = a_config;
  b_config.replica_id = "race-b";
  auto blob_client = nbu::test::MakeBlobClient(azurite, a_config.azure_container);
  Started a(a_config, *blob_client);
  Started b(b_config, *blob_client);
  ASSERT_TRUE(WaitFor([&] { return a.service.ready() && b.service.ready(); }, 30s));
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (int round = 0; round < 50 && std::chrono::steady_clock::now() < deadline; ++round) {
    const std::string tag = std::to_string(round);
    SessionState got[2];
    std::string errors[2];
    Service::WatchError results[2] = {Service::WatchError::kStorage, Service::WatchError::kStorage};
    auto race = [&](auto call) {
      std::latch go(2);  // both calls leave together
      std::jthread other([&] {
        go.arrive_and_wait();
        results[1] = call(b.service, got[1], errors[1], "b" + tag);
      });
      go.arrive_and_wait();
      results[0] = call(a.service, got[0], errors[0], "a" + tag);
    };
    race([](Service& s, SessionState& out, std::string& error, const std::string& name) {
      return s.StartWatch(name, &out, &error);
    });
    ASSERT_TRUE(results[0] == Service::WatchError::kNone ||
                results[1] == Service::WatchError::kNone)
        << round << ": " << errors[0] << errors[1];
    const int won = results[0] == Service::WatchError::kNone ? 0 : 1;
    const std::string winner = (won == 0 ? "a" : "b") + tag;
    ASSERT_EQ(results[1 - won], Service::WatchError::kAlreadyActive)
        << round << ": both replicas started a session: " << got[0].name << ", " << got[1].name;
    EXPECT_EQ(got[won].name, winner) << round;
    EXPECT_EQ(got[1 - won].name, winner) << round << ": the loser names the active session";

    race([](Service& s, SessionState& out, std::string& error, const std::string&) {
      return s.StopWatch(&out, &error);
    });
    ASSERT_TRUE(results[0] == Service::WatchError::kNone ||
                results[1] == Service::WatchError::kNone)
        << round << ": " << errors[0] << errors[1];
    const int stopped = results[0] == Service::WatchError::kNone ? 0 : 1;
    ASSERT_EQ(results[1 - stopped], Service::WatchError::kNotActive)
        << round << ": both replicas stopped the session";
    // What the volume held was the winner's session, whichever replica stopped it.
    EXPECT_EQ(got[stopped].name, winner) << round;
    EXPECT_FALSE(got[stopped].active) << round;
  }
  EXPECT_TRUE(a.service.Shutdown(5s));
  EXPECT_TRUE(b.service.Shutdown(5s));
}

// A volume written by the version before session generations: its _session.json is the active
// session, so a start is refused (409) and a stop stops that session.
TEST(ServiceTest, TheSessionOfTheFormerVersionIsResumedAfterAnUpgrade) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("upgrade"));
  config.replica_id = "upgrade-test";
  WriteFile(config.processing_root + "/_session.json",
            R"({"active": true, "name": "old", "started_at": "2026-11-28T00:00:00.000Z"})");
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("new", &s, &error), Service::WatchError::kAlreadyActive) << error;
  EXPECT_EQ(s.name, "old");
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  EXPECT_EQ(s.name, "old");
  EXPECT_FALSE(s.active);
  EXPECT_TRUE(service.Shutdown(5s));
}

// A watch active when the replica starts (restarted, or rescheduled) is scanned as soon as the
// replica is ready, not a poll interval later: the scan loop's first round came before ready,
// and could not scan then.
TEST(ServiceTest, AWatchActiveAtStartUpIsScannedOnceReady) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("ready-scan"));
  config.poll_interval_s = 3600;
  config.min_file_age_s = 0;
  config.replica_id = "ready-scan-test";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  {
    Started before(config, *blob_client);
    ASSERT_TRUE(WaitFor([&] { return before.service.ready(); }, 30s));
    SessionState s;
    std::string error;
    ASSERT_EQ(before.service.StartWatch("w", &s, &error), Service::WatchError::kNone) << error;
    EXPECT_TRUE(before.service.Shutdown(5s));
  }
  const std::string data = PatternBytes(3000, 9);
  WriteFile(config.incoming_dir + "/w/while-down.bin", data);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["uploaded"] == 1; }, 30s))
      << service.StatusJson().dump();
  auto got = GetUploaded(*blob_client, "w", "while-down.bin");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_TRUE(service.Shutdown(5s));
}

// A replica that cannot read the session file acts on the session it read last, and so misses
// a start or stop made through another replica: it says so in the status (degraded, and the
// recent errors) until the file reads again.
TEST(ServiceTest, ASessionFileThatCannotBeReadShowsInTheStatus) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("unreadable"));
  config.poll_interval_s = 0.05;
  config.replica_id = "unreadable-test";
  std::atomic<bool> failing{false};
  const std::string session_dir = config.processing_root + "/_session";
  // Set before the service's threads start and cleared after they end.
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    return failing && std::string_view(op) == "opendir" && path == session_dir ? EIO : 0;
  });
  auto blob_client = nbu::test::MakeBlobClient(SharedAzurite(), config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  const auto gauge = [&] { return GaugeValue(started.metrics, "session.unreadable"); };
  const auto shown = [&] {
    const auto degraded = service.StatusJson()["degraded"];
    return std::find(degraded.begin(), degraded.end(), "session_unreadable") != degraded.end();
  };
  EXPECT_FALSE(shown());
  EXPECT_EQ(gauge(), 0.0);
  failing = true;
  ASSERT_TRUE(WaitFor(shown, 20s));
  EXPECT_EQ(gauge(), 1.0);
  const auto errors = service.StatusJson()["recent_errors"];
  bool told = false;
  for (const auto& e : errors) {
    told = told || e["error"].get<std::string>().starts_with("cannot read the session file");
  }
  EXPECT_TRUE(told) << errors.dump();
  failing = false;
  EXPECT_TRUE(WaitFor([&] { return !shown(); }, 20s));
  EXPECT_EQ(gauge(), 0.0);
  EXPECT_TRUE(service.Shutdown(5s));
}

// A sweep blocked in a call to a hung volume (a hard mount whose server is gone) never returns.
// Shutdown does not wait for it for ever: it gives up after the grace and a few seconds, so that
// the process can end (app.cpp exits when Shutdown returns false), as for a blocked worker.
TEST(ServiceTest, ShutdownIsNotHeldForEverByASweepBlockedOnTheVolume) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("hung"));
  config.gc_interval_s = 0.05;
  config.replica_id = "hung-test";
  nbu::test::Gate volume_back;
  std::atomic<bool> hung{false};
  std::atomic<bool> blocked{false};
  std::atomic<bool> returned{false};
  // Set before the service's threads start and cleared after they end.
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    if (hung && std::string_view(op) == "opendir" && path == config.processing_root) {
      blocked = true;
      (void)volume_back.Wait(60s);
      returned = true;
    }
    return 0;
  });
  const auto open_at_exit = volume_back.OpenAtExit();
  auto blob_client = nbu::test::MakeBlobClient(SharedAzurite(), config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  hung = true;
  ASSERT_TRUE(WaitFor([&] { return blocked.load(); }, 10s));
  // Returns after the grace and 3 s, false: not joined. (Waiting for the sweep, it would return
  // true once the gate gives up, after 60 s.)
  EXPECT_FALSE(service.Shutdown(1s));
  EXPECT_FALSE(returned) << "the sweep was not blocked through the shutdown";
  volume_back.Open();  // the volume back: the sweep returns, and the service's end joins it
}

// Nor does the shutdown take new work while it waits for such a sweep: the queued files are
// dropped at once (they stay in incoming), and only the upload under way finishes.
TEST(ServiceTest, AShutdownWaitingForABlockedSweepTakesNoNewWork) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("nonew"));
  config.worker_concurrency = 1;
  config.gc_interval_s = 0.05;
  config.replica_id = "nonew-test";
  config.poll_interval_s = 0.05;
  config.min_file_age_s = 0.1;
  SlowRecovery slow(config, 0);  // holds the uploads of session "recovered"
  nbu::test::Gate volume_back;
  std::atomic<bool> hung{false};
  std::atomic<bool> blocked{false};
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    if (hung && std::string_view(op) == "opendir" && path == config.processing_root) {
      blocked = true;
      (void)volume_back.Wait(60s);
    }
    return 0;
  });
  const auto open_at_exit = volume_back.OpenAtExit();
  Started started(config, *slow.blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("recovered", &s, &error), Service::WatchError::kNone) << error;
  for (uint32_t i = 0; i < 4; ++i) {
    WriteFile(config.incoming_dir + "/recovered/f" + std::to_string(i), PatternBytes(1000, i));
  }
  // One upload held at the proxy, three files queued behind it.
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["queue_depth"] == 3; }, 30s))
      << service.StatusJson().dump();
  hung = true;
  ASSERT_TRUE(WaitFor([&] { return blocked.load(); }, 10s));
  std::atomic<bool> shut{true};
  std::thread shutdown([&] { shut = service.Shutdown(1s); });
  EXPECT_TRUE(WaitFor([&] { return service.StatusJson()["queue_depth"] == 0; }, 10s))
      << "the queue was not emptied when the shutdown began";
  slow.Release();  // the upload under way finishes within the grace
  shutdown.join();
  EXPECT_FALSE(shut) << "the sweep was not blocked through the shutdown";
  EXPECT_EQ(service.StatusJson()["uploaded"], 1) << "a queued file was taken during the shutdown";
  const std::filesystem::directory_iterator left(config.incoming_dir + "/recovered");
  EXPECT_EQ(std::distance(begin(left), end(left)), 3) << "files left in incoming";
  volume_back.Open();
}

// The session directory removed under a watched session (by hand, a volume restored): the
// replica stops watching, as one started now would, but says so: a warning, a recent error, and
// session_lost in degraded and the session.lost gauge until a session is started again.
TEST(ServiceTest, ASessionFileRemovedUnderTheWatchIsTold) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("lost"));
  config.poll_interval_s = 0.05;
  config.replica_id = "lost-test";
  auto blob_client = nbu::test::MakeBlobClient(SharedAzurite(), config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  // Shown both ways, in the status and by the gauge (a dashboard sees nothing else).
  const auto lost = [&] {
    const auto degraded = service.StatusJson()["degraded"];
    const bool listed =
        std::find(degraded.begin(), degraded.end(), "session_lost") != degraded.end();
    EXPECT_EQ(GaugeValue(started.metrics, "session.lost"), listed ? 1.0 : 0.0);
    return listed;
  };
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("w", &s, &error), Service::WatchError::kNone) << error;
  EXPECT_FALSE(lost());
  std::filesystem::remove_all(config.processing_root + "/_session");
  ASSERT_TRUE(WaitFor(lost, 20s)) << service.StatusJson().dump();
  EXPECT_EQ(service.StatusJson()["state"], "idle");
  const auto errors = service.StatusJson()["recent_errors"];
  bool told = false;
  for (const auto& e : errors) {
    told = told || e["error"].get<std::string>().starts_with("the session file is gone");
  }
  EXPECT_TRUE(told) << errors.dump();
  ASSERT_EQ(service.StartWatch("w2", &s, &error), Service::WatchError::kNone) << error;
  EXPECT_FALSE(lost());
  std::this_thread::sleep_for(200ms);  // a few polls: the new session file is read back
  EXPECT_FALSE(lost());
  EXPECT_EQ(service.StatusJson()["state"], "watching");
  // A stopped session's file removed (cleaning up): nothing was being watched, nothing is lost.
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  std::filesystem::remove_all(config.processing_root + "/_session");
  std::this_thread::sleep_for(500ms);  // ten polls
  EXPECT_FALSE(lost()) << service.StatusJson().dump();
  EXPECT_TRUE(service.Shutdown(5s));
}

// A damaged newest session file (edited by hand, say) does not keep the operator from stopping
// the session, as it does not from starting one: a stopped session replaces it.
TEST(ServiceTest, AWatchStopsDespiteADamagedSessionFile) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("damaged"));
  config.replica_id = "damaged-test";
  auto blob_client = nbu::test::MakeBlobClient(SharedAzurite(), config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("w", &s, &error), Service::WatchError::kNone) << error;
  const std::string session_dir = config.processing_root + "/_session";
  const auto generations = fs::ListDir(session_dir);
  ASSERT_TRUE(generations.ok());
  ASSERT_EQ(generations->size(), 1u);
  const uint64_t newest = std::stoull(generations->front().name);
  WriteFile(session_dir + "/" + std::to_string(newest + 1) + ".json", "{");
  ASSERT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNone) << error;
  EXPECT_EQ(s.name, "w");
  EXPECT_FALSE(s.active);
  EXPECT_EQ(service.StopWatch(&s, &error), Service::WatchError::kNotActive) << error;
  EXPECT_TRUE(service.Shutdown(5s));
}

// One retry at a time: a second asked for while the first walks the failed tree (a client that
// timed out and tried again) does nothing and says so. And a failed tree the volume cannot read
// names the first 20 of its errors and counts the rest, rather than answering without bound.
TEST(ServiceTest, DeadLettersAreRetriedByOneWalkAtATimeWithItsErrorsBounded) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("retry1"));
  config.replica_id = "retry-one";
  const std::string date = UtcDate(std::chrono::system_clock::now());
  for (int i = 0; i < 25; ++i) {
    const ClaimPath c{
        date, "s", "", "f" + std::to_string(i), "gone", NewNonce(), ClaimState::kClaimed};
    WriteFile(config.failed_root + "/" + FailedPathFor(c).DataPath(), "x");
  }
  nbu::test::Gate walking;
  nbu::test::Gate release;
  const std::string failed_dir = config.failed_root + "/" + date + "/s";
  std::atomic<std::thread::id> retrying{};  // only the first retry's walk is held
  // Set before the service's threads start, and gone after they end: the seam is no atomic.
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    if (std::string_view(op) == "opendir" && path == failed_dir &&
        std::this_thread::get_id() == retrying.load()) {
      walking.Open();
      release.Wait(20s);
    }
    // Every dead letter's look fails: the volume's trouble.
    return std::string_view(op) == "stat" && path.starts_with(failed_dir + "/") ? ESTALE : 0;
  });
  auto blob = nbu::test::MakeBlobClient(SharedAzurite(), config.azure_container);
  Started started(config, *blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  Service::RetryOutcome first;
  std::jthread retry([&] {
    retrying = std::this_thread::get_id();
    first = service.RetryFailed();
  });
  ASSERT_TRUE(walking.Wait(10s));
  const Service::RetryOutcome second = service.RetryFailed();
  EXPECT_TRUE(second.busy);
  EXPECT_EQ(second.queued + second.left + second.errors.size(), 0u);
  release.Open();
  retry.join();
  EXPECT_FALSE(first.busy);
  EXPECT_EQ(first.queued, 0u);
  EXPECT_EQ(first.errors.size(), FileProcessor::kMaxListedErrors);
  EXPECT_EQ(first.errors_unlisted, 25u - FileProcessor::kMaxListedErrors);
  EXPECT_NE(first.errors[0].find("Stale file handle"), std::string::npos) << first.errors[0];
  EXPECT_TRUE(service.Shutdown(5s));
}

// POST /v1/failed/retry with more dead letters than the queue holds: it queues what fits at
// once and leaves the rest on the volume as claims, for the sweeper to pick up as orphans. A
// claim it could not queue must not stay marked in flight, or no sweep would ever take it.
TEST(ServiceTest, DeadLettersRetriedPastAFullQueueAreLeftForTheSweeper) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("retry"));
  config.worker_concurrency = 1;
  config.max_queue_size = 1;
  config.gc_interval_s = 0.1;
  config.replica_id = "retry-test";
  SlowRecovery slow(config, 0);  // uploads held until released: the queue stays full
  const std::string date = UtcDate(std::chrono::system_clock::now());
  std::map<std::string, std::string> files;
  for (uint32_t i = 0; i < 5; ++i) {
    const ClaimPath c{date,       "recovered",         "", "f" + std::to_string(i), "gone",
                      NewNonce(), ClaimState::kClaimed};
    files[c.BlobName()] = PatternBytes(1000 + i, i);
    WriteFile(config.failed_root + "/" + FailedPathFor(c).DataPath(), files[c.BlobName()]);
  }
  Started started(config, *slow.blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  const Service::RetryOutcome retried = service.RetryFailed();
  EXPECT_TRUE(retried.errors.empty()) << retried.errors.front();
  EXPECT_EQ(retried.queued + retried.left, files.size());
  EXPECT_GE(retried.left, 3u) << "one in the worker and one in the queue at most";
  // The sweeper fills the queue with the claims left while the worker is held: the status says
  // so (invariant 6), and stops saying so once the queue has drained.
  const auto queue_full = [&] {
    const auto d = service.StatusJson()["degraded"];
    return std::find(d.begin(), d.end(), "queue_full") != d.end();
  };
  EXPECT_TRUE(WaitFor(queue_full, 30s)) << service.StatusJson().dump();
  slow.Release();
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["uploaded"] == files.size(); }, 60s))
      << service.StatusJson().dump();
  EXPECT_FALSE(queue_full()) << service.StatusJson().dump();
  for (const auto& [name, data] : files) {
    auto got = slow.blob->GetBlob(name);
    ASSERT_TRUE(got.ok()) << name << ": " << got.status().ToString();
    EXPECT_EQ(*got, data) << name;
  }
  EXPECT_TRUE(service.Shutdown(5s));
}

// A claim of another replica that is not dead yet is left with it, and the status says whose,
// how many, and how long that replica's lease has been silent (here it never had one): what an
// operator looks at while a takeover waits.
TEST(ServiceTest, ClaimsOfOtherReplicasShowInTheStatus) {
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("others"));
  config.gc_interval_s = 0.1;
  config.lease_timeout_s = 3600;
  config.replica_id = "others-test";
  const ClaimPath c{UtcDate(std::chrono::system_clock::now()),
                    "s",
                    "",
                    "theirs.bin",
                    "elsewhere",
                    NewNonce(),
                    ClaimState::kClaimed};
  WriteFile(config.processing_root + "/" + c.Path(), "x");
  auto blob_client = nbu::test::MakeBlobClient(SharedAzurite(), config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  const auto shown = [&] { return service.StatusJson()["other_replicas"]; };
  ASSERT_TRUE(WaitFor([&] { return shown().contains("elsewhere"); }, 10s))
      << service.StatusJson().dump();
  EXPECT_EQ(shown()["elsewhere"]["claims"], 1);
  EXPECT_TRUE(shown()["elsewhere"]["silent_s"].is_number()) << shown().dump();
  EXPECT_FALSE(shown().contains("others-test"));
  EXPECT_TRUE(service.Shutdown(5s));
}

// The staging troubles and throttling that workers record show in the status's degraded list
// for a minute after the last one (invariant 6), and not after.
TEST(ServiceTest, RecentStagingTroubleAndThrottlingShowInTheStatusForAMinute) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  const Config config = TestConfig(dir, FreshContainer("trouble"));
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  SimulatedClock clock{false};
  telemetry::MetricsRegistry metrics;
  telemetry::Tracer tracer{clock};
  Service service(config, clock, *blob_client, metrics, tracer);
  EXPECT_EQ(service.StatusJson()["degraded"], nlohmann::json::array());
  Instruments& inst = service.instruments();
  clock.Advance(1h);
  const auto at = [&](Duration ago) { return (clock.Now() - ago).time_since_epoch().count(); };
  inst.staging_full_at = at(1s);
  inst.staging_failing_at = at(59s);
  inst.throttled_at = at(61s);
  EXPECT_EQ(service.StatusJson()["degraded"],
            nlohmann::json::array({"staging_full", "staging_failing"}));
  inst.staging_full_at = at(61s);
  inst.staging_failing_at = at(61s);
  inst.throttled_at = at(1s);
  EXPECT_EQ(service.StatusJson()["degraded"], nlohmann::json::array({"storage_throttling"}));
}

// The lease is written before Start returns, before any loop runs: until then a process
// starting with the same id would find the id free, and other replicas would judge this one's
// first claims by a lease its predecessor left.
TEST(ServiceTest, TheLeaseIsWrittenBeforeStartReturns) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("first-beat"));
  config.replica_id = "first-beat";
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  const auto lease = fs::ReadSmallFile(config.processing_root + "/_replicas/first-beat.lease");
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_NE(lease->find(R"("replica":"first-beat")"), std::string::npos) << *lease;
  EXPECT_TRUE(started.service.Shutdown(5s));
}

// A replica that cannot write its lease is reported degraded (other replicas will soon take
// its claims for a dead replica's), keeps uploading meanwhile, and recovers on its own once the
// lease can be written again. The lease path is made a directory, which no rename can replace.
TEST(ServiceTest, ALeaseThatCannotBeWrittenIsReportedAndRecovers) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("lease"));
  config.poll_interval_s = 0.05;
  config.min_file_age_s = 0;
  config.lease_timeout_s = 0.4;  // a heartbeat every 0.1 s
  config.replica_id = "lease-test";
  const std::string lease = config.processing_root + "/_replicas/lease-test.lease";
  WriteFile(lease + "/blocker", "");
  auto blob_client = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob_client);
  Service& service = started.service;
  auto degraded = [&](const std::string& what) {
    const auto d = service.StatusJson()["degraded"];
    return std::find(d.begin(), d.end(), what) != d.end();
  };
  ASSERT_TRUE(WaitFor([&] { return degraded("lease_write_failing"); }, 30s))
      << service.StatusJson().dump();
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("t", &s, &error), Service::WatchError::kNone) << error;
  const std::string data = PatternBytes(3000, 5);
  WriteFile(config.incoming_dir + "/t/f.bin", data);
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["uploaded"] == 1; }, 60s))
      << service.StatusJson().dump();
  EXPECT_TRUE(degraded("lease_write_failing"));
  std::filesystem::remove_all(lease);
  ASSERT_TRUE(WaitFor([&] { return !degraded("lease_write_failing"); }, 30s))
      << service.StatusJson().dump();
  EXPECT_NE(nbu::test::ReadFile(lease).find("lease-test"), std::string::npos);
  EXPECT_TRUE(service.Shutdown(5s));
  size_t entries = 0;  // no temporary file of a failed write is left beside the lease
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator(config.processing_root + "/_replicas")) {
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
}

// Storage that takes an upload and then answers nothing shows as storage_silent (and its gauge)
// once a quarter of the stall limit passes (1 s of 4 here), long before the request is given
// up; and no longer once storage answers again. Told in the log too, though the scan loop
// waits on a full queue meanwhile (one worker, a queue of one, three files).
TEST(ServiceTest, StorageThatGoesSilentIsShownBeforeTheRequestIsGivenUp) {
  test::CapturedLog told("storage_silent");  // its start's line, and its end's
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("silent"));
  config.poll_interval_s = 0.05;
  config.min_file_age_s = 0.1;
  config.worker_concurrency = 1;
  config.max_queue_size = 1;
  config.replica_id = "silent-test";
  nbu::test::Gate gate;
  nbu::test::FaultProxy proxy(azurite.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.method == "PUT" && r.target.find("/run/") != std::string::npos) {
      EXPECT_TRUE(gate.Wait(60s));
    }
    return nbu::test::FaultAction::Forward();
  });
  const auto open_at_exit = gate.OpenAtExit();  // before the proxy joins its handlers
  auto blob = nbu::test::MakeBlobClient(nbu::test::BlobEndpointVia(proxy.port()),
                                        config.azure_container, {}, 4s);
  Started started(config, *blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  const auto silent = [&] {
    const auto d = service.StatusJson()["degraded"];
    return std::find(d.begin(), d.end(), "storage_silent") != d.end();
  };
  EXPECT_FALSE(silent());
  EXPECT_EQ(GaugeValue(started.metrics, "storage.silent"), 0.0);
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("run", &s, &error), Service::WatchError::kNone) << error;
  for (const char* name : {"a.bin", "b.bin", "c.bin"}) {
    WriteFile(config.incoming_dir + "/run/" + name, name);
  }
  ASSERT_TRUE(WaitFor(silent, 30s)) << service.StatusJson().dump();
  EXPECT_EQ(GaugeValue(started.metrics, "storage.silent"), 1.0);
  ASSERT_TRUE(WaitFor([&] { return told.Lines().size() == 1; }, 30s));
  EXPECT_NE(told.Lines()[0].find("has moved no byte"), std::string::npos) << told.Lines()[0];
  gate.Open();
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["counters"]["uploaded"] == 3; }, 60s))
      << service.StatusJson().dump();
  EXPECT_FALSE(silent()) << service.StatusJson().dump();
  EXPECT_EQ(GaugeValue(started.metrics, "storage.silent"), 0.0);
  ASSERT_TRUE(WaitFor([&] { return told.Lines().size() == 2; }, 30s));
  EXPECT_NE(told.Lines()[1].find("storage_silent over"), std::string::npos) << told.Lines()[1];
  EXPECT_TRUE(service.Shutdown(5s));
}

// A shutdown while a start-up check waits on storage is no trouble of storage's: nothing is
// logged or kept in recent_errors for it.
TEST(ServiceTest, AStopDuringTheStartUpCheckIsNotStartUpTrouble) {
  Azurite& azurite = SharedAzurite();
  test::CapturedLog checks("CreateContainer");  // the start-up check's lines
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("startup-stop"));
  config.replica_id = "startup-stop-test";
  nbu::test::Gate gate;
  std::atomic<int> held{0};
  nbu::test::FaultProxy proxy(azurite.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.target.find("restype=container") != std::string::npos) {
      ++held;
      EXPECT_TRUE(gate.Wait(60s));
    }
    return nbu::test::FaultAction::Forward();
  });
  const auto open_at_exit = gate.OpenAtExit();  // before the proxy joins its handlers
  auto blob = OneTryClientVia(proxy, config);
  Started started(config, *blob);
  ASSERT_TRUE(WaitFor([&] { return held.load() > 0; }, 30s));
  EXPECT_TRUE(started.service.Shutdown(5s));
  const auto status = started.service.StatusJson();
  EXPECT_EQ(status["recent_errors"].size(), 0u) << status.dump();
  EXPECT_TRUE(checks.Lines().empty()) << checks.Lines().front();
}

// A start-up check that storage answers with an error (here the 400 a cloud gives an x-ms-version
// it does not take) is logged as that answer, not as storage out of reach, and tried again; a
// check that gets no answer (the connection dropped), or a gateway's bare 503 with no error code,
// is still "not reachable yet"; storage's coded 500 is "a server error" (which the binary's
// status lists as storage_unreachable), and a 409 ContainerBeingDeleted says so.
TEST(ServiceTest, AStartUpCheckAnsweredWithAnErrorIsNotLoggedAsUnreachable) {
  Azurite& azurite = SharedAzurite();
  test::CapturedLog checks("CreateContainer");  // the start-up check's lines
  enum class Answer { kError, kNone, kBare503, kCoded500, kBeingDeleted };
  for (const Answer how : {Answer::kError, Answer::kNone, Answer::kBare503, Answer::kCoded500,
                           Answer::kBeingDeleted}) {
    const bool answered = how == Answer::kError;
    checks.Clear();
    TempDir dir;
    Config config = TestConfig(dir, FreshContainer("startup"));
    config.replica_id = "startup-test";
    nbu::test::FaultProxy proxy(azurite.port(), [how](const nbu::test::ProxyRequest& r) {
      if (r.target.find("restype=container") == std::string::npos) {
        return nbu::test::FaultAction::Forward();
      }
      switch (how) {
        case Answer::kError: return nbu::test::FaultAction::Status(400, "InvalidHeaderValue");
        case Answer::kNone: return nbu::test::FaultAction::DropBefore();
        case Answer::kBare503: return nbu::test::FaultAction::Status(503, "");
        case Answer::kCoded500: return nbu::test::FaultAction::Status(500, "InternalError");
        case Answer::kBeingDeleted:
          return nbu::test::FaultAction::Status(409, "ContainerBeingDeleted");
      }
      return nbu::test::FaultAction::Forward();
    });
    auto blob = OneTryClientVia(proxy, config);
    Started started(config, *blob);
    ASSERT_TRUE(WaitFor([&] { return checks.Lines().size() >= 2; }, 30s)) << "tried again";
    for (const std::string& line : checks.Lines()) {
      if (answered) {
        EXPECT_NE(line.find("storage answers the start-up check with an error"), std::string::npos)
            << line;
        EXPECT_NE(line.find("HTTP 400 InvalidHeaderValue"), std::string::npos) << line;
        EXPECT_EQ(line.find("not reachable"), std::string::npos) << line;
      } else if (how == Answer::kBeingDeleted) {
        EXPECT_NE(line.find("the container is being deleted"), std::string::npos) << line;
      } else if (how == Answer::kCoded500) {
        EXPECT_NE(line.find("storage answers the start-up check with a server error"),
                  std::string::npos)
            << line;
      } else {
        EXPECT_NE(line.find("storage not reachable yet"), std::string::npos) << line;
      }
    }
    const auto status = started.service.StatusJson();
    EXPECT_FALSE(status["ready"].get<bool>());
    // One entry for the tries, though each answer had a request id of its own.
    ASSERT_EQ(status["recent_errors"].size(), 1u) << status.dump();
    EXPECT_GE(status["recent_errors"][0]["count"], 2) << status.dump();
    if (answered) {
      EXPECT_NE(status["recent_errors"][0]["error"].get<std::string>().find(
                    "HTTP 400 InvalidHeaderValue"),
                std::string::npos)
          << status.dump();
    }
    EXPECT_TRUE(started.service.Shutdown(5s));
  }
}

// Makes `path` and a chain of directories below it longer than PATH_MAX: it cannot be listed by
// path, by root too.
void MakeDirPastPathMax(const std::string& path) {
  ASSERT_TRUE(fs::MkdirAll(path).ok());
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string part(250, 'd');
  for (int depth = 0; depth < 17; ++depth) {  // 17 x 251 bytes: past PATH_MAX (4096)
    ASSERT_EQ(::mkdirat(fd, part.c_str(), 0755), 0) << depth;
    const int next = ::openat(fd, part.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    ASSERT_GE(next, 0) << depth;
    fd = next;
  }
  ::close(fd);
}

// What cannot be read is looked at again at every scan, and every time it cannot: one warning
// when that starts and one when it changes, none for the scans between (here one every 10 ms)
// nor when it comes back unchanged after a scan without it, and so one recent error each.
TEST(ServiceTest, WhatCannotBeReadIsToldWhenItChangesNotAtEveryScan) {
  Azurite& azurite = SharedAzurite();
  test::CapturedLog logged("", LogLevel::kDebug);  // debug for the scans' lines
  // Lines whose message begins with `prefix`; the scans' lines are "scan".
  const auto count = [&](std::string_view prefix) {
    const std::vector<std::string> messages = logged.Messages();
    return std::count_if(messages.begin(), messages.end(), [&](const std::string& m) {
      return prefix == "scan" ? m == prefix : m.starts_with(prefix);
    });
  };
  const std::string_view kWarning = "files or directories that cannot be read";
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("unreadable"));
  config.replica_id = "unreadable-test";
  config.poll_interval_s = 0.01;
  auto blob = nbu::test::MakeBlobClient(azurite, config.azure_container);
  Started started(config, *blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s));
  // Moves incoming<sub> away and back `times` times, each move followed by two scans.
  const auto come_and_go = [&](const std::string& sub, int times) {
    const std::string there = config.incoming_dir + sub;
    const std::string away = config.incoming_dir + "/away";
    for (int i = 0; i < 2 * times; ++i) {
      const bool out = i % 2 == 0;
      if (::rename((out ? there : away).c_str(), (out ? away : there).c_str()) != 0) return false;
      const auto now = count("scan");
      if (!WaitFor([&] { return count("scan") >= now + 2; }, 30s)) return false;
    }
    return true;
  };
  SessionState s;
  std::string error;
  ASSERT_EQ(service.StartWatch("u", &s, &error), Service::WatchError::kNone) << error;
  MakeDirPastPathMax(config.incoming_dir + "/u/a");
  ASSERT_TRUE(WaitFor([&] { return count(kWarning) == 1; }, 30s));
  const auto scans = count("scan");
  ASSERT_TRUE(WaitFor([&] { return count("scan") >= scans + 30; }, 30s));
  EXPECT_EQ(count(kWarning), 1) << "told once, not at every scan";
  // A fault that comes and goes between scans is not news each time it comes back.
  ASSERT_TRUE(come_and_go("/u/a", 4));
  EXPECT_EQ(count(kWarning), 1) << "told once, though it came back four times";
  MakeDirPastPathMax(config.incoming_dir + "/u/b");
  ASSERT_TRUE(WaitFor([&] { return count(kWarning) == 2; }, 30s)) << "told again: it changed";
  // A count that goes down and up again is not news each time it goes up.
  ASSERT_TRUE(come_and_go("/u/b", 2));
  EXPECT_EQ(count(kWarning), 2) << "told once, though it went from 2 to 1 to 2 twice";
  const auto status = service.StatusJson();
  EXPECT_EQ(status["last_scan"]["unreadable"], 2);
  // One occurrence per warning (one entry, or two if the example named changed).
  uint64_t occurrences = 0;
  for (const auto& e : status["recent_errors"]) {
    if (e["error"].get<std::string>().starts_with("cannot read")) {
      occurrences += e["count"].get<uint64_t>();
    }
  }
  EXPECT_EQ(occurrences, 2u) << status.dump();
  EXPECT_TRUE(service.Shutdown(5s));
}

// An access tier the account refuses (a premium account's 400 UnsupportedHeader) would refuse
// every upload, and each file would be dead-lettered: start-up tries it first, says so naming the
// variable and waits, no file is claimed; once storage takes it, start-up goes on and files go
// up with it.
TEST(ServiceTest, AnAccessTierStorageRefusesHoldsStartUpNotTheFiles) {
  Azurite& azurite = SharedAzurite();
  TempDir dir;
  Config config = TestConfig(dir, FreshContainer("tier"));
  config.replica_id = "tier-test";
  config.poll_interval_s = 0.05;
  config.min_file_age_s = 0.05;
  config.azure_access_tier = "Cool";
  std::atomic<bool> refuse{true};
  std::mutex mu;
  std::string probe;  // the last tier probe's blob name; guarded by mu
  nbu::test::FaultProxy proxy(azurite.port(), [&](const nbu::test::ProxyRequest& r) {
    const size_t at = r.target.find(".nbu-probe/tier-");
    if (r.method != "PUT" || at == std::string::npos) return nbu::test::FaultAction::Forward();
    {
      std::lock_guard lock(mu);
      probe = r.target.substr(at, r.target.find('?', at) - at);
    }
    return refuse ? nbu::test::FaultAction::Status(400, "UnsupportedHeader")
                  : nbu::test::FaultAction::Forward();
  });
  auto blob = OneTryClientVia(proxy, config);
  Started started(config, *blob);
  Service& service = started.service;
  ASSERT_TRUE(WaitFor([&] { return proxy.Count(".nbu-probe/tier-", "PUT") >= 2; }, 30s))
      << "tried again";
  const auto status = service.StatusJson();
  EXPECT_FALSE(status["ready"].get<bool>());
  ASSERT_FALSE(status["recent_errors"].empty()) << status.dump();
  const std::string error = status["recent_errors"][0]["error"].get<std::string>();
  EXPECT_NE(error.find("APP_AZURE_ACCESS_TIER=Cool"), std::string::npos) << error;
  EXPECT_NE(error.find("HTTP 400 UnsupportedHeader"), std::string::npos) << error;

  refuse = false;
  ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s)) << service.StatusJson().dump();
  SessionState s;
  std::string why;
  ASSERT_EQ(service.StartWatch("t", &s, &why), Service::WatchError::kNone) << why;
  WriteFile(config.incoming_dir + "/t/f.bin", "tiered");
  ASSERT_TRUE(WaitFor([&] { return service.StatusJson()["uploaded"] == 1; }, 30s))
      << service.StatusJson().dump();
  auto got = GetUploaded(*blob, "t", "f.bin");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "tiered");
  EXPECT_EQ(service.StatusJson()["failed"], 0);
  {
    std::lock_guard lock(mu);
    auto left = blob->GetProperties(probe);
    ASSERT_TRUE(left.ok()) << left.status().ToString();
    EXPECT_FALSE(left->has_value()) << probe << ": the probe blob is deleted";
  }
  EXPECT_TRUE(service.Shutdown(5s));
}

// Credentials that may not write blobs (an account SAS without object scope, a role that only
// reads) may still see the container: the start-up's CRC-64 probe is its one write, and its
// refusal holds start-up, said so, rather than going ready to have every upload refused. A
// probe that meets storage's trouble (a 500, a container being deleted) holds it too, and asks
// again, rather than settle on MD5 for the life of the process.
TEST(ServiceTest, AWriteProbeRefusedHoldsStartUp) {
  Azurite& azurite = SharedAzurite();
  for (const auto& [status, code] :
       {std::pair{403, "AuthorizationResourceTypeMismatch"}, std::pair{500, "InternalError"}}) {
    TempDir dir;
    Config config = TestConfig(dir, FreshContainer("refused"));
    config.replica_id = "refused-test";
    std::atomic<bool> refuse{true};
    nbu::test::FaultProxy proxy(azurite.port(), [&](const nbu::test::ProxyRequest& r) {
      const bool probe =
          r.method == "PUT" && r.target.find(".nbu-probe/crc64-") != std::string::npos;
      return probe && refuse ? nbu::test::FaultAction::Status(status, code)
                             : nbu::test::FaultAction::Forward();
    });
    auto blob = OneTryClientVia(proxy, config);
    Started started(config, *blob);
    Service& service = started.service;
    ASSERT_TRUE(WaitFor([&] { return proxy.Count(".nbu-probe/crc64-", "PUT") >= 2; }, 30s))
        << status << ": tried again";
    const auto held = service.StatusJson();
    EXPECT_FALSE(held["ready"].get<bool>());
    ASSERT_FALSE(held["recent_errors"].empty()) << held.dump();
    const std::string error = held["recent_errors"][0]["error"].get<std::string>();
    if (status == 403) {
      EXPECT_NE(error.find("a probe blob's write was refused"), std::string::npos) << error;
    } else {  // a gateway that fails only this probe for good is told how to skip it
      EXPECT_NE(error.find("APP_AZURE_PUT_BLOB_CHECKSUM=md5 skips it"), std::string::npos) << error;
    }
    EXPECT_NE(error.find("HTTP " + std::to_string(status) + " " + code), std::string::npos)
        << error;
    refuse = false;
    ASSERT_TRUE(WaitFor([&] { return service.ready(); }, 30s)) << service.StatusJson().dump();
    // Azurite 3.37 checks a CRC-64, as the probe finds once storage answers it.
    EXPECT_EQ(service.StatusJson()["put_blob_checksum"], "crc64");
    EXPECT_TRUE(service.Shutdown(5s));
  }
}

}  // namespace
}  // namespace nbu::core
