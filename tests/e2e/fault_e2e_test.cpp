// Fault injection end to end: the real binary talks to a real Azurite through FaultProxy.
// Every file must arrive byte-exact with nothing lost or left behind, whatever the faults.
#include "core/file_processor.h"
#include "e2e_support.h"
#include "support/fault_proxy.h"
#include "support/gate.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

namespace nbu::test {
namespace {

using namespace std::chrono_literals;

class FaultE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    AzuriteOptions on_disk;  // survives Stop()/Start()
    on_disk.in_memory = false;
    azurite_ = std::make_unique<Azurite>(on_disk);
    proxy_ = std::make_unique<FaultProxy>(azurite_->port());
    blobs_ = MakeBlobClient(*azurite_, container_);
    ASSERT_TRUE(blobs_->CreateContainerIfMissing().ok());
  }
  // Through the fault proxy, or straight to Azurite (so a stopped Azurite refuses connections).
  // Ready unless `wait_ready` is false (start-up recovery may hold readiness back).
  std::unique_ptr<UploaderProcess> Start(std::map<std::string, std::string> extra = {},
                                         bool via_proxy = true, bool wait_ready = true) {
    extra["APP_AZURE_CONNECTION_STRING"] =
        ConnectionStringVia(via_proxy ? proxy_->port() : azurite_->port());
    auto up = std::make_unique<UploaderProcess>(*azurite_, volume_, container_, "r1", extra);
    if (wait_ready) {
      EXPECT_TRUE(up->WaitReady()) << up->process().ReadLog();
    }
    return up;
  }
  std::optional<std::string> GetBlob(const std::string& session, const std::string& rel) {
    return GetBlobOf(*blobs_, session, rel);
  }
  bool Arrived(const std::string& session, const std::string& rel, const std::string& data) {
    auto got = GetBlob(session, rel);
    return got && *got == data;
  }
  void ExpectAllArrive(const std::string& session, const std::map<std::string, std::string>& files,
                       std::chrono::seconds timeout) {
    WaitFor(
        [&] {
          for (const auto& [rel, data] : files) {
            if (!Arrived(session, rel, data)) return false;
          }
          return true;
        },
        timeout);
    for (const auto& [rel, data] : files) EXPECT_TRUE(Arrived(session, rel, data)) << rel;
  }
  // Whether the status's degraded list becomes `states` within a minute; *status: the last look.
  static bool DegradedBecomes(UploaderProcess& up, const std::vector<std::string>& states,
                              nlohmann::json* status) {
    return WaitFor(
        [&] {
          *status = up.Status();
          return (*status)["degraded"] == nlohmann::json(states);
        },
        60s);
  }
  size_t ClaimsLeft() { return volume_.ClaimEntries(); }
  void ExpectNothingLeft(std::initializer_list<const UploaderProcess*> replicas) {
    EXPECT_TRUE(WaitFor([&] { return ClaimsLeft() == 0; }, 30s)) << ClaimsLeft();
    EXPECT_TRUE(Volume::Files(volume_.incoming()).empty());
    for (const UploaderProcess* up : replicas) {
      EXPECT_TRUE(Volume::Files(up->staging()).empty()) << up->staging();
    }
  }
  void ExpectNothingLeft(const UploaderProcess& up) { ExpectNothingLeft({&up}); }
  // Files <prefix>0.bin.. of `size` bytes, each of its own pattern (from `first_seed` on).
  std::map<std::string, std::string> DropFiles(const std::string& session, uint32_t n, size_t size,
                                               const std::string& prefix = "f",
                                               uint32_t first_seed = 1000) {
    std::map<std::string, std::string> files;
    for (uint32_t i = 0; i < n; ++i) {
      const std::string rel = prefix + std::to_string(i) + ".bin";
      files[rel] = PatternBytes(size, i + first_seed);
      WriteFile(volume_.incoming() + "/" + session + "/" + rel, files[rel]);
    }
    return files;
  }

  // Starts the service with 1 MiB Put Blobs and 256 KiB blocks, drops `n` files of `size` bytes
  // and one of `big` bytes (sent in blocks) into `session`, and waits until every blob holds its
  // file's bytes and nothing is left on the volume (nor dead-lettered) or in staging.
  std::unique_ptr<UploaderProcess> UploadThroughFaults(const std::string& session, uint32_t n,
                                                       size_t size, size_t big) {
    auto up =
        Start({{"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"}, {"APP_AZURE_BLOCK_SIZE", "262144"}});
    EXPECT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":")" + session + "\"}").status,
              200);
    auto files = DropFiles(session, n, size);
    files["big.bin"] = PatternBytes(big, 77);
    WriteFile(volume_.incoming() + "/" + session + "/big.bin", files["big.bin"]);
    ExpectAllArrive(session, files, 120s);
    ExpectNothingLeft(*up);
    // A blob right but its file dead-lettered (a retry whose first try landed, refused as a
    // conflict) would pass every check above.
    ExpectNoDeadLetters();
    EXPECT_EQ(ListedFiles(*blobs_), FilesOf(session, files));  // and no blob besides
    return up;
  }
  // Each dead letter fails the test, with its reason (not its bytes).
  void ExpectNoDeadLetters() {
    for (const std::string& f : Volume::Files(volume_.failed())) {
      ADD_FAILURE() << "dead-lettered: " << f
                    << (f.ends_with(".json") ? ": " + ReadFile(volume_.failed() + "/" + f) : "");
    }
  }

  std::unique_ptr<Azurite> azurite_;
  Gate gate_;  // for plans that hold requests; outlives the proxy, whose handlers may wait at it
  std::unique_ptr<FaultProxy> proxy_;
  Volume volume_;
  std::string container_ = "faults";
  std::unique_ptr<azure::BlobClient> blobs_;
};

TEST_F(FaultE2E, ThrottlingErrorsDropsAndSlowAnswersLoseNothing) {
  // Every 2nd request gets a fault, cycling through the kinds storage and networks produce.
  proxy_->SetPlan([](const ProxyRequest& r) {
    if (r.index % 2 == 1 || r.target.find("restype=container") != std::string::npos) {
      return FaultAction::Forward();
    }
    switch ((r.index / 2) % 5) {
      case 0: return FaultAction::Status(503, "ServerBusy", "1");
      case 1: return FaultAction::Status(503, "ServerBusy");
      case 2: return FaultAction::Status(500, "InternalError");
      case 3: return FaultAction::DropBefore();
      default: return FaultAction::Delay(300);
    }
  });
  auto up = UploadThroughFaults("f", 30, 48 << 10, 3 << 20);
  const auto status = up->Status();
  EXPECT_GT(status["counters"]["retries"].get<int>(), 0);
  EXPECT_GT(status["counters"]["throttled"].get<int>(), 0);
  EXPECT_EQ(status["counters"]["failed"], 0);
  EXPECT_GT(proxy_->faults(), 10u);
  // Throttled within the last minute: said so in the status.
  const auto degraded = status["degraded"];
  EXPECT_NE(std::find(degraded.begin(), degraded.end(), "storage_throttling"), degraded.end())
      << status.dump();
}

// A bit flipped on the way to storage, in the first Put Blob's body and in the first Put Block's,
// is caught against the checksum computed from the source bytes (Crc64Mismatch, Md5Mismatch):
// nothing is stored from either, the attempts are repeated from the claims, and every blob holds
// its file's bytes. The status counts the two mismatches.
TEST_F(FaultE2E, BodiesChangedOnTheWayAreRefusedAndSentAgain) {
  std::atomic<int> put_blobs{0};
  std::atomic<int> put_blocks{0};
  proxy_->SetPlan([&](const ProxyRequest& r) {
    const auto has = [&](const char* s) { return r.target.find(s) != std::string::npos; };
    if (r.method != "PUT" || has("restype=") || has(".nbu-probe")) return FaultAction::Forward();
    if (has("comp=block&"))
      return put_blocks++ == 0 ? FaultAction::FlipBodyBit() : FaultAction::Forward();
    if (!has("?")) return put_blobs++ == 0 ? FaultAction::FlipBodyBit() : FaultAction::Forward();
    return FaultAction::Forward();
  });
  auto up = UploadThroughFaults("flip", 4, 48 << 10, 2 << 20);
  EXPECT_EQ(proxy_->faults(), 2u);
  const auto status = up->Status();
  EXPECT_EQ(status["put_blob_checksum"], "crc64");
  EXPECT_EQ(status["counters"].at("checksum_mismatches"), 2);
  EXPECT_EQ(status["counters"]["failed"], 0);
}

TEST_F(FaultE2E, ResponseLostAfterTheWriteLandedIsStillExactlyRight) {
  // The request reaches storage but the answer is lost: the retry must converge on the same blob.
  proxy_->SetPlan([](const ProxyRequest& r) {
    return r.method == "PUT" && r.index % 3 == 0 && r.target.find("restype") == std::string::npos
               ? FaultAction::DropAfter()
               : FaultAction::Forward();
  });
  UploadThroughFaults("lost", 20, 16 << 10, 2 << 20);
  EXPECT_GT(proxy_->faults(), 0u) << "no answer was lost: the test proved nothing";
}

// A bare 400 from something between us and storage (a proxy, a gateway: no x-ms-request-id),
// here to the first Put Blob and the first Put Block List, fails that attempt, not the file:
// both files are sent again and arrive, and nothing is dead-lettered.
TEST_F(FaultE2E, ABare400OnTheWayFailsTheAttemptNotTheFile) {
  std::atomic<int> put_blobs{0};
  std::atomic<int> block_lists{0};
  proxy_->SetPlan([&](const ProxyRequest& r) {
    const auto has = [&](const char* s) { return r.target.find(s) != std::string::npos; };
    if (r.method != "PUT" || !has("/bare/")) return FaultAction::Forward();
    const bool first = has("comp=blocklist") ? block_lists++ == 0 : !has("?") && put_blobs++ == 0;
    return first ? FaultAction::Status(400, "") : FaultAction::Forward();
  });
  auto up = UploadThroughFaults("bare", 1, 48 << 10, 2 << 20);
  EXPECT_EQ(proxy_->faults(), 2u);
  EXPECT_EQ(up->Status()["counters"]["failed"], 0);
}

// A file storage refuses for reasons of its own blob (here a reader holds a lease on it: 412
// LeaseIdMissing) fails attempt after attempt, unlike an outage, which is waited out. It is
// dead-lettered, kept with the reason, and uploaded once retried after the fault is gone.
TEST_F(FaultE2E, PoisonFileIsDeadLetteredKeptAndRetriable) {
  std::atomic<bool> poison{true};
  proxy_->SetPlan([&](const ProxyRequest& r) {
    return poison && r.target.find("poison") != std::string::npos
               ? FaultAction::Status(412, "LeaseIdMissing")
               : FaultAction::Forward();
  });
  auto up = Start({{"APP_MAX_FILE_ATTEMPTS", "2"}, {"APP_AZURE_RETRY_MAX_ATTEMPTS", "2"}});
  ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"p"})").status, 200);
  const std::string bad = PatternBytes(1000, 1);
  WriteFile(volume_.incoming() + "/p/sub/poison.bin", bad);
  auto files = DropFiles("p", 10, 1000);
  ExpectAllArrive("p", files, 60s);  // the poison file does not block the others
  ASSERT_TRUE(WaitFor([&] { return up->Status()["dead_letter"]["count"] == 1; }, 60s))
      << up->Status().dump();
  // Visible three ways: the status's degraded list, the metric, and an error line in the log.
  const auto degraded = up->Status()["degraded"];
  EXPECT_NE(std::find(degraded.begin(), degraded.end(), "dead_lettered_files"), degraded.end())
      << degraded.dump();
  EXPECT_EQ(up->Metric("files_dead_letter"), "1");
  const std::string log = up->process().ReadLog();
  EXPECT_NE(log.find(R"("level":"error","message":"file dead-lettered")"), std::string::npos)
      << log;
  const auto failed = Volume::Files(volume_.failed());
  ASSERT_EQ(failed.size(), 2u);  // the bytes and the reason, never deleted
  std::string data_file, reason_file;
  for (const auto& f : failed) (f.ends_with(".json") ? reason_file : data_file) = f;
  EXPECT_EQ(ReadFile(volume_.failed() + "/" + data_file), bad);
  const auto reason = nlohmann::json::parse(ReadFile(volume_.failed() + "/" + reason_file));
  EXPECT_EQ(reason["attempts"], 2);
  EXPECT_EQ(reason["relative_path"], "sub/poison.bin");
  EXPECT_EQ(reason["container"], container_);
  EXPECT_NE(reason["error"].get<std::string>().find("412 LeaseIdMissing"), std::string::npos)
      << reason.dump();
  EXPECT_EQ(up->Status()["counters"]["failed"], 1);
  // The fault is fixed: retrying puts it back into the pipeline under the same blob name.
  poison = false;
  auto retry = up->Call("POST", "/v1/failed/retry");
  EXPECT_EQ(retry.status, 200);
  EXPECT_EQ(retry.body["queued"], 1);
  EXPECT_EQ(retry.body["left_for_sweeper"], 0);
  EXPECT_EQ(retry.body["errors"], nlohmann::json::array());
  EXPECT_EQ(retry.body["errors_unlisted"], 0);
  ExpectAllArrive("p", {{"sub/poison.bin", bad}}, 60s);
  EXPECT_TRUE(WaitFor([&] { return Volume::Files(volume_.failed()).empty(); }, 10s));
  // Both follow the sweeper's count of the dead-letter area, refreshed at each sweep.
  EXPECT_TRUE(WaitFor(
      [&] {
        return up->Status()["degraded"] == nlohmann::json::array() &&
               up->Metric("files_dead_letter") == "0";
      },
      10s))
      << up->Status()["degraded"].dump();
  ExpectNothingLeft(*up);
}

// A file whose processing the service never survives (here: killed while its Put Blob is
// answered by nobody, as a crash or an OOM kill would end it) must not take the service down
// for good. Each run of its claim is recorded on the volume before it begins; once as many runs
// as APP_MAX_FILE_ATTEMPTS ended with the process, the next start dead-letters it unsent and goes
// on with the rest.
TEST_F(FaultE2E, FileThatKillsTheServiceOnEveryRunIsDeadLetteredAfterTheAttemptLimit) {
  auto gate = std::make_shared<Gate>();
  proxy_->SetPlan([gate](const ProxyRequest& r) {
    if (r.method != "PUT" || r.target.find("crash.bin") == std::string::npos) {
      return FaultAction::Forward();
    }
    gate->Wait(60s);
    return FaultAction::DropBefore();  // never forwarded
  });
  const auto open_at_exit = gate->OpenAtExit();
  const std::string bad = PatternBytes(5000, 3);
  // The run count of crash.bin's claim as the volume shows it (-1: no claim).
  auto runs_on_volume = [&] {
    for (const auto& f : Volume::Files(volume_.processing())) {
      auto c = core::ParseClaimPath(f);
      if (c && c->base == "crash.bin" && c->state == core::ClaimState::kClaimed) return c->runs;
    }
    return -1;
  };
  {
    // A shutdown while the Put Blob hangs: the worker's request is aborted once the grace period
    // is over, and the run is handed back (0 runs: a shutdown never counts).
    auto up = Start({{"APP_MAX_FILE_ATTEMPTS", "2"}, {"APP_SHUTDOWN_GRACE_S", "0.2"}});
    ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"k"})").status, 200);
    WriteFile(volume_.incoming() + "/k/crash.bin", bad);
    ASSERT_TRUE(WaitFor([&] { return proxy_->Count("crash.bin", "PUT") == 1; }, 60s));
    EXPECT_EQ(runs_on_volume(), 1);
    up->process().Signal(SIGTERM);
    EXPECT_EQ(up->process().Wait(20s), 0) << up->process().ReadLog();
    EXPECT_EQ(runs_on_volume(), 0) << up->process().ReadLog();
  }
  // Then two runs that end with SIGKILL; start-up recovery picks the claim up each time (the
  // service is not ready until a worker has picked it up), and records the run before its Put Blob.
  for (size_t run = 1; run <= 2; ++run) {
    auto up = Start({{"APP_MAX_FILE_ATTEMPTS", "2"}}, true, /*wait_ready=*/false);
    ASSERT_TRUE(WaitFor([&] { return proxy_->Count("crash.bin", "PUT") == 1u + run; }, 60s))
        << up->process().ReadLog();
    EXPECT_EQ(runs_on_volume(), static_cast<int>(run));
    up->process().Signal(SIGKILL);
    ASSERT_EQ(up->process().Wait(10s), 128 + SIGKILL);
  }
  auto up = Start({{"APP_MAX_FILE_ATTEMPTS", "2"}});
  ASSERT_TRUE(WaitFor([&] { return up->Status()["dead_letter"]["count"] == 1; }, 30s))
      << up->Status().dump();
  EXPECT_EQ(up->Status()["counters"]["failed"], 1);
  const auto failed = Volume::Files(volume_.failed());
  ASSERT_EQ(failed.size(), 2u);
  std::string data_file, reason_file;
  for (const auto& f : failed) (f.ends_with(".json") ? reason_file : data_file) = f;
  EXPECT_EQ(ReadFile(volume_.failed() + "/" + data_file), bad) << "the bytes are kept";
  const auto reason = nlohmann::json::parse(ReadFile(volume_.failed() + "/" + reason_file));
  EXPECT_EQ(reason["attempts"], 2);
  EXPECT_NE(reason["error"].get<std::string>().find("interrupted 2 times"), std::string::npos)
      << reason.dump();
  // The session goes on: later files arrive, and the poison file was not sent a third time.
  auto files = DropFiles("k", 5, 3000);
  ExpectAllArrive("k", files, 60s);
  EXPECT_EQ(proxy_->Count("crash.bin", "PUT"), 3u);
  EXPECT_FALSE(GetBlob("k", "crash.bin").has_value());
  ExpectNothingLeft(*up);
}

TEST_F(FaultE2E, StorageDownForSecondsThenIngestResumesOnItsOwn) {
  auto up = Start({}, /*via_proxy=*/false);
  ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"down"})").status, 200);
  auto first = DropFiles("down", 5, 4096);
  ExpectAllArrive("down", first, 60s);
  EXPECT_EQ(up->Status()["degraded"], nlohmann::json::array());
  azurite_->Stop();
  const auto second = DropFiles("down", 10, 4096, "later", 50);
  // Proof the outage was met: a file dropped during it failed to upload, was tried again, and
  // failed again (the status counts each file's errors in its entry).
  nlohmann::json status;
  ASSERT_TRUE(WaitFor(
      [&] {
        status = up->Status();
        for (const auto& e : status["recent_errors"]) {
          if (e.value("file", "").rfind("later", 0) == 0 && e.value("count", 0) >= 2) return true;
        }
        return false;
      },
      60s))
      << status.dump();
  EXPECT_EQ(status["counters"]["failed"], 0) << "an outage must not dead-letter files";
  // Reported once no try was answered for 10 s before a failed one.
  EXPECT_TRUE(DegradedBecomes(*up, {"storage_unreachable"}, &status)) << status.dump();
  EXPECT_EQ(up->Metric("storage_unreachable"), "1");
  azurite_->Start();
  ExpectAllArrive("down", second, 120s);
  ExpectNothingLeft(*up);
  EXPECT_TRUE(Volume::Files(volume_.failed()).empty());
  EXPECT_EQ(up->Status()["degraded"], nlohmann::json::array());
  EXPECT_EQ(up->Metric("storage_unreachable"), "0");
}

// While a stopping service waits for its uploads in flight (the shutdown grace), /readyz says
// 503 so that no new work is routed to it, POSTs are refused with 503, and the upload in flight
// still finishes, a second SIGTERM notwithstanding (answered in the log).
TEST_F(FaultE2E, AStoppingServiceIsNotReadyAndRefusesPostsWhileItsUploadsFinish) {
  const auto open_at_exit = gate_.OpenAtExit();  // on any early return too
  auto up = Start({{"APP_SHUTDOWN_GRACE_S", "20"}});
  ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"grace"})").status, 200);
  proxy_->SetPlan([this](const ProxyRequest& r) {  // the upload's PUT waits for the checks
    if (r.method == "PUT" && r.target.find("/grace/") != std::string::npos) gate_.Wait(30s);
    return FaultAction::Forward();
  });
  const auto files = DropFiles("grace", 1, 4096);
  ASSERT_TRUE(WaitFor([&] { return up->Status()["in_progress"] == 1; }, 30s));
  up->process().Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return up->Call("GET", "/readyz").status == 503; }, 10s));
  EXPECT_EQ(up->Call("GET", "/readyz").body["status"], "stopping");
  const auto refused = up->Call("POST", "/v1/watch/stop");
  EXPECT_EQ(refused.status, 503);
  EXPECT_TRUE(refused.body.contains("error")) << refused.body.dump();
  EXPECT_EQ(up->Call("GET", "/healthz").status, 200);
  // A second SIGTERM is answered, and does not cut the upload's grace short.
  up->process().Signal(SIGTERM);
  EXPECT_TRUE(WaitFor(
      [&] {
        return up->process().ReadLog().find("signal received while stopping") != std::string::npos;
      },
      10s))
      << up->process().ReadLog();
  EXPECT_EQ(up->Call("GET", "/readyz").body["status"], "stopping");
  gate_.Open();
  EXPECT_EQ(up->process().Wait(30s), 0) << up->process().ReadLog();
  ExpectAllArrive("grace", files, 10s);
}

// Storage refusing our credentials mid-run (a SAS past its expiry, a role assignment removed:
// Azure answers 403): the files wait on the volume, never dead-lettered, the status and a gauge
// say why, and once storage takes the credentials again the files go.
TEST_F(FaultE2E, CredentialsRefusedMidRunAreReportedAndFilesWaitForThem) {
  auto up = Start({{"APP_AZURE_RETRY_MAX_S", "2"}});
  ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"refused"})").status, 200);
  ExpectAllArrive("refused", DropFiles("refused", 3, 4096), 60s);
  EXPECT_EQ(up->Status()["degraded"], nlohmann::json::array());
  proxy_->SetPlan(
      [](const ProxyRequest&) { return FaultAction::Status(403, "AuthenticationFailed"); });
  const auto late = DropFiles("refused", 3, 4096, "late", 60);
  nlohmann::json status;
  ASSERT_TRUE(WaitFor(
      [&] {
        status = up->Status();
        size_t refusals = 0;  // each late file refused twice, or so
        for (const auto& e : status["recent_errors"]) refusals += e["count"].get<size_t>();
        return refusals >= 6;
      },
      60s))
      << status.dump();
  EXPECT_TRUE(DegradedBecomes(*up, {"storage_refuses_credentials"}, &status)) << status.dump();
  EXPECT_EQ(up->Metric("storage_refuses_credentials"), "1");
  EXPECT_EQ(status["counters"]["failed"], 0) << "refused credentials must not dead-letter files";
  EXPECT_FALSE(Arrived("refused", "late0.bin", late.at("late0.bin")));
  proxy_->SetPlan(nullptr);
  ExpectAllArrive("refused", late, 60s);
  ExpectNothingLeft(*up);
  EXPECT_TRUE(Volume::Files(volume_.failed()).empty());
  EXPECT_EQ(up->Status()["degraded"], nlohmann::json::array());
  EXPECT_EQ(up->Metric("storage_refuses_credentials"), "0");
}

// Credentials that may read but not write (a role of Storage Blob Data Reader instead of
// Contributor): each block upload's list of uncommitted blocks is answered (404) and its Put
// Block refused (403). The answers prove storage up, not the credentials good: the status says
// they are refused.
TEST_F(FaultE2E, CredentialsThatMayReadButNotWriteShowAsRefused) {
  auto up = Start({{"APP_AZURE_RETRY_MAX_S", "2"},
                   {"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"},
                   {"APP_AZURE_BLOCK_SIZE", "262144"}});
  ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"reader"})").status, 200);
  ExpectAllArrive("reader", DropFiles("reader", 1, 4096), 60s);
  proxy_->SetPlan([](const ProxyRequest& r) {
    return r.method == "PUT" ? FaultAction::Status(403, "AuthorizationPermissionMismatch")
                             : FaultAction::Forward();
  });
  const auto late = DropFiles("reader", 2, 2 << 20, "late", 60);
  nlohmann::json status;
  EXPECT_TRUE(DegradedBecomes(*up, {"storage_refuses_credentials"}, &status)) << status.dump();
  EXPECT_EQ(status["counters"]["failed"], 0);
  proxy_->SetPlan(nullptr);
  ExpectAllArrive("reader", late, 60s);
  EXPECT_TRUE(DegradedBecomes(*up, {}, &status)) << status.dump();
}

// The container deleted under the service, and not to be made again for a while (Azure answers
// 409 ContainerBeingDeleted after a delete): storage answers every request, so neither storage
// state shows, but the status says container_missing while uploads wait. Once the container can
// be made again, the files go up.
TEST_F(FaultE2E, AContainerThatCannotBeMadeAgainShowsInTheStatus) {
  auto up = Start({{"APP_AZURE_RETRY_MAX_S", "2"}});
  ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"gone"})").status, 200);
  proxy_->SetPlan([](const ProxyRequest& r) {
    if (r.method != "PUT") return FaultAction::Forward();
    return r.target.find("restype=container") != std::string::npos
               ? FaultAction::Status(409, "ContainerBeingDeleted")
               : FaultAction::Status(404, "ContainerNotFound");
  });
  const auto files = DropFiles("gone", 2, 4096);
  nlohmann::json status;
  EXPECT_TRUE(DegradedBecomes(*up, {"container_missing"}, &status)) << status.dump();
  EXPECT_EQ(up->Metric("storage_container_missing"), "1");
  EXPECT_EQ(status["counters"]["failed"], 0);
  proxy_->SetPlan(nullptr);
  ExpectAllArrive("gone", files, 60s);
  ExpectNothingLeft(*up);
}

TEST_F(FaultE2E, KillNineDuringBlockUploadResendsOnlyMissingBlocks) {
  const std::map<std::string, std::string> env = {{"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"},
                                                  {"APP_AZURE_BLOCK_SIZE", "262144"},
                                                  {"APP_AZURE_MAX_CONCURRENCY", "2"}};
  const std::string data = PatternBytes(8 << 20, 99);  // 32 blocks
  const size_t kBlocks = 32;
  proxy_->SetPlan([](const ProxyRequest& r) {
    return r.target.find("comp=block&") != std::string::npos ? FaultAction::Delay(150)
                                                             : FaultAction::Forward();
  });
  {
    auto up = Start(env);
    ASSERT_EQ(up->Call("POST", "/v1/watch/start", R"({"session_name":"resume"})").status, 200);
    WriteFile(volume_.incoming() + "/resume/large.bin", data);
    ASSERT_TRUE(WaitFor([&] { return proxy_->Count("comp=block&", "PUT") >= 10; }, 60s));
    up->process().Signal(SIGKILL);
    ASSERT_EQ(up->process().Wait(10s), 128 + SIGKILL);
  }
  // What the killed process had in flight through the proxy reaches Azurite (or is dropped)
  // before the staged blocks are counted.
  ASSERT_TRUE(proxy_->WaitIdle(30s)) << proxy_->active() << " proxied requests still running";
  std::vector<azure::BlockInfo> staged;  // of the blob under whichever date has them
  for (const auto& name : BlobNames("resume", "large.bin")) {
    auto blocks = blobs_->GetUncommittedBlocks(name);  // none (not an error) if no such blob
    ASSERT_TRUE(blocks.ok()) << name << ": " << blocks.status().ToString();
    if (!blocks->empty()) {
      staged = std::move(*blocks);
      break;
    }
  }
  const size_t already = staged.size();
  ASSERT_GE(already, 5u);
  ASSERT_LT(already, kBlocks);
  proxy_->ResetCounts();
  proxy_->SetPlan(nullptr);
  auto again = Start(env);
  ExpectAllArrive("resume", {{"large.bin", data}}, 120s);
  EXPECT_EQ(proxy_->Count("comp=block&", "PUT"), kBlocks - already)
      << "only the missing blocks are sent after the restart";
  EXPECT_EQ(proxy_->Count("comp=blocklist", "PUT"), 1u);
  ExpectNothingLeft(*again);
}

// A number below `n`, drawn from `rng`.
uint32_t Draw(std::mt19937& rng, uint32_t n) {
  return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng);
}

// Everything at once, as a bad day brings it: two replicas share the volume and reach storage
// through a proxy that throttles, fails, drops, delays and corrupts a random share of requests,
// while files keep arriving (some renamed into place, as careful producers do) and events come,
// each kind once in every five, in a random order: a replica chosen at random is killed (SIGKILL)
// and restarted, stopped gracefully (SIGTERM) and restarted, or frozen (SIGSTOP) past its lease
// timeout and resumed; storage goes away for a few seconds; or the watch is stopped and started
// again. At the end every file is in its blob byte for byte, no other blob is there, and nothing
// is left on the volume, dead-lettered or in staging. Bounded: 8 events and 16 batches of 10
// files, then up to 2 minutes to finish. NBU_CHAOS_SEED picks another run of files, pauses and
// events (the one used is printed; the proxy's faults fall where the requests' timing puts them),
// and NBU_CHAOS_EVENTS a longer run (at most 200 events) for a soak by hand.
TEST_F(FaultE2E, KillsStallsAndStorageFaultsAcrossTwoReplicasLoseNothing) {
  const auto setting = [](const char* name, uint32_t fallback, uint32_t max) {
    const char* text = std::getenv(name);
    return text == nullptr ? fallback
                           : std::min(max, static_cast<uint32_t>(std::strtoul(text, nullptr, 10)));
  };
  const uint32_t seed = setting("NBU_CHAOS_SEED", 1, std::numeric_limits<uint32_t>::max());
  const uint32_t event_count = setting("NBU_CHAOS_EVENTS", 8, 200);
  SCOPED_TRACE("NBU_CHAOS_SEED=" + std::to_string(seed) +
               " NBU_CHAOS_EVENTS=" + std::to_string(event_count));
  // The proxy's faults draw from their own generator, so that the run's own choices (the files,
  // the pauses, the events) are the same for a seed however many requests were made meanwhile.
  struct Chance {  // shared with the proxy's handlers, which may outlive this test's body
    std::mutex mu;
    std::mt19937 rng;
    std::atomic<bool> faults_on{true};
    // Storage out of reach: every connection closed unanswered. (Not Azurite killed: it keeps
    // what it took in memory for a while, and a kill loses writes it had acknowledged, which
    // storage never does.)
    std::atomic<bool> storage_down{false};
    uint32_t Below(uint32_t n) {
      std::lock_guard lock(mu);
      return Draw(rng, n);
    }
  };
  auto chance = std::make_shared<Chance>();
  chance->rng.seed(seed);
  std::mt19937 rng(seed);
  const auto below = [&rng](uint32_t n) { return Draw(rng, n); };
  proxy_->SetPlan([chance](const ProxyRequest& r) {
    if (chance->storage_down) return FaultAction::DropBefore();
    if (!chance->faults_on || r.target.find("restype=container") != std::string::npos) {
      return FaultAction::Forward();
    }
    switch (chance->Below(100)) {
      case 0:
      case 1:
      case 2:
      case 3: return FaultAction::Status(503, "ServerBusy", "0");
      case 4:
      case 5: return FaultAction::Status(500, "InternalError");
      case 6:
      case 7:
      case 8: return FaultAction::DropBefore();
      case 9:
      case 10: return FaultAction::DropAfter();
      case 11:
      case 12: return FaultAction::Delay(300);
      case 13: return r.method == "PUT" ? FaultAction::FlipBodyBit() : FaultAction::Forward();
      default: return FaultAction::Forward();
    }
  });
  std::map<std::string, std::string> env = {
      {"APP_AZURE_CONNECTION_STRING", ConnectionStringVia(proxy_->port())},
      {"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"},
      {"APP_AZURE_BLOCK_SIZE", "262144"},
      {"APP_LEASE_TIMEOUT_S", "2"},
      {"APP_MIN_FILE_AGE_S", "0.2"},
      // A kill or a freeze may end a run of the same file several times: not the file's fault.
      {"APP_MAX_FILE_ATTEMPTS", "30"}};
  const std::array<std::string, 2> names = {"c1", "c2"};
  std::array<std::unique_ptr<UploaderProcess>, 2> replicas;
  const auto start = [&](size_t i) {
    replicas[i] = std::make_unique<UploaderProcess>(*azurite_, volume_, container_, names[i], env);
    ASSERT_TRUE(replicas[i]->WaitReady()) << replicas[i]->process().ReadLog();
  };
  ASSERT_NO_FATAL_FAILURE(start(0));
  ASSERT_NO_FATAL_FAILURE(start(1));
  ASSERT_EQ(replicas[0]->Call("POST", "/v1/watch/start", R"({"session_name":"chaos"})").status,
            200);
  std::map<std::string, std::string> files;
  const std::array<const char*, 6> odd = {"a b", "ü-ñ", "100%", "x#y", "q?r", "semi;colon"};
  uint32_t next = 0;
  const auto drop_batch = [&] {
    for (int k = 0; k < 10; ++k, ++next) {
      const uint32_t r = below(20);
      // Mostly small files (one Put Blob), some empty, one in ten sent in blocks.
      const size_t size = r == 0 ? 0 : r < 18 ? below(96 << 10) : (1 << 20) + below(2 << 20);
      const std::string rel = "d" + std::to_string(next % 4) + "/" + odd[next % odd.size()] + "-" +
                              std::to_string(next) + ".bin";
      files[rel] = PatternBytes(size, next + 5000);
      const std::string path = volume_.incoming() + "/chaos/" + rel;
      if (next % 3 == 0) {  // written whole under a name the service ignores, then renamed
        WriteFile(path + ".part", files[rel]);
        std::filesystem::rename(path + ".part", path);
      } else {
        WriteFile(path, files[rel]);
      }
    }
  };
  std::string events;
  // Every kind of event once in each run of five, in a random order: eight events bring each.
  std::array<int, 5> kinds = {0, 1, 2, 3, 4};
  for (uint32_t event = 0; event < event_count; ++event) {
    drop_batch();
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + below(1200)));
    drop_batch();
    const size_t i = below(2);
    ChildProcess& p = replicas[i]->process();
    if (event % kinds.size() == 0) std::shuffle(kinds.begin(), kinds.end(), rng);
    switch (kinds[event % kinds.size()]) {
      case 0:
        events += names[i] + ":kill ";
        p.Signal(SIGKILL);
        ASSERT_EQ(p.Wait(10s), 128 + SIGKILL) << events;
        ASSERT_NO_FATAL_FAILURE(start(i)) << events;
        break;
      case 1:
        events += names[i] + ":term ";
        p.Signal(SIGTERM);
        ASSERT_EQ(p.Wait(30s), 0) << events << p.ReadLog();
        ASSERT_NO_FATAL_FAILURE(start(i)) << events;
        break;
      case 2:
        events += names[i] + ":freeze ";
        p.Signal(SIGSTOP);
        std::this_thread::sleep_for(std::chrono::milliseconds(2500 + below(2000)));
        p.Signal(SIGCONT);
        break;
      case 3:
        events += "storage-down ";
        chance->storage_down = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(500 + below(2500)));
        chance->storage_down = false;
        break;
      default:  // the watch stopped and started again, through either replica
        events += names[i] + ":watch-stop-start ";
        ASSERT_EQ(replicas[i]->Call("POST", "/v1/watch/stop").status, 200) << events;
        ASSERT_EQ(
            replicas[1 - i]->Call("POST", "/v1/watch/start", R"({"session_name":"chaos"})").status,
            200)
            << events;
        break;
    }
  }
  SCOPED_TRACE("events: " + events);
  std::printf("seed %u, events: %s\n", seed, events.c_str());
  chance->faults_on = false;
  ExpectAllArrive("chaos", files, 120s + 2s * event_count);
  // A replica resumed from a freeze may still be finishing a claim taken over meanwhile; its
  // staging copy goes before the file leaves in_progress.
  for (const auto& r : replicas) {
    EXPECT_TRUE(WaitFor([&] { return r->Status()["in_progress"] == 0; }, 30s)) << r->staging();
    EXPECT_EQ(r->Status()["counters"]["failed"], 0);
  }
  ExpectNothingLeft({replicas[0].get(), replicas[1].get()});
  ExpectNoDeadLetters();
  // One blob per file and nothing else: none for a .part name, none under two dates.
  EXPECT_EQ(ListedFiles(*blobs_), FilesOf("chaos", files));
  if (HasFailure()) {  // the warnings and errors of each replica (its log's last 40 of them)
    for (const auto& r : replicas) {
      std::istringstream log(r->process().ReadLog());
      std::deque<std::string> kept;
      for (std::string line; std::getline(log, line);) {
        if (line.find(R"("level":"warn")") == std::string::npos &&
            line.find(R"("level":"error")") == std::string::npos) {
          continue;
        }
        kept.push_back(line.substr(0, 600));
        if (kept.size() > 40) kept.pop_front();
      }
      std::string text;
      for (const auto& line : kept) text += line + "\n";
      ADD_FAILURE() << r->process().log_path() << ":\n" << text;
    }
  }
  EXPECT_GT(proxy_->faults(), 20u) << "too few faults: the test proved little";
}

}  // namespace
}  // namespace nbu::test
