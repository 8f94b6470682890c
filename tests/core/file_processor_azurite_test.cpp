// FileProcessor against a real Azurite: block uploads (the copy thread hands each block to the
// senders as it is copied; that they overlap is a matter of timing, shown by the benchmark, not
// asserted here), recovered claims whose blob already exists, and a source that keeps changing
// while it is copied. Labelled concurrency: the copy thread and the block senders also run
// under ThreadSanitizer.
#include "core/file_processor.h"

#include "support/azurite.h"
#include "support/azurite_client.h"
#include "support/captured_log.h"
#include "support/fault_proxy.h"
#include "support/fs_seams.h"
#include "support/gate.h"
#include "support/process.h"
#include "support/tmpfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <tuple>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;
using nbu::test::PatternBytes;
using nbu::test::TempDir;
using nbu::test::WaitFor;
using nbu::test::WriteFile;

class FileProcessorAzuriteTest : public ::testing::Test {
 protected:
  FileProcessorAzuriteTest() {
    config_.incoming_dir = dir_.path() + "/in";
    config_.processing_root = dir_.path() + "/proc";
    config_.failed_root = dir_.path() + "/failed";
    config_.staging_root = dir_.path() + "/staging";
    config_.azure_container = nbu::test::FreshContainer("fileproc");
    config_.min_file_age_s = 0.05;
    config_.azure_put_blob_max_bytes = 256 << 10;
    config_.azure_block_size = 128 << 10;
    config_.azure_max_concurrency = 3;
    config_.azure_retry_base_s = 0.05;
    config_.replica_id = "fp-test";
    blob_ = nbu::test::MakeBlobClient(azurite_, config_.azure_container);
    EXPECT_TRUE(blob_->CreateContainerIfMissing().ok());
    processor_ = ProcessorVia(*blob_, false);
    crc_processor_ = ProcessorVia(*blob_, true);
  }

  // A claim of this replica holding `data`, as recovery would find it after `runs` runs of it
  // ended with their process.
  WorkItem PlaceClaim(const std::string& base, const std::string& data, bool check_existing,
                      int runs = 1) {
    ClaimPath c{UtcDate(std::chrono::system_clock::now()),
                "s",
                "",
                base,
                config_.replica_id,
                NewNonce(),
                ClaimState::kClaimed,
                runs};
    WriteFile(fs::Join(config_.processing_root, c.Path()), data);
    WorkItem item;
    item.kind = WorkItem::Kind::kClaim;
    item.claim = c;
    item.check_existing = check_existing;
    return item;
  }
  // A processor whose reads of a claim with `held` in its path wait for `hold` (20 s at most),
  // after setting `reading`: a run held inside the gate.
  std::unique_ptr<FileProcessor> ProcessorHolding(
      const std::string& held, nbu::test::Gate& hold, std::atomic<bool>& reading,
      std::chrono::milliseconds lone_wait_limit = std::chrono::minutes(1)) {
    FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
    deps.lone_wait_limit = lone_wait_limit;
    deps.claim_pread = [&hold, &reading, held](const std::string& path, int fd, char* buf,
                                               size_t len, off_t at) {
      if (path.find(held) != std::string::npos) {
        reading = true;
        hold.Wait(20s);
      }
      return ::pread(fd, buf, len, at);
    };
    return std::make_unique<FileProcessor>(std::move(deps));
  }
  // A producer's file incoming/s/`rel` holding `data`, queued as the scanner queues it.
  WorkItem FreshItem(const std::string& rel, const std::string& data) {
    const std::string src = fs::Join(config_.incoming_dir, "s/" + rel);
    WriteFile(src, data);
    WorkItem item;
    item.session = "s";
    item.rel = rel;
    auto observed = fs::Stat(src);
    EXPECT_TRUE(observed.ok());
    if (observed.ok()) item.observed = *observed;
    return item;
  }
  // The item's blob holds exactly `data`, with the whole file's MD5 as its Content-MD5.
  void ExpectBlobHolds(const WorkItem& item, const std::string& data) {
    auto got = blob_->GetBlob(item.claim.BlobName());
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, data);
    auto props = blob_->GetProperties(item.claim.BlobName());
    ASSERT_TRUE(props.ok() && props->has_value());
    EXPECT_EQ((*props)->content_md5, Md5::Of(data));
  }
  double Count(telemetry::Counter& c) const { return c.Value(); }
  // A client of the container through `proxy`, with two quick tries per request.
  std::unique_ptr<azure::BlobClient> ClientVia(const nbu::test::FaultProxy& proxy) const {
    azure::RetryOptions retry;
    retry.max_attempts = 2;
    retry.base_delay = std::chrono::milliseconds(10);
    return nbu::test::MakeBlobClient(nbu::test::BlobEndpointVia(proxy.port()),
                                     config_.azure_container, retry);
  }
  // A processor sending through `blob`, its Put Blobs checked by CRC-64 or by MD5.
  std::unique_ptr<FileProcessor> ProcessorVia(azure::BlobClient& blob, bool crc64) {
    return std::make_unique<FileProcessor>(FileProcessor::Deps{config_,
                                                               RealClock::Instance(),
                                                               blob,
                                                               inst_,
                                                               tracer_,
                                                               inflight_,
                                                               {},
                                                               crc64 ? &crc64_ : nullptr});
  }
  // Another writer's uncommitted block of `size` bytes under `item`'s blob name; its id.
  std::string StageOtherWritersBlock(const WorkItem& item, size_t size, uint32_t seed) {
    const std::string older = PatternBytes(size, seed);
    std::string id = BlockId(Md5::Of(older), older.size(), 0);
    EXPECT_TRUE(
        blob_->PutBlock(item.claim.BlobName(), id, azure::Body::FromMemory(older), Md5::Of(older))
            .ok());
    return id;
  }
  // That writer's commit (If-None-Match: *) then finds the blob this claim committed.
  void ExpectOtherWritersCommitFindsTheBlob(const WorkItem& item, const std::string& id) {
    azure::BlobProperties if_absent;
    if_absent.if_absent = true;
    EXPECT_EQ(blob_->PutBlockList(item.claim.BlobName(), {id}, if_absent).kind(),
              ErrorKind::kConflict)
        << "the older writer's commit finds this blob";
  }
  // A claim of `base` interrupted as often as the limit is dead-lettered unsent, then revived
  // and uploaded.
  void DeadLetterInterruptedThenRevive(const std::string& base);
  void OlderVersionAfterNewer(const std::string& base, size_t size);
  void FailFilesWhileOthersUpload(const std::vector<std::string>& poisoned,
                                  const std::function<bool()>& done, int status = 500,
                                  const std::string& code = "InternalError");
  // Processes `item` until `times` of its attempts have waited for `reason` (staging trouble),
  // then stops it: none of them may count against the file.
  void ProcessWhileStagingFails(const WorkItem& item, const std::string& reason, int times) {
    std::stop_source stop;
    std::thread stopper([&] {
      WaitFor([&] { return inst_.attempt_failures.Value({{"reason", reason}}) >= times; }, 30s);
      stop.request_stop();
    });
    processor_->Process(item, stop.get_token());
    stopper.join();
    EXPECT_GE(inst_.attempt_failures.Value({{"reason", reason}}), times);
    EXPECT_EQ(Count(inst_.files_failed), 0);
    EXPECT_TRUE(Entries(config_.failed_root).empty());
  }
  // Sets the claim file's modification time (seconds since the epoch).
  void SetMtime(const WorkItem& item, time_t seconds) {
    const timespec times[2] = {{seconds, 0}, {seconds, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, fs::Join(config_.processing_root, item.claim.Path()).c_str(),
                          times, 0),
              0);
  }
  // Two versions of `base` claimed, the newer one uploaded: the older's claim, which storage
  // will show superseded (no run begun yet, as a sweep finds a claim whose run was handed back).
  WorkItem PlaceSuperseded(const std::string& base, uint32_t seed) {
    WorkItem newer = PlaceClaim(base, PatternBytes(1000, seed), false, 0);
    WorkItem older = PlaceClaim(base, PatternBytes(1000, seed + 1), false, 0);
    SetMtime(older, 1'700'000'000);
    processor_->Process(newer, {});
    return older;
  }
  // The failed root holds one dead letter and its reason, which says `why`.
  void ExpectOneDeadLetter(const std::string& why) {
    const auto failed = Entries(config_.failed_root);
    ASSERT_EQ(failed.size(), 2u) << testing::PrintToString(failed);
    const auto reason =
        nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[1])));
    EXPECT_NE(reason["error"].get<std::string>().find(why), std::string::npos) << reason.dump();
  }
  // Entries below `root`, relative to it.
  static std::vector<std::string> Entries(const std::string& root) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::recursive_directory_iterator(root, ec)) {
      if (e.is_regular_file()) out.push_back(std::filesystem::relative(e.path(), root).string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  nbu::test::Azurite& azurite_ = nbu::test::SharedAzurite();  // one for the suite's 54 tests
  TempDir dir_;
  Config config_;
  std::unique_ptr<azure::BlobClient> blob_;
  telemetry::MetricsRegistry metrics_;
  Instruments inst_{metrics_};
  // Called on the copying thread as each span ends (the stage span ends once every block has been
  // copied, before the staging copy is deleted).
  std::function<void(const telemetry::SpanData&)> on_span_;
  telemetry::Tracer tracer_{RealClock::Instance(), [this](telemetry::SpanData&& d) {
                              if (on_span_) on_span_(d);
                            }};
  InFlight inflight_;
  std::unique_ptr<FileProcessor> processor_;
  // The same, with each Put Blob checked by CRC-64 (what the service picks when storage checks
  // it). Both read config_ when they run, so a test may change it first.
  const std::atomic<bool> crc64_{true};
  std::unique_ptr<FileProcessor> crc_processor_;
};

TEST_F(FileProcessorAzuriteTest, BlocksLandByteExactWithTheWholeFileMd5) {
  const std::string data = PatternBytes((5 << 20) + 12345, 7);  // 41 blocks, the last short
  WorkItem item = PlaceClaim("big.bin", data, false);
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  EXPECT_EQ(Count(inst_.blocks_uploaded), 41);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  // Completed: marker on the volume (with this run recorded: it was picked up again), staging
  // copy gone.
  const ClaimPath done = item.claim.WithRuns(2).WithState(ClaimState::kDone);
  const auto marker = fs::Stat(fs::Join(config_.processing_root, done.Path()));
  ASSERT_TRUE(marker.ok());
  // Found unchanged after the completion rename: its ctime noted, for the sweeper to tell a
  // later change by.
  EXPECT_EQ(inflight_.SettledMarker(done.Path()),
            (InFlight::SettledNote{marker->ctime_ns, false, marker->mtime_ns}));
  auto staged = fs::ListDir(fs::Join(config_.staging_root, fs::Dirname(StagingPath(item.claim))));
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_TRUE(staged->empty()) << "the staging copy is deleted";
}

// Blocks are staged in a ring of StagingSlots() block slots: when the last block has been copied,
// the staging file spans exactly that many blocks, not the file.
TEST_F(FileProcessorAzuriteTest, BlocksAreStagedInARingOfSlots) {
  const std::string data = PatternBytes((5 << 20) + 12345, 3);  // 41 blocks of 128 KiB
  WorkItem item = PlaceClaim("ring.bin", data, false);
  const std::string staging = fs::Join(config_.staging_root, StagingPath(item.claim));
  int64_t staged_size = -1;
  on_span_ = [&](const telemetry::SpanData& d) {
    struct stat st {};
    if (d.name == "stage" && ::stat(staging.c_str(), &st) == 0) staged_size = st.st_size;
  };
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  const uint64_t slots = StagingSlots(41, config_.azure_max_concurrency);
  ASSERT_LT(slots, 41u);
  EXPECT_EQ(staged_size, static_cast<int64_t>(slots * config_.azure_block_size));
}

// A file sent in one Put Blob that fits the copy buffer is staged in memory: it lands
// byte-exact with its MD5, and nothing is ever created on the staging disk.
TEST_F(FileProcessorAzuriteTest, SmallFileIsStagedInMemory) {
  const std::string data = PatternBytes(200'001, 5);
  WorkItem item = PlaceClaim("small.bin", data, false);
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  EXPECT_EQ(Count(inst_.blocks_uploaded), 0);
  EXPECT_FALSE(fs::Stat(config_.staging_root).ok()) << "no staging file, not even its directory";
}

// Checked by CRC-64 (the service's choice when storage checks it): a file sent in one Put Blob,
// in memory or staged on disk, gets no MD5 here, and its blob still holds the file's MD5, as
// storage computed it. A recovered claim of the same bytes is then not sent again.
TEST_F(FileProcessorAzuriteTest, PutBlobCheckedByCrc64KeepsTheWholeFileMd5) {
  config_.azure_put_blob_max_bytes = 3 << 20;
  FileProcessor& processor = *crc_processor_;
  std::vector<std::string> checksums;
  on_span_ = [&](const telemetry::SpanData& d) {
    if (d.name != "upload") return;
    for (const auto& [key, value] : d.attributes) {
      if (key == "upload.checksum") checksums.push_back(std::get<std::string>(value));
    }
  };
  const std::string in_memory = PatternBytes(200'001, 11);
  const std::string on_disk = PatternBytes((2 << 20) + 5, 12);
  WorkItem a = PlaceClaim("crc-mem.bin", in_memory, false);
  SetMtime(a, 1'750'000'000);
  WorkItem b = PlaceClaim("crc-disk.bin", on_disk, false);
  processor.Process(a, {});
  processor.Process(b, {});
  ExpectBlobHolds(a, in_memory);
  ExpectBlobHolds(b, on_disk);
  EXPECT_EQ(Count(inst_.files_processed), 2);
  EXPECT_EQ(Count(inst_.blocks_uploaded), 0);
  EXPECT_EQ(checksums, (std::vector<std::string>{"crc64", "crc64"}));
  WorkItem again = PlaceClaim("crc-mem.bin", in_memory, true);  // the same file, claimed again
  SetMtime(again, 1'750'000'000);
  processor.Process(again, {});
  EXPECT_EQ(Count(inst_.files_skipped), 1);
}

TEST_F(FileProcessorAzuriteTest, RecoveredClaimSkipsABlobThatHoldsTheSameBytes) {
  const std::string data = PatternBytes((1 << 20) + 3, 8);
  WorkItem first = PlaceClaim("same.bin", data, false);
  SetMtime(first, 1'750'000'000);
  processor_->Process(first, {});
  ASSERT_EQ(Count(inst_.blocks_uploaded), 9);
  WorkItem again = PlaceClaim("same.bin", data, true);  // the same file, claimed again
  SetMtime(again, 1'750'000'000);
  processor_->Process(again, {});
  EXPECT_EQ(Count(inst_.files_skipped), 1);
  EXPECT_EQ(Count(inst_.blocks_uploaded), 9) << "no block is sent for bytes already committed";
}

// The same check for a file sent in one Put Blob (here held in memory).
TEST_F(FileProcessorAzuriteTest, RecoveredSmallClaimSkipsABlobThatHoldsTheSameBytes) {
  const std::string data = PatternBytes(200'001, 6);
  const WorkItem first = PlaceClaim("small-same.bin", data, false);
  SetMtime(first, 1'750'000'000);
  processor_->Process(first, {});
  WorkItem again = PlaceClaim("small-same.bin", data, true);
  SetMtime(again, 1'750'000'000);
  processor_->Process(again, {});
  EXPECT_EQ(Count(inst_.files_skipped), 1);
  EXPECT_EQ(Count(inst_.files_processed), 2);
  ExpectBlobHolds(again, data);
}

// A later version with the bytes of an earlier one already committed (v1 and v3 alike, v2
// between) is not skipped: the blob would keep v1's source mtime, and v2, committed next, would
// count as newer and go over the newest version's bytes. Sent again, it carries its own mtime,
// and v2 is superseded.
TEST_F(FileProcessorAzuriteTest, RecoveredClaimSendsTheSameBytesAgainUnderALaterMtime) {
  const std::string a = PatternBytes(1000, 61);
  const std::string b = PatternBytes(1000, 62);
  const WorkItem v1 = PlaceClaim("abc.bin", a, false);
  SetMtime(v1, 1'700'000'000);
  processor_->Process(v1, {});
  const WorkItem v2 = PlaceClaim("abc.bin", b, true, 0);
  SetMtime(v2, 1'700'000'100);
  const WorkItem v3 = PlaceClaim("abc.bin", a, true, 0);
  SetMtime(v3, 1'700'000'200);
  processor_->Process(v3, {});
  processor_->Process(v2, {});
  EXPECT_EQ(Count(inst_.files_skipped), 0);
  EXPECT_EQ(Count(inst_.files_superseded), 1) << "v2 went over v3";
  ExpectBlobHolds(v3, a);
}

TEST_F(FileProcessorAzuriteTest, RecoveredClaimWithOtherBytesOfTheSameSizeIsSent) {
  const std::string old_data = PatternBytes((1 << 20) + 3, 8);
  const std::string new_data = PatternBytes((1 << 20) + 3, 9);
  processor_->Process(PlaceClaim("v.bin", old_data, false), {});
  WorkItem again = PlaceClaim("v.bin", new_data, true);
  processor_->Process(again, {});
  EXPECT_EQ(Count(inst_.files_skipped), 0);
  auto got = blob_->GetBlob(again.claim.BlobName());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, new_data);
}

// A claim whose runs all ended with the service (a file that crashes it, say) is not run again
// once they reach the attempt limit: it is dead-lettered, bytes kept, with the reason.
TEST_F(FileProcessorAzuriteTest, ClaimInterruptedAsOftenAsTheLimitIsDeadLetteredUnsent) {
  DeadLetterInterruptedThenRevive("crashy.bin");
}

// The same with a name of 254 bytes: its claim, dead letter and reason each sit in a directory
// named after it, and the revival finds it there.
TEST_F(FileProcessorAzuriteTest, LongNamedClaimIsDeadLetteredAndRevivedInItsOwnDirectory) {
  DeadLetterInterruptedThenRevive(std::string(250, 'c') + ".bin");
}

// The lines a file's block uploads log on their own threads (here: the container found missing
// and recreated by the first Put Block) carry the file's trace id, as its other lines do.
TEST_F(FileProcessorAzuriteTest, BlockSendersLogWithTheFilesTraceId) {
  auto fresh =
      nbu::test::MakeBlobClient(azurite_, nbu::test::FreshContainer("gone"));  // never created
  auto processor = ProcessorVia(*fresh, false);
  const WorkItem item = PlaceClaim("big.bin", PatternBytes(1 << 20, 43), false);
  test::CapturedLog logged;
  processor->Process(item, {});
  logged.Stop();
  std::string file_trace, sender_trace;
  for (const auto& line : logged.Json()) {
    const std::string message = line.value("message", "");
    if (message == "uploaded") file_trace = line.value("trace_id", "");
    if (message == "container missing; recreating it") {
      sender_trace = line.value("trace_id", "?");
      EXPECT_TRUE(line.value("ok", false)) << line.dump();
      EXPECT_FALSE(line.contains("error")) << line.dump();  // recreated: no error to name
    }
  }
  ASSERT_FALSE(file_trace.empty()) << "not uploaded";
  EXPECT_EQ(sender_trace, file_trace);
}

// Two replicas retrying the dead letters at once (POST /v1/failed/retry to each): a dead letter
// the other one moved between this one's listing and its rename is the other's to run, not an
// error of this retry.
// A reason whose bytes are gone (revived between their move and the reason's write, or a crash
// between a revival's move and its unlink) is removed by the next retry: nothing else would.
TEST_F(FileProcessorAzuriteTest, AReasonWithoutItsBytesIsRemovedByARetry) {
  config_.max_file_attempts = 1;  // interrupted once: dead-lettered unsent
  for (const char* base : {"kept.bin", "orphan.bin"}) {
    processor_->Process(PlaceClaim(base, PatternBytes(1'000, 40), true, 1), {});
  }
  auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 4u) << testing::PrintToString(failed);
  for (const std::string& e : failed) {
    if (e.find("orphan.bin") != std::string::npos && !e.ends_with(".json")) {
      ASSERT_EQ(::unlink(fs::Join(config_.failed_root, e).c_str()), 0);
    }
  }
  std::vector<std::string> errors;
  const auto revived = processor_->ReviveDeadLetters(&errors);
  EXPECT_TRUE(errors.empty()) << testing::PrintToString(errors);
  ASSERT_EQ(revived.size(), 1u);
  EXPECT_EQ(revived[0].base, "kept.bin");
  EXPECT_EQ(Entries(config_.failed_root), std::vector<std::string>{});
}

TEST_F(FileProcessorAzuriteTest, ADeadLetterRevivedElsewhereMeanwhileIsNoError) {
  config_.max_file_attempts = 1;  // interrupted once: dead-lettered unsent
  for (const char* base : {"a.bin", "b.bin"}) {
    processor_->Process(PlaceClaim(base, PatternBytes(1'000, 40), true, 1), {});
  }
  ASSERT_EQ(Count(inst_.files_failed), 2);
  TempDir elsewhere;
  std::string taken;
  const nbu::test::ScopedPathPairCall seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        if (std::string_view(op) == "link") return ::link(from.c_str(), to.c_str());
        if (taken.empty() && from.starts_with(config_.failed_root)) {
          taken = fs::Basename(from);  // the other replica's rename lands first
          if (::rename(from.c_str(), (elsewhere / "taken").c_str()) != 0) return -1;
          errno = ENOENT;
          return -1;
        }
        return ::rename(from.c_str(), to.c_str());
      });
  std::vector<std::string> errors;
  const auto revived = processor_->ReviveDeadLetters(&errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(revived.size(), 1u);
  ASSERT_TRUE(taken.starts_with("a.bin~") || taken.starts_with("b.bin~")) << taken;
  EXPECT_EQ(revived[0].base, taken.starts_with("a.bin~") ? "b.bin" : "a.bin");
  // A rename that keeps answering "not found" while the data is still there (the target's
  // directory removed again and again) is this retry's failure: reported, the data left.
  fs::SetPathPairCallForTest([&](const char* op, const std::string& from, const std::string& to) {
    if (std::string_view(op) == "rename" && from.starts_with(config_.failed_root)) {
      errno = ENOENT;
      return -1;
    }
    return std::string_view(op) == "link" ? ::link(from.c_str(), to.c_str())
                                          : ::rename(from.c_str(), to.c_str());
  });
  processor_->Process(PlaceClaim("c.bin", PatternBytes(1'000, 41), true, 1), {});
  errors.clear();
  EXPECT_TRUE(processor_->ReviveDeadLetters(&errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("c.bin"), std::string::npos) << errors[0];
}

// A directory of the failed tree that cannot be listed, or an entry that cannot be stat'ed (a
// passing error, as on a flaky NFS server), is named in the retry's answer, its dead letters left
// where they are; the next retry takes them.
TEST_F(FileProcessorAzuriteTest, ADeadLetterThatCannotBeSeenIsNamedInTheRetrysErrors) {
  config_.max_file_attempts = 1;  // interrupted once: dead-lettered unsent
  const WorkItem item = PlaceClaim("a.bin", PatternBytes(1'000, 42), true, 1);
  processor_->Process(item, {});
  ASSERT_EQ(Count(inst_.files_failed), 1);
  const std::string dir = fs::Join(config_.failed_root, item.claim.date + "/s");
  const auto entries = fs::ListDir(dir);
  ASSERT_TRUE(entries.ok());
  std::string data;
  for (const auto& e : *entries) {
    if (!e.name.ends_with(".json")) data = fs::Join(dir, e.name);
  }
  ASSERT_FALSE(data.empty());
  for (const char* op : {"opendir", "stat"}) {
    const std::string at = std::string_view(op) == "opendir" ? dir : data;
    const nbu::test::ScopedPathCall seam([&](const char* o, const std::string& path) {
      return std::string_view(o) == op && path == at ? ESTALE : 0;
    });
    std::vector<std::string> errors;
    EXPECT_TRUE(processor_->ReviveDeadLetters(&errors).empty()) << op;
    ASSERT_EQ(errors.size(), 1u) << op;
    EXPECT_NE(errors[0].find(std::string(op) + " " + at + ": Stale file handle"), std::string::npos)
        << errors[0];
    EXPECT_EQ(::access(data.c_str(), F_OK), 0) << op;
  }
  std::vector<std::string> errors;
  EXPECT_EQ(processor_->ReviveDeadLetters(&errors).size(), 1u);
  EXPECT_TRUE(errors.empty()) << errors.front();
}

// Two versions of one file name, claimed one after the other, may commit in either order (the
// older one retried after throttling, or recovered after a crash). The blob must end with the
// newer version (the later source mtime), in one Put Blob and in blocks; the older version is
// not uploaded over it but dead-lettered, so its bytes stay on the volume.
void FileProcessorAzuriteTest::OlderVersionAfterNewer(const std::string& base, size_t size) {
  const std::string older = PatternBytes(size, 21);
  const std::string newer = PatternBytes(size + 5, 22);
  WorkItem v2 = PlaceClaim(base, newer, false);
  WorkItem v1 = PlaceClaim(base, older, false);
  SetMtime(v1, 1'700'000'000);  // written long before v2
  processor_->Process(v2, {});
  ASSERT_EQ(Count(inst_.files_processed), 1);
  processor_->Process(v1, {});
  ExpectBlobHolds(v2, newer);
  EXPECT_EQ(Count(inst_.files_superseded), 1);
  EXPECT_EQ(Count(inst_.files_failed), 1);
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[0])), older);
  const auto reason =
      nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[1])));
  EXPECT_NE(reason["error"].get<std::string>().find("superseded: the blob holds a newer"),
            std::string::npos)
      << reason.dump();
  // In the usual order the newer version replaces the older blob.
  WorkItem v3 = PlaceClaim(base, older, false);
  processor_->Process(v3, {});
  ExpectBlobHolds(v3, older);
  EXPECT_EQ(Count(inst_.files_processed), 2);
}

TEST_F(FileProcessorAzuriteTest, OlderVersionInOnePutBlobDoesNotReplaceANewerBlob) {
  OlderVersionAfterNewer("one-shot.bin", 100'000);
}

TEST_F(FileProcessorAzuriteTest, OlderVersionInBlocksDoesNotReplaceANewerBlob) {
  OlderVersionAfterNewer("blocks.bin", (1 << 20) + 7);
}

// A blob in the Archive tier cannot be written over (409 BlobArchived) until it is rehydrated or
// deleted, nor one kept by an immutability policy or a legal hold. No try can help, and each
// would send the whole body again: a newer version is dead-lettered at its first try, its bytes
// kept, with a reason that says what to do.
TEST_F(FileProcessorAzuriteTest, ANewVersionOfAnArchivedBlobIsDeadLetteredAtOnce) {
  config_.azure_access_tier = "Archive";
  WorkItem v1 = PlaceClaim("archived.bin", PatternBytes(1000, 31), false);
  SetMtime(v1, 1'700'000'000);
  processor_->Process(v1, {});
  ASSERT_EQ(Count(inst_.files_processed), 1);
  const std::string newer = PatternBytes(2000, 32);
  WorkItem v2 = PlaceClaim("archived.bin", newer, false, /*runs=*/0);
  processor_->Process(v2, {});
  EXPECT_EQ(Count(inst_.files_processed), 1);
  ASSERT_EQ(Count(inst_.files_failed), 1);
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[0])), newer);
  const auto reason =
      nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[1])));
  EXPECT_EQ(reason["attempts"], 1);
  EXPECT_NE(reason["error"].get<std::string>().find("): the blob is in the Archive tier"),
            std::string::npos)
      << reason.dump();
}

// Two versions of one name with the same source mtime (a copy that keeps times, a build with a
// fixed timestamp): which one is newer cannot be told, so the second to commit does not replace
// the first; it is dead-lettered, bytes kept. The same bytes with
// the same mtime (a copy made again) are done. In one Put Blob checked by MD5 and by CRC-64
// (no MD5 of ours: the claim is hashed to compare), and in blocks.
TEST_F(FileProcessorAzuriteTest, AVersionWithTheSameMtimeDoesNotReplaceTheBlob) {
  int round = 0;
  for (FileProcessor* processor : {processor_.get(), crc_processor_.get(), processor_.get()}) {
    const size_t size = round == 2 ? (1 << 20) + 11 : 4'000;
    const std::string base = "tie-" + std::to_string(round++);
    const std::string first = PatternBytes(size, 27);
    const std::string second = PatternBytes(size, 28);
    WorkItem a = PlaceClaim(base, first, false);
    WorkItem b = PlaceClaim(base, second, false);
    SetMtime(a, 1'700'000'000);
    SetMtime(b, 1'700'000'000);
    processor->Process(a, {});
    processor->Process(b, {});
    ExpectBlobHolds(a, first);
    WorkItem again = PlaceClaim(base, first, false);
    SetMtime(again, 1'700'000'000);
    processor->Process(again, {});
    ExpectBlobHolds(a, first);
  }
  EXPECT_EQ(Count(inst_.files_processed), 6);
  EXPECT_EQ(Count(inst_.files_superseded), 3);
  EXPECT_EQ(Count(inst_.files_failed), 3);
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 6u);
  for (const auto& name : failed) {
    const std::string text = nbu::test::ReadFile(fs::Join(config_.failed_root, name));
    if (!name.ends_with(".json")) {
      EXPECT_EQ(text.substr(0, 64), PatternBytes(64, 28)) << name;  // the second version
      continue;
    }
    EXPECT_NE(nlohmann::json::parse(text)["error"].get<std::string>().find("same source mtime"),
              std::string::npos)
        << text;
  }
}

// The completion rename failing after the commit (an NFS server's EIO or ESTALE) is retried on
// its own: the file is not copied and sent again, and the failures do not count against it, so
// a committed file is never dead-lettered for them.
TEST_F(FileProcessorAzuriteTest, ACompletionRenameFailingAfterTheCommitIsRetriedAlone) {
  config_.max_file_attempts = 2;
  nbu::test::FaultProxy proxy(azurite_.port());
  auto blob = ClientVia(proxy);
  int renames = 0;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}};
  deps.complete_rename = [&renames](const std::string& from, const std::string& to) {
    if (++renames <= 3) return Status(ErrorKind::kTransient, "rename: Input/output error");
    return fs::RenameEntry(from, to);
  };
  FileProcessor processor(std::move(deps));
  const std::string data = PatternBytes((1 << 20) + 7, 29);  // 9 blocks of 128 KiB
  WorkItem item = PlaceClaim("done-late.bin", data, false);
  processor.Process(item, {});
  EXPECT_EQ(renames, 4);
  ExpectBlobHolds(item, data);
  EXPECT_EQ(proxy.Count("comp=block&", "PUT"), 9u);
  EXPECT_EQ(proxy.Count("comp=blocklist", "PUT"), 1u);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  const auto left = Entries(config_.processing_root);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_TRUE(left[0].ends_with(".done")) << left[0];
}

// The completion rename answered "no such file": over NFS, a rename the server did whose answer
// was lost, so that the client's resend found the claim gone; or another replica took the claim
// over (our lease looked dead) and finished it. Either way the blob is committed: the file
// counts as done, is neither sent again nor failed, and what the volume holds is left as it is.
// Only the second is warned of.
TEST_F(FileProcessorAzuriteTest, ACompletionRenameAnsweredNoSuchFileIsDone) {
  for (const bool renamed : {true, false}) {
    const std::string data = PatternBytes(20'000, renamed ? 33 : 34);
    WorkItem item = PlaceClaim(renamed ? "resent-rename.bin" : "taken-over.bin", data, false);
    FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
    deps.complete_rename = [&](const std::string& from, const std::string& to) {
      // The server's work and its lost answer; or the other replica's rename to its own claim.
      const std::string other = from + ".other";
      EXPECT_TRUE(fs::RenameEntry(from, renamed ? to : other).ok());
      return Status(ErrorKind::kNotFound, "rename: No such file or directory");
    };
    FileProcessor processor(std::move(deps));
    test::CapturedLog vanished("claim vanished before completion");
    processor.Process(item, {});
    vanished.Stop();
    ExpectBlobHolds(item, data);
    const auto left = Entries(config_.processing_root);
    ASSERT_EQ(left.size(), 1u) << testing::PrintToString(left);
    EXPECT_TRUE(renamed ? left[0].ends_with(".done") : left[0].ends_with(".other")) << left[0];
    // Told only when the claim is truly gone: a resent rename that found its own work is not.
    EXPECT_EQ(vanished.Lines().size(), renamed ? 0u : 1u);
    EXPECT_EQ(inflight_.size(), 0u);
    ASSERT_EQ(::unlink(fs::Join(config_.processing_root, left[0]).c_str()), 0);
  }
  EXPECT_EQ(Count(inst_.files_processed), 2);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(Count(inst_.files_skipped), 0);
}

// A write that lands after the last check and before the completion rename goes into the
// marker, and the rename moves its ctime past the write, so a sweep could not tell it from an
// ordinary marker. The worker looks once more after the rename, the first one or one retried
// after it failed (the write then lands during the wait): the marker becomes a fresh claim of
// this replica (runs 0, a new nonce), holding every byte, for the sweep to queue.
TEST_F(FileProcessorAzuriteTest, AWriteJustBeforeTheCompletionRenameIsClaimedAgain) {
  for (const bool first_fails : {false, true}) {
    const std::string head = PatternBytes(20'000, 39);
    WorkItem item = PlaceClaim(first_fails ? "during-retry.bin" : "just-before.bin", head, false);
    int renames = 0;
    FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
    deps.complete_rename = [&](const std::string& from, const std::string& to) {
      if (++renames == 1) std::ofstream(from, std::ios::binary | std::ios::app) << "tail";
      if (first_fails && renames == 1) {
        return Status(ErrorKind::kTransient, "rename: Input/output error");
      }
      return fs::RenameEntry(from, to);
    };
    FileProcessor processor(std::move(deps));
    processor.Process(item, {});
    ExpectBlobHolds(item, head);
    const auto left = Entries(config_.processing_root);
    ASSERT_EQ(left.size(), 1u) << testing::PrintToString(left);
    const auto again = ParseClaimPath(left[0]);
    ASSERT_TRUE(again.has_value()) << left[0];
    EXPECT_EQ(again->state, ClaimState::kClaimed) << first_fails;
    EXPECT_EQ(again->runs, 0);
    EXPECT_NE(again->nonce, item.claim.nonce);
    EXPECT_EQ(again->BlobName(), item.claim.BlobName());
    EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.processing_root, left[0])), head + "tail");
    EXPECT_EQ(inflight_.size(), 0u) << "the claim is out of flight again";
    EXPECT_FALSE(inflight_.MarkerHeld(item.claim.WithRuns(2).WithState(ClaimState::kDone).Path()))
        << "nor is its marker held";
    ASSERT_EQ(::unlink(fs::Join(config_.processing_root, left[0]).c_str()), 0);
  }
}

// The look after the completion rename failing (an NFS server's EIO or ESTALE) cannot tell a
// write that landed just before the rename: the marker is claimed again all the same, instead of
// being left for a sweep that would collect it with those bytes. Claimed again unchanged, the
// file is then found complete in storage and not sent again.
TEST_F(FileProcessorAzuriteTest, AMarkerThatCannotBeLookedAtIsClaimedAgain) {
  for (const bool written : {true, false}) {
    const std::string head = PatternBytes(20'000, 41);
    WorkItem item = PlaceClaim(written ? "unseen-write.bin" : "unseen-none.bin", head, false);
    int looks = 0;
    FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
    deps.complete_rename = [&](const std::string& from, const std::string& to) {
      if (written) std::ofstream(from, std::ios::binary | std::ios::app) << "tail";
      return fs::RenameEntry(from, to);
    };
    deps.marker_stat = [&](const std::string&) -> Result<fs::FileStat> {
      ++looks;
      return Status(ErrorKind::kTransient, "statx: Input/output error");
    };
    FileProcessor processor(std::move(deps));
    processor.Process(item, {});
    EXPECT_EQ(looks, 1);
    ExpectBlobHolds(item, head);
    const auto left = Entries(config_.processing_root);
    ASSERT_EQ(left.size(), 1u) << testing::PrintToString(left);
    const auto again = ParseClaimPath(left[0]);
    ASSERT_TRUE(again.has_value()) << left[0];
    EXPECT_EQ(again->state, ClaimState::kClaimed) << written;
    EXPECT_EQ(again->BlobName(), item.claim.BlobName());
    const std::string held = head + (written ? "tail" : "");
    EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.processing_root, left[0])), held);
    // As the sweep queues it: the written one is sent again, the other found complete.
    WorkItem next;
    next.kind = WorkItem::Kind::kClaim;
    next.claim = *again;
    next.check_existing = true;
    processor_->Process(next, {});
    ExpectBlobHolds(item, held);
    ASSERT_EQ(Entries(config_.processing_root).size(), 1u) << "its completion marker";
    for (const auto& name : Entries(config_.processing_root)) {
      EXPECT_TRUE(name.ends_with(".done")) << name;
      ASSERT_EQ(::unlink(fs::Join(config_.processing_root, name).c_str()), 0);
    }
  }
  EXPECT_EQ(Count(inst_.files_skipped), 1) << "the unchanged one is not sent again";
}

// The claim again itself failing (the NFS server's EIO on the marker's rename): told, in the
// recent errors, and tried again after a backoff until it lands; the marker meanwhile kept.
TEST_F(FileProcessorAzuriteTest, AClaimAgainThatFailsIsTriedAgain) {
  const std::string data = PatternBytes(20'000, 47);
  WorkItem item = PlaceClaim("reclaim-fails.bin", data, false);
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.marker_stat = [](const std::string&) -> Result<fs::FileStat> {
    return Status(ErrorKind::kTransient, "statx: Input/output error");
  };
  FileProcessor processor(std::move(deps));
  int reclaims = 0;  // renames of the marker
  const nbu::test::ScopedPathPairCall seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        if (std::string_view(op) == "link") return ::link(from.c_str(), to.c_str());
        if (from.ends_with(".done") && ++reclaims == 1) {
          errno = EIO;
          return -1;
        }
        return ::rename(from.c_str(), to.c_str());
      });
  processor.Process(item, {});
  EXPECT_EQ(reclaims, 2);
  ExpectBlobHolds(item, data);
  const auto left = Entries(config_.processing_root);
  ASSERT_EQ(left.size(), 1u) << testing::PrintToString(left);
  const auto again = ParseClaimPath(left[0]);
  ASSERT_TRUE(again.has_value()) << left[0];
  EXPECT_EQ(again->state, ClaimState::kClaimed);
  const auto errors = inst_.errors.Snapshot();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].error.find("could not be claimed again yet"), std::string::npos)
      << errors[0].error;
}

// A name holding only another writer's uncommitted blocks (an older version of the file still
// being sent in blocks, or one a crash abandoned): Azurite refuses a Put Blob with
// If-None-Match: * there as BlobAlreadyExists while HEAD finds no blob. The file goes as one
// block and a block list instead, whose condition looks at committed blobs only, with its MD5
// on the blob; the older writer's commit then finds this blob there. Both Put Blob checks.
TEST_F(FileProcessorAzuriteTest, ANameHeldByAnotherWritersUncommittedBlocksTakesTheFile) {
  for (const bool crc64 : {true, false}) {
    const std::string name = crc64 ? "staged-crc.bin" : "staged-md5.bin";
    WorkItem item = PlaceClaim(name, PatternBytes(3'000, 43), false);
    const std::string older_id = StageOtherWritersBlock(item, size_t{128} * 1024, 44);
    ASSERT_FALSE(*blob_->GetProperties(item.claim.BlobName())) << "no committed blob";
    const std::string data = PatternBytes(3'000, 43);
    (crc64 ? crc_processor_ : processor_)->Process(item, {});
    ExpectBlobHolds(item, data);
    ExpectOtherWritersCommitFindsTheBlob(item, older_id);
  }
  EXPECT_EQ(Count(inst_.files_processed), 2);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// ... and read in short pieces (a file server may answer a read with fewer bytes than asked),
// checked by CRC-64, so that the block's MD5 is computed only now: it is the MD5 of the bytes in
// memory, which are the block's body. Hashed by reading the claim again into the copy buffer,
// which for a small file is that memory, each piece landed at its start and scrambled the body.
TEST_F(FileProcessorAzuriteTest, ShortReadsKeepASmallFileSentAsOneBlockWhole) {
  const std::string data = PatternBytes(3'000, 48);
  WorkItem item = PlaceClaim("short-reads.bin", data, false);
  const std::string older_id = StageOtherWritersBlock(item, size_t{128} * 1024, 49);
  int reads = 0;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {},
                           &crc64_};
  deps.claim_pread = [&](const std::string&, int fd, char* buf, size_t len, off_t at) {
    ++reads;
    return ::pread(fd, buf, std::min<size_t>(len, 1'000), at);
  };
  FileProcessor processor(std::move(deps));
  processor.Process(item, {});
  EXPECT_GE(reads, 3);
  ExpectBlobHolds(item, data);
  ExpectOtherWritersCommitFindsTheBlob(item, older_id);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// ... and an empty file there: no Put Block is sent, since Azure refuses an empty one (Azurite
// takes it, Azure/Azurite#329). An empty block list makes the 0-byte blob, with the MD5 of no
// bytes on it. Both Put Blob checks.
TEST_F(FileProcessorAzuriteTest, AnEmptyFileUnderANameHeldByUncommittedBlocksSendsNoBlock) {
  for (const bool crc64 : {true, false}) {
    const std::string name = crc64 ? "staged-empty-crc.bin" : "staged-empty-md5.bin";
    WorkItem item = PlaceClaim(name, "", false);
    const std::string older_id = StageOtherWritersBlock(item, 4'000, 47);
    nbu::test::FaultProxy proxy(azurite_.port());
    auto blob = ClientVia(proxy);
    ProcessorVia(*blob, crc64)->Process(item, {});
    EXPECT_EQ(proxy.Count("comp=block&"), 0) << name << ": no Put Block";
    EXPECT_EQ(proxy.Count("comp=blocklist", "PUT"), 1) << name;
    ExpectBlobHolds(item, "");  // there, 0 bytes, the MD5 of no bytes
    ExpectOtherWritersCommitFindsTheBlob(item, older_id);
  }
  EXPECT_EQ(Count(inst_.files_processed), 2);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// ... and when that writer commits between this file's block and its block list (which discards
// the block): the list is refused, as the name is taken (Azurite: 409) or as it names a block
// gone (InvalidBlockList, from storage that checks the list first; the proxy answers so). The
// blob found is judged as any other, and this newer version goes over it in the same attempt.
TEST_F(FileProcessorAzuriteTest, AnotherWritersCommitBetweenOurBlockAndListIsJudged) {
  int n = 0;
  for (const bool crc64 : {true, false}) {
    for (const bool invalid_list : {false, true}) {
      const std::string name = "raced-" + std::to_string(n++) + ".bin";
      const std::string data = PatternBytes(3'000, 45);
      WorkItem item = PlaceClaim(name, data, false);
      const std::string older_id = StageOtherWritersBlock(item, size_t{128} * 1024, 46);
      std::atomic<bool> committed{false};
      nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
        if (r.target.find("comp=blocklist") == std::string::npos || committed.exchange(true)) {
          return nbu::test::FaultAction::Forward();
        }
        EXPECT_TRUE(blob_->PutBlockList(item.claim.BlobName(), {older_id}, {}).ok());
        return invalid_list ? nbu::test::FaultAction::Status(400, "InvalidBlockList")
                            : nbu::test::FaultAction::Forward();
      });
      auto blob = ClientVia(proxy);
      ProcessorVia(*blob, crc64)->Process(item, {});
      EXPECT_TRUE(committed.load()) << name << ": the block list was sent";
      ExpectBlobHolds(item, data);
    }
  }
  EXPECT_EQ(Count(inst_.files_processed), 4);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "transient"}}), 0)
      << "no attempt of the four failed";
}

// A claim queued twice (a walk listed it just before the first worker's run-count rename): the
// second worker finds the renamed claim held by the first and leaves it alone, instead of
// taking the rename's target for its own and processing the file beside the first worker.
TEST_F(FileProcessorAzuriteTest, AClaimHeldByAnotherWorkerIsLeftToIt) {
  WorkItem item = PlaceClaim("twice.bin", PatternBytes(5'000, 30), false);
  const ClaimPath held = item.claim.WithRuns(item.claim.runs + 1);  // the first worker's rename
  ASSERT_TRUE(fs::RenameEntry(fs::Join(config_.processing_root, item.claim.Path()),
                              fs::Join(config_.processing_root, held.Path()))
                  .ok());
  ASSERT_TRUE(inflight_.Add(held.Path()));
  processor_->Process(item, {});
  EXPECT_EQ(Count(inst_.files_processed), 0);
  EXPECT_FALSE(blob_->GetProperties(item.claim.BlobName())->has_value());
  EXPECT_TRUE(inflight_.Contains(held.Path()));
  EXPECT_FALSE(inflight_.Contains(item.claim.Path()));
  EXPECT_TRUE(fs::Stat(fs::Join(config_.processing_root, held.Path())).ok());
}

// A commit that landed but whose answer was lost: the next try finds the name taken by this
// very claim's blob and is done without committing again (the blob keeps its ETag), for a Put
// Blob, for a block list, and for a Put Blob checked by CRC-64 (the claim read again for an MD5
// to compare). Were it replaced, a commit whose every answer is lost would go on replacing
// itself until the file was dead-lettered.
TEST_F(FileProcessorAzuriteTest, ACommitOfThisClaimFoundOnTheNextTryIsDone) {
  int round = 0;
  for (FileProcessor* processor : {processor_.get(), processor_.get(), crc_processor_.get()}) {
    const size_t size = round == 1 ? (1 << 20) + 9 : 3'000;
    const std::string data = PatternBytes(size, 23);
    WorkItem item = PlaceClaim("landed-" + std::to_string(round++), data, false);
    processor->Process(item, {});
    const std::string etag = (*blob_->GetProperties(item.claim.BlobName()))->etag;
    // The claim again, as if the first commit's answer had been lost and the run ended there.
    WriteFile(fs::Join(config_.processing_root, item.claim.Path()), data);
    processor->Process(item, {});
    ExpectBlobHolds(item, data);
    EXPECT_EQ((*blob_->GetProperties(item.claim.BlobName()))->etag, etag) << size;
  }
  EXPECT_EQ(Count(inst_.files_processed), 6);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(Count(inst_.files_superseded), 0);
}

// A commit that landed while every try's answer was lost (storage out of reach right after it)
// fails the attempt; the next one finds the blob this claim committed, with these bytes, and is
// done: the file is not sent again (for a file in blocks, no block), and it counts as uploaded.
// In blocks, in one Put Blob, and in one Put Blob checked by CRC-64.
TEST_F(FileProcessorAzuriteTest, ACommitWhoseEveryAnswerWasLostIsNotSentAgain) {
  int round = 0;
  for (const bool crc64 : {false, false, true}) {
    const bool blocks = round == 0;
    const std::string name = "all-lost-" + std::to_string(round++);
    std::atomic<int> lost{0};
    nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
      const bool is_commit =
          r.method == "PUT" && (blocks ? r.target.find("comp=blocklist") != std::string::npos
                                       : r.target.ends_with(name));
      if (is_commit && lost++ < 2) return nbu::test::FaultAction::DropAfter();  // both tries
      return nbu::test::FaultAction::Forward();
    });
    auto blob = ClientVia(proxy);
    const std::string data = PatternBytes(blocks ? (1 << 20) + 9 : 3'000, 40);
    WorkItem item = PlaceClaim(name, data, false, 0);
    const double uploaded = Count(inst_.files_processed);
    ProcessorVia(*blob, crc64)->Process(item, {});
    ExpectBlobHolds(item, data);
    EXPECT_EQ(lost.load(), 2) << name << ": the second attempt sent no commit";
    if (blocks) {
      EXPECT_EQ(proxy.Count("comp=block&", "PUT"), 9u) << "each block sent once";
    }
    EXPECT_EQ(Count(inst_.files_processed), uploaded + 1);
    EXPECT_EQ(Count(inst_.files_skipped), 0) << "uploaded, not found complete";
    EXPECT_EQ(Count(inst_.files_failed), 0);
  }
}

// The same claim's earlier commit is only "this claim's own" when it holds the bytes read now.
// The claim was rewritten in place at the same size after a commit whose answer was lost (a
// producer that preallocates, say): the next try must replace the blob, not call it done and
// let the new bytes be collected. In one Put Blob, in blocks, and with a Put Blob checked by
// CRC-64 (the claim read again for an MD5 to compare).
TEST_F(FileProcessorAzuriteTest, AnEarlierCommitOfThisClaimWithOtherBytesIsReplaced) {
  int round = 0;
  for (FileProcessor* processor : {processor_.get(), processor_.get(), crc_processor_.get()}) {
    const size_t size = round == 1 ? (1 << 20) + 9 : 3'000;
    const std::string before = PatternBytes(size, 24);
    const std::string after = PatternBytes(size, 25);
    WorkItem item = PlaceClaim("rewritten-" + std::to_string(round++), before, false);
    SetMtime(item, 1'700'000'000);
    processor->Process(item, {});
    ExpectBlobHolds(item, before);
    // The claim again, rewritten, as if the first commit's answer had been lost; its mtime the
    // same (a server with coarse times): still this claim's own blob, replaced.
    WriteFile(fs::Join(config_.processing_root, item.claim.Path()), after);
    SetMtime(item, 1'700'000'000);
    processor->Process(item, {});
    ExpectBlobHolds(item, after);
  }
  EXPECT_EQ(Count(inst_.files_processed), 6);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// A claim taken over by another replica (which keeps its nonce) while this one, stalled, still
// held a copy: the blob of that claim may be the new owner's later copy, so this replica's stale
// copy is not put over it, and the claim is left to its new owner.
TEST_F(FileProcessorAzuriteTest, AStaleCopyOfAClaimTakenOverIsNotPutOverItsBlob) {
  const std::string newer = PatternBytes(4'000, 31);
  const std::string stale = PatternBytes(4'000, 32);
  WorkItem item = PlaceClaim("taken.bin", newer, false);
  processor_->Process(item, {});  // as the new owner would have committed it
  ExpectBlobHolds(item, newer);
  // This replica's run of the same claim, with the bytes it copied before it stalled.
  WriteFile(fs::Join(config_.processing_root, item.claim.Path()), stale);
  const ClaimPath running = item.claim.WithRuns(item.claim.runs + 1);
  const ClaimPath taken = running.WithOwner("other-replica");
  std::atomic<bool> moved{false};
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    // The takeover lands while this replica looks at the blob its commit found.
    if (r.method == "HEAD" && !moved.exchange(true)) {
      EXPECT_TRUE(fs::RenameEntry(fs::Join(config_.processing_root, running.Path()),
                                  fs::Join(config_.processing_root, taken.Path()))
                      .ok());
    }
    return nbu::test::FaultAction::Forward();
  });
  auto blob = ClientVia(proxy);
  FileProcessor processor(
      FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
  processor.Process(item, {});
  EXPECT_TRUE(moved.load());
  ExpectBlobHolds(item, newer);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.processing_root, taken.Path())), stale);
}

// ... and when the claim still looks present where this replica left it: an NFS client may
// answer a lookup from its cache for a while after the takeover's rename. A blob of the same
// claim whose source mtime is later than this copy's is a later copy (the new owner's, of the
// file written again since this one was taken), not an earlier try of this one: it is not put
// over, and this copy is kept as a superseded one is.
TEST_F(FileProcessorAzuriteTest, AStaleCopyOfAClaimIsNotPutOverALaterCopyOfIt) {
  const std::string newer = PatternBytes(4'000, 50);
  const std::string stale = PatternBytes(4'000, 51);
  WorkItem item = PlaceClaim("later.bin", newer, false);
  processor_->Process(item, {});  // as the new owner would have committed it
  ExpectBlobHolds(item, newer);
  // This replica's run of the same claim, still in place, with the bytes it copied before the
  // file was written again.
  WriteFile(fs::Join(config_.processing_root, item.claim.Path()), stale);
  SetMtime(item, 1'700'000'000);
  processor_->Process(item, {});
  ExpectBlobHolds(item, newer);
  EXPECT_EQ(Count(inst_.files_superseded), 1);
  ExpectOneDeadLetter("superseded");
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[0])), stale);
}

// A HEAD answered without an ETag (a proxy that strips it) leaves nothing to make the next
// commit conditional on. Committed unconditionally, this older version would go over a newer
// one committed meanwhile; instead the attempt ends, and the next one sees the newer blob.
TEST_F(FileProcessorAzuriteTest, AHeadWithoutAnETagNeverLeadsToAnUnconditionalCommit) {
  WorkItem oldest = PlaceClaim("etag.bin", PatternBytes(3'000, 33), false);
  SetMtime(oldest, 1'600'000'000);
  processor_->Process(oldest, {});
  WorkItem older = PlaceClaim("etag.bin", PatternBytes(3'000, 34), false);
  SetMtime(older, 1'700'000'000);
  const std::string newest_data = PatternBytes(3'000, 35);
  WorkItem newest = PlaceClaim("etag.bin", newest_data, false);  // mtime now
  std::atomic<bool> stripped{false};
  std::atomic<bool> newest_committed{false};
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.method == "HEAD" && !stripped.exchange(true)) {
      return nbu::test::FaultAction::DropResponseHeader("ETag");
    }
    // The newest version commits between that HEAD and the next write of the older one.
    if (r.method == "PUT" && stripped.load() && !newest_committed.exchange(true)) {
      processor_->Process(newest, {});
    }
    return nbu::test::FaultAction::Forward();
  });
  auto blob = ClientVia(proxy);
  FileProcessor processor(
      FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
  processor.Process(older, {});
  EXPECT_TRUE(newest_committed.load());
  ExpectBlobHolds(newest, newest_data);
  EXPECT_EQ(Count(inst_.files_superseded), 1);
}

// Storage answering every write with 500 for longer than a request's retries last, then
// recovering: an overloaded partition (OperationTimedOut, storage asking for less) or an outage
// (InternalError) while no other file got through either. Waited out without charging the file,
// however few attempts a file may have and however soon failures may count.
TEST_F(FileProcessorAzuriteTest, ServerErrorsOutlastingEveryRetryDoNotCountAgainstTheFile) {
  config_.max_file_attempts = 2;
  config_.unavailable_counts_after_s = 0;
  for (const std::string code : {"OperationTimedOut", "InternalError"}) {
    std::atomic<int> puts{0};  // the first 12 PUTs (an attempt after a failed one HEADs first)
    nbu::test::FaultProxy proxy(azurite_.port(), [code, &puts](const nbu::test::ProxyRequest& r) {
      return r.method == "PUT" && puts++ < 12 ? nbu::test::FaultAction::Status(500, code)
                                              : nbu::test::FaultAction::Forward();
    });
    auto blob = ClientVia(proxy);
    FileProcessor processor(
        FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
    const std::string data = PatternBytes(5'000, 26);
    WorkItem item = PlaceClaim(code + ".bin", data, false);
    processor.Process(item, {});
    EXPECT_GE(proxy.faults(), 12u) << code;
    EXPECT_EQ(Count(inst_.files_failed), 0) << code;
    auto got = blob_->GetBlob(item.claim.BlobName());
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == data) << code;
  }
  EXPECT_EQ(Count(inst_.files_processed), 2);
}

// Storage answering the writes of `poisoned` files with `status` (and `code`) for good while it
// takes the others, which are uploaded one after another until `done` (at most 60 s). Returns
// when done.
void FileProcessorAzuriteTest::FailFilesWhileOthersUpload(const std::vector<std::string>& poisoned,
                                                          const std::function<bool()>& done,
                                                          int status, const std::string& code) {
  config_.azure_retry_max_s = 0.2;  // a failed file is tried again within 0.26 s
  config_.unavailable_counts_after_s = 2;
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    return r.method == "PUT" && r.target.find("poison") != std::string::npos
               ? nbu::test::FaultAction::Status(status, code)
               : nbu::test::FaultAction::Forward();
  });
  auto blob = ClientVia(proxy);
  FileProcessor processor(
      FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
  std::stop_source stop;  // ends the workers of files not dead-lettered
  std::vector<std::jthread> workers;
  for (const std::string& name : poisoned) {
    WorkItem item = PlaceClaim(name, PatternBytes(4'000, 27), false);
    workers.emplace_back([&processor, &stop, item] { processor.Process(item, stop.get_token()); });
  }
  const auto until = std::chrono::steady_clock::now() + 60s;
  for (int i = 0; !done() && std::chrono::steady_clock::now() < until; ++i) {
    processor.Process(PlaceClaim("good-" + std::to_string(i),
                                 PatternBytes(1'000, static_cast<uint32_t>(i)), false),
                      {});
    std::this_thread::sleep_for(20ms);
  }
  stop.request_stop();
}

// One file storage keeps refusing while it takes the others: once no other file has failed so
// for unavailable_counts_after_s, and others are still uploaded between its failures, its
// failures are its own. It is dead-lettered, bytes kept and the reason given, freeing its worker.
TEST_F(FileProcessorAzuriteTest, AFileStorageKeepsFailingWhileItTakesOthersIsDeadLettered) {
  config_.max_file_attempts = 3;
  FailFilesWhileOthersUpload({"poison.bin"}, [&] { return Count(inst_.files_failed) == 1; });
  ASSERT_EQ(Count(inst_.files_failed), 1);
  EXPECT_GE(Count(inst_.files_processed), 1);
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[0])), PatternBytes(4'000, 27));
  const auto reason =
      nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[1])));
  EXPECT_NE(reason["error"].get<std::string>().find("HTTP 500 InternalError"), std::string::npos)
      << reason.dump();
}

// A refusal (403) of some files' requests while others' are taken (a role assignment
// conditioned on the blobs' path, which refuses a whole prefix): their workers are not held for
// good, which with a few such files would hold every worker. Unlike unreachable storage, two
// files refused together count too, but only once each has been refused for
// unavailable_counts_after_s (2 s here): a refusal that passes (a role still spreading across
// storage's front ends) must not dead-letter files.
TEST_F(FileProcessorAzuriteTest, FilesStorageRefusesWhileItTakesOthersAreDeadLettered) {
  config_.max_file_attempts = 3;
  const auto began = std::chrono::steady_clock::now();
  FailFilesWhileOthersUpload(
      {"poison-a.bin", "poison-b.bin"}, [&] { return Count(inst_.files_failed) == 2; }, 403,
      "AuthorizationPermissionMismatch");
  ASSERT_EQ(Count(inst_.files_failed), 2);
  EXPECT_GE(std::chrono::steady_clock::now() - began, 2s) << "dead-lettered before 2 s of refusals";
  EXPECT_GE(Count(inst_.files_processed), 1);
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 4u);
  for (const std::string& f : failed) {
    if (!f.ends_with(".failed.json")) continue;
    const auto reason =
        nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, f)));
    EXPECT_NE(reason["error"].get<std::string>().find("HTTP 403 AuthorizationPermissionMismatch"),
              std::string::npos)
        << reason.dump();
  }
}

// Two files storage keeps refusing while it takes others: as far as anyone can tell, an outage
// that lets some files through. Neither counts, however long it lasts (here at least 3 times the
// time after which one file alone would, and until both failures and uploads have piled up: a
// slow machine makes the test longer, not fail; FailFilesWhileOthersUpload gives up after 60 s).
TEST_F(FileProcessorAzuriteTest, FilesFailingTogetherWhileOthersUploadAreNotCounted) {
  config_.max_file_attempts = 2;
  const auto at_least = std::chrono::steady_clock::now() + 6s;
  auto failures = [&] { return inst_.attempt_failures.Value({{"reason", "unavailable"}}); };
  FailFilesWhileOthersUpload({"poison-a.bin", "poison-b.bin"}, [&] {
    return Count(inst_.files_failed) > 0 ||
           (std::chrono::steady_clock::now() >= at_least && failures() >= 20 &&
            Count(inst_.files_processed) >= 20);
  });
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_GE(failures(), 20);
  EXPECT_GE(Count(inst_.files_processed), 20);
}

void FileProcessorAzuriteTest::DeadLetterInterruptedThenRevive(const std::string& base) {
  config_.max_file_attempts = 3;
  const std::string data = PatternBytes(70'000, 12);
  WorkItem item = PlaceClaim(base, data, true, 3);
  processor_->Process(item, {});
  EXPECT_EQ(Count(inst_.files_failed), 1);
  EXPECT_EQ(Count(inst_.files_processed), 0);
  EXPECT_FALSE(blob_->GetBlob(item.claim.BlobName()).ok()) << "nothing was sent";
  EXPECT_TRUE(Entries(config_.processing_root).empty());
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[0])), data);
  const auto reason =
      nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, failed[1])));
  EXPECT_EQ(reason["attempts"], 3);
  EXPECT_NE(reason["error"].get<std::string>().find("interrupted 3 times"), std::string::npos)
      << reason.dump();
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "interrupted"}}), 1);
  // Retried by hand (POST /v1/failed/retry), it starts afresh: no run of it counts.
  std::vector<std::string> errors;
  auto revived = processor_->ReviveDeadLetters(&errors);
  ASSERT_EQ(revived.size(), 1u);
  EXPECT_TRUE(errors.empty());
  WorkItem retry;
  retry.kind = WorkItem::Kind::kClaim;
  retry.claim = revived[0];
  retry.check_existing = true;
  processor_->Process(retry, {});
  ExpectBlobHolds(retry, data);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "interrupted"}}), 1);
  EXPECT_EQ(Entries(config_.processing_root),
            std::vector<std::string>{retry.claim.WithRuns(1).WithState(ClaimState::kDone).Path()});
}

// Below the limit the claim is run again, and the run is on the volume before any byte moves: a
// run this process does not survive counts as well.
// A claim whose runs ended with the service twice may be what ends it: it runs alone, so that its
// next crash is not charged to the files beside it (which would reach APP_MAX_FILE_ATTEMPTS with
// it). Interrupted once, claims run side by side as ever.
TEST_F(FileProcessorAzuriteTest, AClaimInterruptedTwiceRunsAlone) {
  for (const int runs : {1, 2}) {
    nbu::test::Gate hold;
    std::atomic<bool> suspect_reading{false};
    const auto held = ProcessorHolding("suspect", hold, suspect_reading);
    FileProcessor& processor = *held;
    const std::string name = "runs" + std::to_string(runs);
    const std::string data = PatternBytes(1000, runs == 1 ? 44 : 45);
    const WorkItem suspect = PlaceClaim(name + "-suspect.bin", data, false, runs);
    const WorkItem beside = PlaceClaim(name + "-beside.bin", data, false, 1);
    std::jthread first([&] { processor.Process(suspect, {}); });
    ASSERT_TRUE(WaitFor([&] { return suspect_reading.load(); }, 10s));
    std::atomic<bool> beside_done{false};
    std::jthread second([&] {
      processor.Process(beside, {});
      beside_done = true;
    });
    if (runs == 1) {
      EXPECT_TRUE(WaitFor([&] { return beside_done.load(); }, 10s)) << "side by side";
    } else {
      std::this_thread::sleep_for(300ms);  // the other file takes ~30 ms when it is let run
      EXPECT_FALSE(beside_done) << "waits for the suspect";
      EXPECT_TRUE(fs::Stat(fs::Join(config_.processing_root, beside.claim.Path())).ok())
          << "its run is not even begun";
    }
    hold.Open();
    first.join();
    second.join();
    ExpectBlobHolds(suspect, data);
    ExpectBlobHolds(beside, data);
  }
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// A run that never ends (its file waits for staging to grow, say) does not hold a suspect, nor
// the runs behind it, for ever: past its wait the suspect runs beside it. And past its first
// attempt a suspect no longer holds the others back.
TEST_F(FileProcessorAzuriteTest, ASuspectRunsAloneOnlyForABoundedWaitAndItsFirstAttempt) {
  nbu::test::Gate hold;
  std::atomic<bool> reading_held{false};
  const auto held = ProcessorHolding("held", hold, reading_held, 200ms);
  FileProcessor& processor = *held;
  const std::string data = PatternBytes(1000, 46);
  const WorkItem stuck = PlaceClaim("held-side.bin", data, false, 1);
  std::atomic<bool> stuck_done{false};
  std::jthread first([&] {
    processor.Process(stuck, {});
    stuck_done = true;
  });
  ASSERT_TRUE(WaitFor([&] { return reading_held.load(); }, 10s));
  const WorkItem suspect = PlaceClaim("suspect.bin", data, false, 2);
  test::CapturedLog waited("running a claim interrupted before beside the others");
  processor.Process(suspect, {});
  ExpectBlobHolds(suspect, data);
  EXPECT_FALSE(stuck_done) << "the suspect ran while the other run was still held";
  EXPECT_EQ(waited.Lines().size(), 1u);
  // One only to be dead-lettered (interrupted as often as the limit) does not wait at all.
  processor.Process(PlaceClaim("suspect-done-for.bin", data, false, config_.max_file_attempts), {});
  waited.Stop();
  EXPECT_EQ(waited.Lines().size(), 1u) << "no wait for the runs inside";
  EXPECT_EQ(Count(inst_.files_failed), 1);
  hold.Open();
  first.join();
  ExpectBlobHolds(stuck, data);
}

// Its first attempt failed (the volume, say), a suspect's retries run beside the others.
TEST_F(FileProcessorAzuriteTest, ASuspectsRetriesRunBesideTheOthers) {
  nbu::test::Gate hold;
  std::atomic<int> suspect_reads{0};
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.claim_pread = [&](const std::string& path, int fd, char* buf, size_t len, off_t at) {
    if (path.find("suspect") != std::string::npos) {
      if (++suspect_reads == 1) {
        errno = EIO;
        return ssize_t{-1};
      }
      hold.Wait(10s);
    }
    return ::pread(fd, buf, len, at);
  };
  FileProcessor processor(std::move(deps));
  const std::string data = PatternBytes(1000, 47);
  const WorkItem suspect = PlaceClaim("retried-suspect.bin", data, false, 2);
  std::atomic<bool> suspect_done{false};
  std::jthread first([&] {
    processor.Process(suspect, {});
    suspect_done = true;
  });
  ASSERT_TRUE(WaitFor([&] { return suspect_reads.load() >= 2; }, 10s));
  const WorkItem beside = PlaceClaim("retried-beside.bin", data, false, 1);
  processor.Process(beside, {});
  ExpectBlobHolds(beside, data);
  EXPECT_FALSE(suspect_done) << "the other file ran while the suspect's retry was held";
  hold.Open();
  first.join();
  ExpectBlobHolds(suspect, data);
}

// A suspect's first attempt that goes on past the limit (a multi-hour upload) has the others
// beside it from then on: the intake is held back for the limit, not for the whole upload.
TEST_F(FileProcessorAzuriteTest, ASuspectsLongFirstAttemptHasTheOthersBesideItPastTheLimit) {
  nbu::test::Gate hold;
  std::atomic<bool> suspect_reading{false};
  const auto held = ProcessorHolding("suspect", hold, suspect_reading, 300ms);
  FileProcessor& processor = *held;
  const std::string data = PatternBytes(1000, 48);
  const WorkItem suspect = PlaceClaim("long-suspect.bin", data, false, 2);
  std::atomic<bool> suspect_done{false};
  std::jthread first([&] {
    processor.Process(suspect, {});
    suspect_done = true;
  });
  ASSERT_TRUE(WaitFor([&] { return suspect_reading.load(); }, 10s));
  const WorkItem beside = PlaceClaim("long-beside.bin", data, false, 1);
  processor.Process(beside, {});  // returns once the limit has passed
  ExpectBlobHolds(beside, data);
  EXPECT_FALSE(suspect_done) << "the other file waited for the suspect's whole first attempt";
  hold.Open();
  first.join();
  ExpectBlobHolds(suspect, data);
}

// A service that stops begins no item a worker holds but has not begun: a claim waiting for a
// suspect's lone run ends at once, left for recovery with no run recorded, rather than holding
// the shutdown for its grace and then beginning an upload.
TEST_F(FileProcessorAzuriteTest, ItemsWaitingAtTheGateEndWhenNoMoreAreBegun) {
  nbu::test::Gate hold;
  std::atomic<bool> suspect_reading{false};
  const auto held = ProcessorHolding("suspect", hold, suspect_reading);
  FileProcessor& processor = *held;
  const std::string data = PatternBytes(1000, 49);
  const WorkItem suspect = PlaceClaim("closing-suspect.bin", data, false, 2);
  std::jthread first([&] { processor.Process(suspect, {}); });
  ASSERT_TRUE(WaitFor([&] { return suspect_reading.load(); }, 10s));
  const WorkItem waiting = PlaceClaim("closing-waiting.bin", data, false, 1);
  ASSERT_TRUE(inflight_.Add(waiting.claim.Path()));
  std::atomic<bool> waiting_done{false};
  std::jthread second([&] {
    processor.Process(waiting, {});
    waiting_done = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(waiting_done) << "waits for the suspect's lone run";
  processor.BeginNoMore();
  EXPECT_TRUE(WaitFor([&] { return waiting_done.load(); }, 5s));
  EXPECT_FALSE(inflight_.Contains(waiting.claim.Path()));
  EXPECT_TRUE(fs::Stat(fs::Join(config_.processing_root, waiting.claim.Path())).ok())
      << "left as it was, its run count unchanged";
  hold.Open();
  first.join();
  ExpectBlobHolds(suspect, data);
  EXPECT_FALSE(blob_->GetProperties(waiting.claim.BlobName())->has_value()) << "not sent";
}

TEST_F(FileProcessorAzuriteTest, ClaimPickedUpAgainRecordsItsRunBeforeItIsSent) {
  config_.max_file_attempts = 3;
  const std::string data = PatternBytes((1 << 20) + 5, 13);  // blocks: a stage span
  WorkItem item = PlaceClaim("again.bin", data, true, 2);
  std::vector<std::string> during;
  on_span_ = [&](const telemetry::SpanData& d) {
    if (d.name == "stage") during = Entries(config_.processing_root);
  };
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  ASSERT_EQ(during.size(), 1u);
  EXPECT_EQ(during[0], item.claim.WithRuns(3).Path());
  EXPECT_EQ(Entries(config_.processing_root),
            std::vector<std::string>{item.claim.WithRuns(3).WithState(ClaimState::kDone).Path()});
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "interrupted"}}), 1);
}

// A claim whose name took all 255 bytes of its entry cannot add its run count there: the rename
// that records the run moves it into a directory named after the file, which it makes, and the
// claim finishes there.
TEST_F(FileProcessorAzuriteTest, ClaimWhoseRunCountNoLongerFitsMovesIntoItsOwnDirectory) {
  const std::string suffix = "~" + config_.replica_id + "~0123456789abcdef.claimed";
  const std::string base(kMaxEntryName - suffix.size(), 'e');
  const std::string data = PatternBytes(70'000, 15);
  WorkItem item = PlaceClaim(base, data, true);
  ASSERT_FALSE(item.claim.InBaseDir());
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  const ClaimPath done = item.claim.WithRuns(2).WithState(ClaimState::kDone);
  ASSERT_TRUE(done.InBaseDir());
  EXPECT_EQ(Entries(config_.processing_root), std::vector<std::string>{done.Path()});
  EXPECT_EQ(Count(inst_.files_processed), 1);
}

// A ready file that cannot be claimed for a reason of the volume's (here a file stands where the
// processing root belongs) stays in incoming, and the failure is counted and shown.
TEST_F(FileProcessorAzuriteTest, FileThatCannotBeClaimedStaysAndShows) {
  const std::string src = fs::Join(config_.incoming_dir, "s/stuck.bin");
  const WorkItem item = FreshItem("stuck.bin", "bytes");
  ASSERT_TRUE(fs::RemoveTree(config_.processing_root).ok());
  WriteFile(config_.processing_root, "");
  test::CapturedLog logged("claim failed");
  processor_->Process(FreshItem("other.bin", "other bytes"), {});
  processor_->Process(item, {});
  processor_->Process(item, {});  // the next scan's try, within the warning's 10 s
  logged.Stop();
  EXPECT_TRUE(fs::Stat(src).ok());
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "claim"}}), 3);
  // One entry for every file it refuses: a volume refusing 10,000 claims takes one slot.
  const auto errors = inst_.errors.Snapshot();
  ASSERT_EQ(errors.size(), 1u) << "one entry for the same cause, however often it comes";
  EXPECT_EQ(errors[0].file, "stuck.bin");
  EXPECT_EQ(errors[0].count, 3u);
  EXPECT_NE(errors[0].error.find("claim failed"), std::string::npos) << errors[0].error;
  EXPECT_EQ(logged.Lines().size(), 1u) << "one warning per 10 s, however often it fails";
}

// Staging without space is the replica's problem, not the file's: the attempt waits as for
// unreachable storage, never counts against the file, and the upload goes on once there is room.
TEST_F(FileProcessorAzuriteTest, FullStagingWaitsAndNeverDeadLetters) {
  const std::string tiny = dir_.path() + "/tiny";
  test::ScopedTmpfs staging(tiny, "256k");
  if (!staging.ok()) GTEST_SKIP() << staging.error();
  config_.staging_root = tiny;
  config_.max_file_attempts = 1;    // a failure that counted would dead-letter at once
  config_.azure_retry_max_s = 0.2;  // the waits' backoff cap
  const std::string data = PatternBytes(1 << 20, 16);      // 8 blocks of 128 KiB; 5 slots staged
  WorkItem item = PlaceClaim("roomy.bin", data, true, 0);  // no earlier run to count
  ProcessWhileStagingFails(item, "staging_full", 3);
  EXPECT_NE(inst_.staging_full_at.load(), 0);
  const auto errors = inst_.errors.Snapshot();
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors.back().error.find("staging is full"), std::string::npos) << errors.back().error;

  // Room again: the claim (its run handed back by the stop) is uploaded.
  ASSERT_TRUE(staging.Resize("16m")) << staging.error();
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  EXPECT_EQ(Count(inst_.files_processed), 1);
}

// Staging out of space or inodes when the claim's staging directory is to be made (its mkdir
// fails with ENOSPC, so the create finds no directory): staging is full, said so, not "failing"
// with the create's "No such file or directory".
TEST_F(FileProcessorAzuriteTest, StagingFullAtTheDirectoryIsToldFull) {
  config_.max_file_attempts = 1;  // a failure that counted would dead-letter at once
  config_.azure_retry_max_s = 0.2;
  std::atomic<bool> full{true};
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    return full && std::string_view(op) == "mkdir" && path.starts_with(config_.staging_root)
               ? ENOSPC
               : 0;
  });
  ASSERT_TRUE(fs::RemoveTree(config_.staging_root).ok());
  ASSERT_EQ(::mkdir(config_.staging_root.c_str(), 0755), 0);  // its subdirectories to be made
  const std::string data = PatternBytes((1 << 20) + 9, 42);   // staged on disk
  WorkItem item = PlaceClaim("nodir.bin", data, true, 0);
  ProcessWhileStagingFails(item, "staging_full", 2);
  EXPECT_NE(inst_.staging_full_at.load(), 0);
  EXPECT_EQ(inst_.staging_failing_at.load(), 0);
  const auto errors = inst_.errors.Snapshot();
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors.back().error.find("No space left on device"), std::string::npos)
      << errors.back().error;
  full = false;
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
}

// Staging remounted read-only (as after a disk error) is this replica's trouble, not the
// file's: the attempts wait, the status says staging_failing, and nothing is dead-lettered.
TEST_F(FileProcessorAzuriteTest, ReadOnlyStagingWaitsAndNeverDeadLetters) {
  const std::string disk = dir_.path() + "/ro";
  test::ScopedTmpfs staging(disk, "16m");
  if (!staging.ok()) GTEST_SKIP() << staging.error();
  ASSERT_TRUE(staging.SetReadOnly(true)) << staging.error();
  config_.staging_root = disk;
  config_.max_file_attempts = 1;  // a failure that counted would dead-letter at once
  config_.azure_retry_max_s = 0.2;
  const std::string data = PatternBytes((1 << 20) + 5, 17);  // blocks: staged on disk
  WorkItem item = PlaceClaim("ro.bin", data, true, 0);
  ProcessWhileStagingFails(item, "staging_failing", 2);
  EXPECT_NE(inst_.staging_failing_at.load(), 0);
  ASSERT_TRUE(staging.SetReadOnly(false)) << staging.error();
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
}

// A staging copy that cannot be read back as it is sent (here it shrank between its copy and
// its upload) is staging's trouble: counted as staging_failing like staging's own failures, the
// attempt waits without counting against the file, and the next attempt copies it again.
TEST_F(FileProcessorAzuriteTest, AStagingCopyThatCannotBeReadBackCountsAsStagingFailing) {
  config_.max_file_attempts = 1;  // a failure that counted would dead-letter at once
  // One Put Blob from a staging file (larger than the in-memory copy's 1 MiB), so that the stage
  // span ends before any byte is sent: in blocks, senders may read the copy before it ends.
  config_.azure_put_blob_max_bytes = 4 << 20;
  const std::string data = PatternBytes((1 << 20) + 7, 38);
  WorkItem item = PlaceClaim("shrunk.bin", data, true, 0);
  int stages = 0;
  on_span_ = [&](const telemetry::SpanData& d) {
    if (d.name != "stage" || ++stages > 1) return;
    const auto staged = Entries(config_.staging_root);
    ASSERT_EQ(staged.size(), 1u);
    ASSERT_EQ(::truncate(fs::Join(config_.staging_root, staged[0]).c_str(), 1000), 0);
  };
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  EXPECT_EQ(stages, 2);
  EXPECT_NE(inst_.staging_failing_at.load(), 0);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "staging_failing"}}), 1);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// The volume failing every read of the claim for longer than the file's attempts last (an NFS
// server failing over: ESTALE, a soft mount's EIO) is the volume's trouble, not the file's: the
// attempts wait with backoff (on a simulated clock) without counting, the status says
// volume_failing while they do, and once the volume reads again the file is uploaded and the
// state clears.
TEST_F(FileProcessorAzuriteTest, AVolumeFailingToReadClaimsWaitsAndNeverDeadLetters) {
  config_.max_file_attempts = 1;           // a failure that counted would dead-letter at once
  config_.unavailable_counts_after_s = 0;  // and so would one shown up as this file's own
  SimulatedClock clock;
  constexpr int kFailures = 6;
  int reads = 0;
  int shown = 0;  // failures that found the one before them in the status
  FileProcessor::Deps deps{config_, clock, *blob_, inst_, tracer_, inflight_, {}};
  deps.claim_pread = [&](const std::string&, int fd, char* buf, size_t len, off_t at) {
    if (++reads > kFailures) return ::pread(fd, buf, len, at);
    if (inst_.volume.Failing(clock.Now(), 1min)) ++shown;
    errno = reads % 2 == 0 ? ESTALE : EIO;
    return ssize_t{-1};
  };
  FileProcessor processor(std::move(deps));
  const std::string data = PatternBytes(70'000, 40);
  WorkItem item = PlaceClaim("failover.bin", data, false, 0);  // no earlier run to count
  processor.Process(item, {});
  ExpectBlobHolds(item, data);
  EXPECT_EQ(reads, kFailures + 1);
  EXPECT_EQ(clock.SleepsForTest().size(), static_cast<size_t>(kFailures)) << "each one waited";
  EXPECT_EQ(shown, kFailures - 1);
  EXPECT_FALSE(inst_.volume.Failing(clock.Now(), 1min)) << "cleared by the read that worked";
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "volume"}}), kFailures);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  EXPECT_TRUE(Entries(config_.failed_root).empty());
  const auto errors = inst_.errors.Snapshot();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].count, static_cast<uint64_t>(kFailures));
  EXPECT_NE(errors[0].error.find("volume: read "), std::string::npos) << errors[0].error;
}

// A claim read whole by its own attempts (the hash of a recovered claim against a blob of its
// size) says nothing of the volume for other files: with no other file read, its failures keep
// waiting and never count, however long they last.
TEST_F(FileProcessorAzuriteTest, AClaimsOwnWholeReadsDoNotShowTheVolumeFineForOthers) {
  config_.max_file_attempts = 1;
  config_.unavailable_counts_after_s = 2;  // on the simulated clock: its waits pass it
  SimulatedClock clock;
  constexpr int kFailures = 12;
  int reads = 0;
  FileProcessor::Deps deps{config_, clock, *blob_, inst_, tracer_, inflight_, {}};
  deps.claim_pread = [&](const std::string&, int fd, char* buf, size_t len, off_t at) {
    // Odd reads (each attempt's hash of the whole claim) work; even ones (its copy) fail.
    if (++reads % 2 == 1 || reads > 2 * kFailures) return ::pread(fd, buf, len, at);
    errno = EIO;
    return ssize_t{-1};
  };
  FileProcessor processor(std::move(deps));
  const std::string data = PatternBytes(4'000, 45);
  WorkItem item = PlaceClaim("own-reads.bin", data, true, 0);
  // An earlier try of this claim's, with other bytes of the same size: hashed first.
  const std::string other = PatternBytes(4'000, 46);
  azure::BlobProperties earlier;
  earlier.metadata["claim"] = item.claim.nonce;
  ASSERT_TRUE(
      blob_->PutBlob(item.claim.BlobName(), azure::Body::FromMemory(other), Md5::Of(other), earlier)
          .ok());
  processor.Process(item, {});
  EXPECT_EQ(clock.SleepsForTest().size(), static_cast<size_t>(kFailures)) << "each one waited";
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_TRUE(Entries(config_.failed_root).empty());
  ExpectBlobHolds(item, data);
}

// One claim the volume cannot read (a bad sector: EIO at each read of it) while it reads the
// others: once no other file has failed so for unavailable_counts_after_s, and others are read
// between its failures, its failures are its own. It is dead-lettered after the attempt limit,
// bytes kept and the reason given, instead of holding a worker for good. Its reads and the
// others' take turns: one other file read whole before each failure of it.
TEST_F(FileProcessorAzuriteTest, AClaimTheVolumeFailsWhileItReadsOthersIsDeadLettered) {
  config_.max_file_attempts = 3;
  config_.unavailable_counts_after_s = 2;  // on the simulated clock: its waits pass it
  SimulatedClock clock;
  std::mutex mu;
  std::condition_variable cv;
  int others_read = 0;  // guarded by mu
  int failed = 0;       // guarded by mu
  bool over = false;    // guarded by mu
  FileProcessor::Deps deps{config_, clock, *blob_, inst_, tracer_, inflight_, {}};
  deps.claim_pread = [&](const std::string& path, int fd, char* buf, size_t len, off_t at) {
    if (path.find("bad-sector") == std::string::npos) return ::pread(fd, buf, len, at);
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, 10s, [&] { return over || others_read > failed; });
      ++failed;
    }
    cv.notify_all();
    errno = EIO;
    return ssize_t{-1};
  };
  FileProcessor processor(std::move(deps));
  const std::string data = PatternBytes(4'000, 41);
  WorkItem bad = PlaceClaim("bad-sector.bin", data, false, 0);
  std::stop_source stop;  // ends its worker if it is never dead-lettered
  std::jthread worker([&] {
    processor.Process(bad, stop.get_token());
    {
      std::lock_guard lock(mu);
      over = true;
    }
    cv.notify_all();
  });
  for (int i = 0; i < 100; ++i) {
    {
      std::unique_lock lock(mu);
      if (!cv.wait_for(lock, 10s, [&] { return over || failed >= i; }) || over) break;
    }
    processor.Process(PlaceClaim("good-" + std::to_string(i),
                                 PatternBytes(1'000, static_cast<uint32_t>(i)), false, 0),
                      {});
    {
      std::lock_guard lock(mu);
      ++others_read;
    }
    cv.notify_all();
  }
  {
    std::lock_guard lock(mu);
    over = true;
  }
  cv.notify_all();
  stop.request_stop();
  worker.join();
  ASSERT_EQ(Count(inst_.files_failed), 1);
  EXPECT_GT(failed, config_.max_file_attempts) << "its first failures did not count";
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "volume"}}), failed);
  EXPECT_GE(Count(inst_.files_processed), failed);
  EXPECT_FALSE(inst_.volume.Failing(clock.Now(), 1min)) << "the volume reads other files";
  const auto failed_files = Entries(config_.failed_root);
  ASSERT_EQ(failed_files.size(), 2u);
  EXPECT_EQ(nbu::test::ReadFile(fs::Join(config_.failed_root, failed_files[0])), data);
  const auto reason =
      nlohmann::json::parse(nbu::test::ReadFile(fs::Join(config_.failed_root, failed_files[1])));
  EXPECT_EQ(reason["attempts"], config_.max_file_attempts);
  EXPECT_NE(reason["error"].get<std::string>().find("volume: read "), std::string::npos)
      << reason.dump();
  EXPECT_NE(reason["error"].get<std::string>().find("Input/output error"), std::string::npos)
      << reason.dump();
}

// A worker stopped by a shutdown hands its run back: shutdowns never count against a file.
// A file to be dead-lettered while the failed root refuses it (here a file stands in its place)
// stays claimed, and a sweep queues it again. That run ended with a judgement, not with the
// process: it is handed back, so the pickups count no interruption, and once the failed root
// takes it the reason is the file's own, not "interrupted".
TEST_F(FileProcessorAzuriteTest, AFileTheFailedRootRefusesKeepsItsReasonForTheNextTry) {
  const WorkItem older = PlaceSuperseded("v.bin", 23);
  ASSERT_TRUE(fs::RemoveTree(config_.failed_root).ok());
  WriteFile(config_.failed_root, "");
  for (int pickup = 0; pickup < config_.max_file_attempts + 1; ++pickup) {
    processor_->Process(older, {});  // superseded: a permanent failure
    EXPECT_TRUE(fs::Stat(fs::Join(config_.processing_root, older.claim.Path())).ok())
        << "kept as it was: " << testing::PrintToString(Entries(config_.processing_root));
  }
  EXPECT_EQ(Count(inst_.files_failed), 0);
  // Decided once: the next pickups only try the move again, not the upload (read, send, judge).
  EXPECT_EQ(Count(inst_.files_superseded), 1);
  // Each pickup's refused move is in the status: the first pickup's judgement and move, and the
  // move of each of the others.
  const auto errors = inst_.errors.Snapshot();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].count, 2u + static_cast<uint64_t>(config_.max_file_attempts));
  EXPECT_NE(errors[0].error.find("not dead-lettered yet"), std::string::npos) << errors[0].error;
  ASSERT_EQ(::unlink(config_.failed_root.c_str()), 0);
  processor_->Process(older, {});
  EXPECT_EQ(Count(inst_.files_failed), 1);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "interrupted"}}), 0);
  ExpectOneDeadLetter("superseded");
}

// A suspect whose dead letter the failed root refused is only to be moved at its next pickup,
// not run: it does not wait to run alone behind the runs inside.
TEST_F(FileProcessorAzuriteTest, ASuspectOnlyToBeMovedDoesNotWaitToRunAlone) {
  WorkItem newer = PlaceClaim("moved.bin", PatternBytes(1000, 50), false, 0);
  processor_->Process(newer, {});
  WorkItem older = PlaceClaim("moved.bin", PatternBytes(1000, 51), false, 2);
  SetMtime(older, 1'700'000'000);
  ASSERT_TRUE(fs::RemoveTree(config_.failed_root).ok());
  WriteFile(config_.failed_root, "");  // a file in the failed root's place refuses the move
  nbu::test::Gate hold;
  std::atomic<bool> held_reading{false};
  const auto holding = ProcessorHolding("held", hold, held_reading);
  FileProcessor& processor = *holding;
  processor.Process(older, {});  // superseded, and the move refused: kept
  ASSERT_EQ(Count(inst_.files_superseded), 1);
  const WorkItem held = PlaceClaim("held.bin", PatternBytes(1000, 52), false, 1);
  std::jthread inside([&] { processor.Process(held, {}); });
  ASSERT_TRUE(WaitFor([&] { return held_reading.load(); }, 10s));
  test::CapturedLog waited("running a claim interrupted before beside the others");
  processor.Process(older, {});  // the move only, tried again
  EXPECT_FALSE(blob_->GetProperties(held.claim.BlobName())->has_value())
      << "it waited for the run inside to end";
  waited.Stop();
  EXPECT_EQ(waited.Lines().size(), 0u);
  EXPECT_TRUE(fs::Stat(fs::Join(config_.processing_root, older.claim.Path())).ok());
  hold.Open();
}

// A claim whose dead letter the failed root refused, and which another replica then ran (taken
// over after a stall, its run recorded there, and taken back), is judged again: the reason this
// process decided may no longer hold (that replica may have committed the file).
TEST_F(FileProcessorAzuriteTest, ARefusedDeadLetterRunElsewhereSinceIsJudgedAgain) {
  const WorkItem older = PlaceSuperseded("x.bin", 27);
  ASSERT_TRUE(fs::RemoveTree(config_.failed_root).ok());
  WriteFile(config_.failed_root, "");
  processor_->Process(older, {});  // superseded; the move refused, the run handed back
  EXPECT_EQ(Count(inst_.files_superseded), 1);
  ASSERT_EQ(::unlink(config_.failed_root.c_str()), 0);
  WorkItem back = older;
  back.claim = older.claim.WithRuns(1);  // the other replica's run, never handed back
  ASSERT_EQ(::rename(fs::Join(config_.processing_root, older.claim.Path()).c_str(),
                     fs::Join(config_.processing_root, back.claim.Path()).c_str()),
            0);
  processor_->Process(back, {});
  EXPECT_EQ(Count(inst_.files_superseded), 2) << "judged again";
  EXPECT_EQ(Count(inst_.files_failed), 1);
}

// A dead letter's move that landed with its reply lost (EIO), after which the look that would
// have told so failed too (ESTALE on the claim's name): the data is in the failed root under
// this claim's own name, so the move landed. Its reason is written and it is counted, rather
// than the claim taken for still there, with no reason beside the data.
TEST_F(FileProcessorAzuriteTest, ADeadLetterWhoseMoveLandedUntoldIsLookedFor) {
  const WorkItem older = PlaceSuperseded("w.bin", 25);
  bool moved = false;
  const nbu::test::ScopedPathPairCall rename_seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        const int rc = std::string_view(op) == "rename" ? ::rename(from.c_str(), to.c_str())
                                                        : ::link(from.c_str(), to.c_str());
        if (rc != 0 || moved || !to.starts_with(config_.failed_root)) return rc;
        moved = true;
        errno = EIO;  // carried out, the reply lost
        return -1;
      });
  const nbu::test::ScopedPathCall stat_seam([&](const char* op, const std::string& path) {
    return moved && std::string_view(op) == "statx" && path.starts_with(config_.processing_root)
               ? ESTALE
               : 0;
  });
  processor_->Process(older, {});  // superseded: dead-lettered
  ASSERT_TRUE(moved);
  EXPECT_EQ(Count(inst_.files_failed), 1);
  ExpectOneDeadLetter("superseded");
}

// A claim taken over by another replica (this one stalled past its lease) just before its dead
// letter is that replica's now: this one neither logs a failed dead letter at error level, nor
// keeps a reason for a pickup that will not come, nor tries to hand its run back.
TEST_F(FileProcessorAzuriteTest, AClaimTakenOverBeforeItsDeadLetterIsLeftToItsNewOwner) {
  const WorkItem older = PlaceSuperseded("t.bin", 31);
  const std::string taken =
      fs::Join(config_.processing_root, older.claim.WithOwner("other").Path());
  const nbu::test::ScopedPathPairCall rename_seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        if (std::string_view(op) == "rename" && to.starts_with(config_.failed_root)) {
          EXPECT_EQ(::rename(from.c_str(), taken.c_str()), 0);  // the takeover, just before
        }
        return std::string_view(op) == "rename" ? ::rename(from.c_str(), to.c_str())
                                                : ::link(from.c_str(), to.c_str());
      });
  test::CapturedLog logged("", LogLevel::kWarn);
  processor_->Process(older, {});  // superseded: to be dead-lettered
  logged.Stop();
  EXPECT_TRUE(fs::Stat(taken).ok());
  EXPECT_TRUE(Entries(config_.failed_root).empty());
  EXPECT_EQ(Count(inst_.files_failed), 0);
  for (const auto& e : inst_.errors.Snapshot()) {
    EXPECT_EQ(e.error.find("not dead-lettered yet"), std::string::npos) << e.error;
  }
  bool told = false;
  for (const std::string& line : logged.Lines()) {
    EXPECT_EQ(line.find("\"level\":\"error\""), std::string::npos) << line;
    EXPECT_EQ(line.find("not handed back"), std::string::npos) << line;
    told = told || line.find("claim vanished before its dead letter") != std::string::npos;
  }
  EXPECT_TRUE(told);
}

// The same when that replica also dead-letters it, and its move lands just before this one's
// (a takeover keeps the claim's nonce, which names the dead letter): its move is not taken for
// this one's, the file is not counted twice, and its reason is not replaced.
TEST_F(FileProcessorAzuriteTest, AClaimDeadLetteredByItsNewOwnerIsNotDeadLetteredTwice) {
  const WorkItem older = PlaceSuperseded("u.bin", 33);
  const std::string data = fs::Join(config_.failed_root, FailedPathFor(older.claim).DataPath());
  std::string claim;  // with its run in its name now
  std::string taken;  // the same under the other replica's name
  // The other replica's takeover, at this one's first look on the way to the dead letter (at its
  // claim, or at the dead letter's name) ...
  const nbu::test::ScopedPathCall stat_seam([&](const char* op, const std::string& path) {
    if (std::string_view(op) != "statx" || !taken.empty()) return 0;
    std::vector<std::string> claims = Entries(config_.processing_root);
    std::erase_if(claims, [](const std::string& e) { return !e.ends_with(".claimed"); });
    EXPECT_EQ(claims.size(), 1u) << testing::PrintToString(claims);
    if (claims.size() != 1) return 0;
    claim = fs::Join(config_.processing_root, claims[0]);
    if (path != claim && path != data) return 0;
    const std::optional<ClaimPath> parsed = ParseClaimPath(claims[0]);
    EXPECT_TRUE(parsed.has_value());
    taken = fs::Join(config_.processing_root, parsed->WithOwner("other").Path());
    EXPECT_EQ(::rename(claim.c_str(), taken.c_str()), 0);
    return 0;
  });
  // ... and its dead letter, just before this one's move there (if this one gets that far).
  const nbu::test::ScopedPathPairCall rename_seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        if (to == data && !taken.empty()) {
          EXPECT_TRUE(fs::MkdirAll(fs::Dirname(data)).ok());
          EXPECT_EQ(::rename(taken.c_str(), data.c_str()), 0);
        }
        return std::string_view(op) == "rename" ? ::rename(from.c_str(), to.c_str())
                                                : ::link(from.c_str(), to.c_str());
      });
  test::CapturedLog logged("", LogLevel::kWarn);
  processor_->Process(older, {});  // superseded: to be dead-lettered
  logged.Stop();
  ASSERT_FALSE(taken.empty());
  if (!fs::Stat(data).ok()) {  // this one stopped at the look: the other replica's move now
    EXPECT_TRUE(fs::MkdirAll(fs::Dirname(data)).ok());
    EXPECT_EQ(::rename(taken.c_str(), data.c_str()), 0);
  }
  EXPECT_EQ(Count(inst_.files_failed), 0) << "counted by the replica that moved it";
  EXPECT_EQ(Entries(config_.failed_root),
            std::vector<std::string>{FailedPathFor(older.claim).DataPath()})
      << "no reason of this replica's beside it";
  bool told = false;
  for (const std::string& line : logged.Lines()) {
    EXPECT_EQ(line.find("\"level\":\"error\""), std::string::npos) << line;
    told = told || line.find("claim vanished before its dead letter") != std::string::npos;
  }
  EXPECT_TRUE(told);
}

// The reason beside a dead letter exists only in the process that decided it: a passing error of
// the volume writing it (EIO, twice here, on the temp file's create) is tried again, or the bytes
// would sit in the failed root without it.
TEST_F(FileProcessorAzuriteTest, ADeadLetterReasonIsWrittenDespiteAPassingError) {
  const WorkItem older = PlaceSuperseded("y.bin", 29);
  int refused = 0;
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    const bool reason =
        std::string_view(op) == "create" && path.find(".failed.json") != std::string::npos;
    return reason && ++refused <= 2 ? EIO : 0;
  });
  processor_->Process(older, {});  // superseded: dead-lettered
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(Count(inst_.files_failed), 1);
  ExpectOneDeadLetter("superseded");
}

TEST_F(FileProcessorAzuriteTest, StoppedRunIsHandedBack) {
  for (int runs : {0, 1, 2}) {
    WorkItem item =
        PlaceClaim("stopped" + std::to_string(runs) + ".bin", PatternBytes(70'000, 14), true, runs);
    std::stop_source stop;
    stop.request_stop();
    processor_->Process(item, stop.get_token());
    const std::string left = fs::Join(config_.processing_root, item.claim.Path());
    EXPECT_TRUE(fs::Stat(left).ok()) << "left for recovery as " << item.claim.Path() << ": "
                                     << testing::PrintToString(Entries(config_.processing_root));
    ASSERT_EQ(::unlink(left.c_str()), 0);
  }
  EXPECT_EQ(Count(inst_.files_processed), 0);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// A run whose recording failed (the run-count rename got EIO from the file server) was never on
// the claim: a stop must not take one off, or a run that did end with the service is forgotten
// and a file that kills the service outlives the attempt limit.
TEST_F(FileProcessorAzuriteTest, AStopHandsBackOnlyARunThatWasRecorded) {
  WorkItem item = PlaceClaim("unrecorded.bin", PatternBytes(70'000, 38), true, 2);
  int renames = 0;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.runs_rename = [&renames](const std::string& from, const std::string& to) {
    if (++renames == 1) return Status(ErrorKind::kTransient, "rename: Input/output error");
    return fs::RenameEntry(from, to);
  };
  FileProcessor processor(std::move(deps));
  std::stop_source stop;
  stop.request_stop();
  processor.Process(item, stop.get_token());
  EXPECT_EQ(renames, 1);
  EXPECT_EQ(Entries(config_.processing_root), std::vector<std::string>{item.claim.Path()});
}

// A claim that could not be opened (ENOENT, a takeover's sign) is taken for another replica's
// only when a look at it says it is gone. Here that look fails (EIO: the volume, not a
// takeover): the claim is still this replica's, tried again, and uploaded.
TEST_F(FileProcessorAzuriteTest, AClaimIsNotTakenForGoneWhenTheLookAtItFails) {
  const std::string data = PatternBytes(70'000, 41);
  WorkItem item = PlaceClaim("unseen.bin", data, false);
  std::string claim;  // its name with this run's count
  const std::string aside = fs::Join(config_.processing_root, "aside");
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.runs_rename = [&](const std::string& from, const std::string& to) {
    Status s = fs::RenameEntry(from, to);
    if (s.ok() && claim.empty()) {
      claim = to;
      EXPECT_EQ(::rename(to.c_str(), aside.c_str()), 0);  // its open finds nothing
    }
    return s;
  };
  int failed_looks = 0;
  const nbu::test::ScopedPathCall seam([&](const char* op, const std::string& path) {
    if (std::string_view(op) != "stat" || path != claim || failed_looks > 0) return 0;
    ++failed_looks;
    EXPECT_EQ(::rename(aside.c_str(), claim.c_str()), 0);  // back, but this look fails
    return EIO;
  });
  FileProcessor processor(std::move(deps));
  processor.Process(item, {});
  EXPECT_EQ(failed_looks, 1);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  ExpectBlobHolds(item, data);
}

// A producer replaces its file by a directory of the same name just before the claim's rename,
// and the stat the claim compares comes from attributes an NFS client cached a moment too long
// (here: the directory's own, as if the scanner had seen it so). The rename moves the directory:
// it goes back to incoming whole, nothing is dead-lettered, and the scanner walks it as usual.
TEST_F(FileProcessorAzuriteTest, ADirectoryClaimedInAFilesPlaceGoesBackWhole) {
  WorkItem item = FreshItem("became-a-dir", "a file for now");
  const std::string src = fs::Join(config_.incoming_dir, "s/became-a-dir");
  ASSERT_EQ(::unlink(src.c_str()), 0);
  WriteFile(src + "/inside.txt", "the producer's new file");
  auto observed = fs::Stat(src);
  ASSERT_TRUE(observed.ok());
  item.observed = *observed;
  processor_->Process(item, {});
  EXPECT_EQ(nbu::test::ReadFile(src + "/inside.txt"), "the producer's new file");
  EXPECT_TRUE(Entries(config_.processing_root).empty())
      << testing::PrintToString(Entries(config_.processing_root));
  EXPECT_TRUE(Entries(config_.failed_root).empty())
      << testing::PrintToString(Entries(config_.failed_root));
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(Count(inst_.files_processed), 0);
}

// ... and a FIFO so claimed goes back too, but not over a file the producer wrote under that
// name meanwhile, which a rename would replace: it stays claimed and the trouble is reported,
// until the name is free.
TEST_F(FileProcessorAzuriteTest, AFifoClaimedInAFilesPlaceGoesBackOnlyToAFreeName) {
  const auto fifo_item = [&](const std::string& rel) {
    WorkItem item = FreshItem(rel, "a file for now");
    const std::string src = fs::Join(config_.incoming_dir, "s/" + rel);
    EXPECT_EQ(::unlink(src.c_str()), 0);
    EXPECT_EQ(::mkfifo(src.c_str(), 0644), 0);
    auto observed = fs::Stat(src);
    EXPECT_TRUE(observed.ok());
    if (observed.ok()) item.observed = *observed;
    return item;
  };
  const auto fifos_claimed = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(config_.processing_root)) {
      n += e.is_fifo() ? 1 : 0;
    }
    return n;
  };
  // The name free: the FIFO is back, nothing left claimed.
  processor_->Process(fifo_item("free"), {});
  EXPECT_TRUE(std::filesystem::is_fifo(fs::Join(config_.incoming_dir, "s/free")));
  EXPECT_EQ(fifos_claimed(), 0);
  EXPECT_TRUE(inst_.errors.Snapshot().empty());
  // The producer's new file there just before the move back: left as it is.
  const std::string back = fs::Join(config_.incoming_dir, "s/taken");
  const std::string fresh = PatternBytes(2'000, 52);
  const nbu::test::ScopedPathPairCall seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        if (to == back) WriteFile(back, fresh);
        return std::string_view(op) == "link" ? ::link(from.c_str(), to.c_str())
                                              : ::rename(from.c_str(), to.c_str());
      });
  processor_->Process(fifo_item("taken"), {});
  ASSERT_TRUE(std::filesystem::is_regular_file(back)) << "the producer's file was replaced";
  EXPECT_EQ(nbu::test::ReadFile(back), fresh);
  EXPECT_EQ(fifos_claimed(), 1) << "still claimed";
  const auto errors = inst_.errors.Snapshot();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].error.find("could not move it back"), std::string::npos) << errors[0].error;
  EXPECT_TRUE(Entries(config_.failed_root).empty());
  EXPECT_EQ(Count(inst_.files_failed), 0);
  // The same when the claim cannot be stat'ed (a passing error): what it is is not known, so it
  // is not renamed back over the producer's new file either.
  const std::string unknown = fs::Join(config_.incoming_dir, "s/unknown");
  const nbu::test::ScopedPathCall stat_fails([&](const char* op, const std::string& path) {
    if (std::string_view(op) != "statx" || !path.starts_with(config_.processing_root) ||
        path.find("/unknown~") == std::string::npos) {
      return 0;
    }
    WriteFile(unknown, fresh);
    return EIO;
  });
  processor_->Process(fifo_item("unknown"), {});
  ASSERT_TRUE(std::filesystem::is_regular_file(unknown)) << "the producer's file was replaced";
  EXPECT_EQ(nbu::test::ReadFile(unknown), fresh);
  EXPECT_EQ(fifos_claimed(), 2) << "still claimed";
  const auto told = inst_.errors.Snapshot();
  ASSERT_EQ(told.size(), 2u);
  EXPECT_NE(told[1].error.find("could not move it back"), std::string::npos) << told[1].error;
  EXPECT_NE(told[1].error.find("Input/output error"), std::string::npos) << told[1].error;
}

// A source rewritten in place while it is copied is never committed torn: the attempt is
// retried once the file holds still, and the blob gets the final bytes.
TEST_F(FileProcessorAzuriteTest, SourceChangingDuringTheCopyIsNeverCommittedTorn) {
  const size_t size = 8 << 20;
  std::string model = PatternBytes(size, 1);  // the writer's bytes, mirrored in memory
  WorkItem item = PlaceClaim("moving.bin", model, false);
  const std::string path = fs::Join(config_.processing_root, item.claim.Path());
  std::atomic<bool> stop{false};
  // Opened before Process renames the claim to record its run.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::thread writer([&] {
    const auto until = std::chrono::steady_clock::now() + 30s;  // the wait below, at most
    for (uint32_t round = 0; !stop.load() && std::chrono::steady_clock::now() < until; ++round) {
      const std::string chunk = PatternBytes(4096, round + 100);
      const size_t off = (round * 7919ull * 4096) % (size - 4096);
      ASSERT_EQ(::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)), 4096);
      model.replace(off, chunk.size(), chunk);
      std::this_thread::sleep_for(200us);
    }
    ::close(fd);
  });
  std::thread worker([&] { processor_->Process(item, {}); });
  // Written on until a copy was caught torn (not for a fixed time: a worker that starts late on
  // a loaded machine would copy after the writes).
  EXPECT_TRUE(WaitFor(
      [&] {
        return inst_.attempt_failures.Value({{"reason", "torn_copy"}}) >= 1;
      },
      30s));
  stop = true;
  writer.join();
  const std::string final_bytes = model;
  worker.join();
  auto got = blob_->GetBlob(item.claim.BlobName());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->size(), final_bytes.size());
  EXPECT_TRUE(*got == final_bytes) << "the committed blob holds the file's final bytes";
  EXPECT_GE(inst_.attempt_failures.Value({{"reason", "torn_copy"}}), 1)
      << "the copy made while the file was being written was detected as torn";
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// A rewrite in place that keeps the size and puts the mtime back (rsync --inplace -t, a tool
// that restores times) while the file is uploaded: size, mtime and inode are as they were, but
// the change time moved. The upload is torn, and the next one sends the bytes the file holds.
TEST_F(FileProcessorAzuriteTest, ARewriteThatRestoresTheMtimeIsStillTorn) {
  const std::string first = PatternBytes(50'000, 36);
  const std::string second = PatternBytes(50'000, 37);
  WorkItem item = PlaceClaim("touched-back.bin", first, false);
  // Opened before Process renames the claim to record its run.
  const int fd =
      ::open(fs::Join(config_.processing_root, item.claim.Path()).c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct stat before {};
  ASSERT_EQ(::fstat(fd, &before), 0);
  std::atomic<bool> rewritten{false};
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.method == "PUT" && !rewritten.exchange(true)) {
      EXPECT_EQ(::pwrite(fd, second.data(), second.size(), 0), static_cast<ssize_t>(second.size()));
      const timespec times[2] = {{0, UTIME_OMIT}, before.st_mtim};
      EXPECT_EQ(::futimens(fd, times), 0);
    }
    return nbu::test::FaultAction::Forward();
  });
  auto blob = ClientVia(proxy);
  FileProcessor processor(
      FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
  processor.Process(item, {});
  ::close(fd);
  EXPECT_TRUE(rewritten.load());
  ExpectBlobHolds(item, second);
  EXPECT_GE(inst_.attempt_failures.Value({{"reason", "torn_copy"}}), 1);
}

// A file larger than a block blob can be (50,000 blocks of 4,000 MiB) is dead-lettered at once,
// saying so, before anything is staged or sent. Sparse, on a tmpfs (which takes such a size);
// staging there too, so that a processor that did stage its blocks finds no room rather than
// filling this disk with 4,000 MiB blocks.
TEST_F(FileProcessorAzuriteTest, AFileLargerThanABlockBlobIsDeadLetteredAtOnce) {
  nbu::test::ScopedTmpfs volume(dir_.path() + "/volume", "1m");
  if (!volume.ok()) GTEST_SKIP() << volume.error();
  config_.processing_root = dir_.path() + "/volume/proc";
  config_.failed_root = dir_.path() + "/volume/failed";
  config_.staging_root = dir_.path() + "/volume/staging";
  WorkItem item = PlaceClaim("huge.bin", "x", false);
  const uint64_t size = uint64_t{191} << 40;  // 191 TiB
  ASSERT_EQ(::truncate(fs::Join(config_.processing_root, item.claim.Path()).c_str(),
                       static_cast<off_t>(size)),
            0);
  nbu::test::FaultProxy proxy(azurite_.port());
  auto blob = ClientVia(proxy);
  ProcessorVia(*blob, false)->Process(item, {});
  EXPECT_EQ(proxy.Count("comp=block&"), 0);
  ExpectOneDeadLetter("more than a block blob can");
  EXPECT_TRUE(Entries(config_.staging_root).empty());
  EXPECT_EQ(Count(inst_.files_failed), 1);
}

// Written to once its copy was made and checked, while that copy's blocks are still being sent:
// the copy is not committed (a commit discards the blocks staged but not listed, and the next
// attempt then sends every block again), and the next attempt sends only the block that changed.
TEST_F(FileProcessorAzuriteTest, AWriteWhileTheBlocksAreSentCostsOnlyTheBlockItChanged) {
  std::string data = PatternBytes(4 * (128 << 10), 41);  // four blocks, all copied at once
  WorkItem item = PlaceClaim("late-write.bin", data, false);
  const int fd =  // opened before Process renames the claim to record its run
      ::open(fs::Join(config_.processing_root, item.claim.Path()).c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::mutex mu;
  std::condition_variable cv;
  uint64_t read_to = 0;  // the end of the copy's furthest read
  const std::string patch = "late bytes";
  const size_t at = 2 * (128 << 10) + 100;  // in the third block
  std::atomic<bool> written{false};
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.target.find("comp=block&") != std::string::npos && !written.exchange(true)) {
      {  // the copy read to its end (its check follows at once: a stat)
        std::unique_lock lock(mu);
        EXPECT_TRUE(cv.wait_for(lock, 10s, [&] { return read_to >= 4 * (128u << 10); }));
      }
      std::this_thread::sleep_for(200ms);
      EXPECT_EQ(::pwrite(fd, patch.data(), patch.size(), static_cast<off_t>(at)),
                static_cast<ssize_t>(patch.size()));
    }
    return nbu::test::FaultAction::Forward();
  });
  auto blob = ClientVia(proxy);
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}};
  deps.claim_pread = [&](const std::string&, int src, char* buf, size_t len, off_t from) {
    const ssize_t got = ::pread(src, buf, len, from);
    std::lock_guard lock(mu);
    if (got > 0) read_to = std::max<uint64_t>(read_to, static_cast<uint64_t>(from + got));
    cv.notify_all();
    return got;
  };
  FileProcessor processor(std::move(deps));
  processor.Process(item, {});
  ::close(fd);
  ASSERT_TRUE(written.load());
  data.replace(at, patch.size(), patch);
  ExpectBlobHolds(item, data);
  EXPECT_GE(inst_.attempt_failures.Value({{"reason", "torn_copy"}}), 1);
  EXPECT_EQ(proxy.Count("comp=blocklist", "PUT"), 1) << "the torn copy was committed";
  EXPECT_EQ(proxy.Count("comp=block&", "PUT"), 5) << "four blocks, then the one changed";
  EXPECT_EQ(Count(inst_.blocks_resumed), 3);
}

// A marker with another name (a hard link) gets a ctime note that says so: that name's rename
// or unlink (its own marker collected) moves the ctime too, so the sweeper compares the note
// with the mtime only, even once the marker is the file's last name.
TEST_F(FileProcessorAzuriteTest, AMarkerWithAnotherNameGetsANoteThatSaysSo) {
  const std::string data = PatternBytes(1000, 39);
  WorkItem item = PlaceClaim("two-names.bin", data, false);
  const std::string other = fs::Join(config_.processing_root, "other-name");
  ASSERT_EQ(::link(fs::Join(config_.processing_root, item.claim.Path()).c_str(), other.c_str()), 0);
  processor_->Process(item, {});
  ExpectBlobHolds(item, data);
  const ClaimPath done = item.claim.WithRuns(2).WithState(ClaimState::kDone);
  const auto marker = fs::Stat(fs::Join(config_.processing_root, done.Path()));
  ASSERT_TRUE(marker.ok());
  EXPECT_EQ(inflight_.SettledMarker(done.Path()),
            (InFlight::SettledNote{marker->ctime_ns, true, marker->mtime_ns}));
}

// Past the bound on noted looks the upload still completes, and a warning (one per 10 minutes)
// says what the sweeper then misses; the notes already kept stay.
TEST_F(FileProcessorAzuriteTest, AMarkerPastTheBoundOnNotesIsToldOnce) {
  for (size_t i = 0; i < InFlight::kMaxSettled; ++i) {
    ASSERT_TRUE(inflight_.NoteSettledMarker("elsewhere/" + std::to_string(i), {1, false, 1}));
  }
  test::CapturedLog logged("more completion markers kept than", LogLevel::kWarn);
  std::vector<WorkItem> items;
  for (const char* name : {"past-bound-1.bin", "past-bound-2.bin"}) {
    items.push_back(PlaceClaim(name, PatternBytes(1000, 41), false));
    processor_->Process(items.back(), {});
    ExpectBlobHolds(items.back(), PatternBytes(1000, 41));
  }
  logged.Stop();
  for (const WorkItem& item : items) {
    const ClaimPath done = item.claim.WithRuns(2).WithState(ClaimState::kDone);
    EXPECT_TRUE(fs::Stat(fs::Join(config_.processing_root, done.Path())).ok()) << done.Path();
    EXPECT_EQ(inflight_.SettledMarker(done.Path()), std::nullopt);
  }
  EXPECT_EQ(inflight_.SettledMarker("elsewhere/0"), (InFlight::SettledNote{1, false, 1}));
  ASSERT_EQ(logged.Lines().size(), 1u) << "one warning, however many markers are past the bound";
  EXPECT_NE(logged.Lines()[0].find("past-bound-1.bin"), std::string::npos) << logged.Lines()[0];
}

// A file with another name (a hard link) has its ctime moved by that name's rename (another
// worker claiming it, say) while it is uploaded: no write, so no torn copy and no second upload.
TEST_F(FileProcessorAzuriteTest, AnotherNamesRenameDuringTheUploadIsNoTornCopy) {
  const std::string data = PatternBytes(50'000, 38);
  WorkItem item = PlaceClaim("linked.bin", data, false);
  const std::string other = fs::Join(config_.processing_root, "other-name");
  ASSERT_EQ(::link(fs::Join(config_.processing_root, item.claim.Path()).c_str(), other.c_str()), 0);
  std::atomic<bool> renamed{false};
  nbu::test::FaultProxy proxy(azurite_.port(), [&](const nbu::test::ProxyRequest& r) {
    if (r.method == "PUT" && !renamed.exchange(true)) {
      std::this_thread::sleep_for(20ms);  // a timestamp tick after the claim's own rename
      EXPECT_EQ(::rename(other.c_str(), (other + "-moved").c_str()), 0);
    }
    return nbu::test::FaultAction::Forward();
  });
  auto blob = ClientVia(proxy);
  FileProcessor processor(
      FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
  processor.Process(item, {});
  EXPECT_TRUE(renamed.load());
  ExpectBlobHolds(item, data);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "torn_copy"}}), 0);
  EXPECT_EQ(Count(inst_.files_processed), 1);
}

// A producer still writing through its open descriptor after the claim. After a torn copy the
// next one must not commit a snapshot taken while the producer merely paused: the file has to stay
// unchanged for the whole wait first. The writes follow the processor's torn copies, not a
// schedule of sleeps shorter than the minimum age, so a loaded machine (or ThreadSanitizer)
// oversleeping cannot open a real quiet window: each write lands well inside a 1 s wait.
TEST_F(FileProcessorAzuriteTest, AfterATornCopyTheFileMustStayUnchangedForTheWholeWait) {
  config_.min_file_age_s = 1;
  const auto min_age = 1000ms;
  const size_t size = 4 << 20;
  std::string model = PatternBytes(size, 2);
  WorkItem item = PlaceClaim("bursty.bin", model, false);
  const std::string path = fs::Join(config_.processing_root, item.claim.Path());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto torn = [&] { return inst_.attempt_failures.Value({{"reason", "torn_copy"}}); };
  auto write_burst = [&](uint32_t round, const std::function<bool()>& until) {
    for (uint32_t i = 0; !until(); ++i) {
      const std::string chunk = PatternBytes(4096, round * 1000 + i);
      const size_t off = ((round * 131 + i) * 7919ull * 4096) % (size - 4096);
      ASSERT_EQ(::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)), 4096);
      model.replace(off, chunk.size(), chunk);
      std::this_thread::sleep_for(200us);
    }
  };
  auto write_for = [&](uint32_t round, std::chrono::milliseconds how_long) {
    const auto end = std::chrono::steady_clock::now() + how_long;
    write_burst(round, [end] { return std::chrono::steady_clock::now() >= end; });
  };
  std::thread writer([&] {
    // The first copy is made while this goes on: torn (bounded, should the worker not start).
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    write_burst(0, [&] { return torn() >= 1 || std::chrono::steady_clock::now() >= give_up; });
    const auto torn_seen = std::chrono::steady_clock::now();
    // A pause, then a burst a quarter into the wait (750 ms before its end): the next look at
    // the file must see it and wait again. (A copy made right after the wait without that look
    // commits the file as it was in the pause, and the burst below never reaches storage.)
    std::this_thread::sleep_for(min_age / 4);
    write_for(1, 5ms);
    // Had the processor not looked again by half a wait after its wait's end, it committed the
    // snapshot of the pause: writing again shows it. Otherwise the producer is done.
    const auto deadline = torn_seen + min_age + min_age / 2;
    while (torn() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    if (torn() < 2) {
      std::this_thread::sleep_for(20ms);  // past the file system's timestamp granularity
      write_for(2, 5ms);
    }
    ::close(fd);
  });
  std::thread worker([&] { processor_->Process(item, {}); });
  writer.join();
  const std::string final_bytes = model;
  worker.join();
  auto got = blob_->GetBlob(item.claim.BlobName());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == final_bytes) << "a snapshot from between two bursts was committed";
  EXPECT_GE(torn(), 2);
  EXPECT_EQ(Count(inst_.files_failed), 0);
}

// A fresh file written to after the scanner found it stable (through a descriptor its producer
// still holds; on NFS the claim's lstat can answer from cached attributes): its first copy does
// not count, the file has to stay unchanged for the minimum age first. Before, the copy was
// made at once, committed and marked done, and a write a moment later went into the done
// marker, which GC deletes.
TEST_F(FileProcessorAzuriteTest, AFreshFileWrittenAfterItWasFoundStableMustSettleAgain) {
  config_.min_file_age_s = 1;
  const std::string src = fs::Join(config_.incoming_dir, "s/late.bin");
  std::string model = PatternBytes(64 << 10, 30);
  const WorkItem item = FreshItem("late.bin", model);
  const int fd = ::open(src.c_str(), O_WRONLY | O_CLOEXEC);  // follows the file into its claim
  ASSERT_GE(fd, 0);
  const std::string first = PatternBytes(4096, 31);
  const std::string second = PatternBytes(4096, 32);
  std::thread late;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.on_claim_settled = [&](const std::string&, const std::string&, bool) {
    // It grows: seen whatever the file system's timestamp granularity.
    ASSERT_EQ(::pwrite(fd, first.data(), first.size(), 64 << 10), 4096);
    late = std::thread([&] {  // well within the 1 s the file must then stay unchanged
      std::this_thread::sleep_for(50ms);
      EXPECT_EQ(::pwrite(fd, second.data(), second.size(), 8192), 4096);
    });
  };
  model += first;
  model.replace(8192, second.size(), second);
  FileProcessor processor(deps);
  processor.Process(item, {});
  late.join();
  ::close(fd);
  EXPECT_GE(inst_.attempt_failures.Value({{"reason", "torn_copy"}}), 1);
  ASSERT_EQ(Count(inst_.files_processed), 1);
  const auto done = Entries(config_.processing_root);
  ASSERT_EQ(done.size(), 1u);
  auto got = blob_->GetBlob(ParseClaimPath(done[0])->BlobName());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == model) << "the blob lacks a write made after the file was found stable";
}

// Every state change moves the producer's file itself, by rename, never by a copy and an unlink
// (DESIGN's invariant; a copy would hold the bytes twice, and lose them in between): the claim,
// its completion marker, its dead letter and the claim revived from it are the same inode.
TEST_F(FileProcessorAzuriteTest, EveryStateChangeKeepsTheProducersInode) {
  const auto inode = [](const std::string& path) -> ino_t {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  const WorkItem item = FreshItem("kept.bin", PatternBytes(1'000, 36));
  const ino_t produced = inode(fs::Join(config_.incoming_dir, "s/kept.bin"));
  ASSERT_NE(produced, 0u);
  ino_t claimed = 0;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.on_claim_settled = [&](const std::string&, const std::string&, bool) {
    const auto entries = Entries(config_.processing_root);
    ASSERT_EQ(entries.size(), 1u);
    claimed = inode(fs::Join(config_.processing_root, entries[0]));
  };
  FileProcessor processor(deps);
  processor.Process(item, {});
  ASSERT_EQ(Count(inst_.files_processed), 1);
  EXPECT_EQ(claimed, produced);
  const auto done = Entries(config_.processing_root);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(inode(fs::Join(config_.processing_root, done[0])), produced) << done[0];

  config_.max_file_attempts = 1;  // interrupted once: dead-lettered unsent
  WorkItem dead = PlaceClaim("dead.bin", PatternBytes(1'000, 37), true, 1);
  const ino_t placed = inode(fs::Join(config_.processing_root, dead.claim.Path()));
  ASSERT_NE(placed, 0u);
  processor.Process(dead, {});
  ASSERT_EQ(Count(inst_.files_failed), 1);
  const auto failed = Entries(config_.failed_root);
  ASSERT_EQ(failed.size(), 2u);  // the file and its reason
  EXPECT_EQ(inode(fs::Join(config_.failed_root, failed[0])), placed) << failed[0];
  std::vector<std::string> errors;
  const auto revived = processor.ReviveDeadLetters(&errors);
  ASSERT_EQ(revived.size(), 1u);
  EXPECT_EQ(inode(fs::Join(config_.processing_root, revived[0].Path())), placed);
}

// A fresh file written to while it waited in the queue (its producer was not done after all) is
// not claimed: it stays in incoming as it is, and the scanner is told to forget it (not held),
// so that it settles again before it is queued anew. Not a failure of any kind.
TEST_F(FileProcessorAzuriteTest, AFileChangedWhileQueuedIsLeftToSettleAgain) {
  const WorkItem item = FreshItem("queued.bin", PatternBytes(1'000, 38));
  const std::string src = fs::Join(config_.incoming_dir, "s/queued.bin");
  const std::string grown = PatternBytes(1'000, 38) + "more";
  WriteFile(src, grown);
  std::vector<std::tuple<std::string, std::string, bool>> settled;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.on_claim_settled = [&](const std::string& session, const std::string& rel, bool held) {
    settled.emplace_back(session, rel, held);
  };
  FileProcessor processor(deps);
  processor.Process(item, {});
  ASSERT_EQ(settled.size(), 1u);
  EXPECT_EQ(settled[0], std::make_tuple(std::string("s"), std::string("queued.bin"), false));
  EXPECT_EQ(nbu::test::ReadFile(src), grown);
  EXPECT_TRUE(Entries(config_.processing_root).empty());
  EXPECT_EQ(inflight_.size(), 0u);
  EXPECT_EQ(Count(inst_.files_processed), 0);
  EXPECT_EQ(Count(inst_.files_failed), 0);
  EXPECT_EQ(inst_.attempt_failures.Value({{"reason", "claim"}}), 0);
  EXPECT_TRUE(inst_.errors.Snapshot().empty());
}

// A fresh claim is registered in flight before its rename, so that no sweep can find it claimed
// but not in flight and queue it a second time as an orphan; once processed it is not in flight.
TEST_F(FileProcessorAzuriteTest, AFreshClaimIsInFlightFromItsRename) {
  const WorkItem item = FreshItem("new.bin", PatternBytes(1'000, 35));
  std::vector<std::string> claimed_not_in_flight;
  size_t claims_seen = 0;
  FileProcessor::Deps deps{config_, RealClock::Instance(), *blob_, inst_, tracer_, inflight_, {}};
  deps.on_claim_settled = [&](const std::string&, const std::string&, bool) {
    for (const auto& rel : Entries(config_.processing_root)) {
      ++claims_seen;
      if (!inflight_.Contains(rel)) claimed_not_in_flight.push_back(rel);
    }
  };
  FileProcessor processor(deps);
  processor.Process(item, {});
  EXPECT_EQ(claims_seen, 1u);
  EXPECT_TRUE(claimed_not_in_flight.empty()) << claimed_not_in_flight[0];
  EXPECT_EQ(inflight_.size(), 0u);
  EXPECT_EQ(Count(inst_.files_processed), 1);
}

// A claim rename carried out with its reply lost, while the producer put its next version under
// the same name (DESIGN: a second `x` can arrive while the first is in flight): RenameEntry sees
// the source there and cannot tell the rename landed. The next try must not rename the new file
// over the claim (rename replaces its target), which would unlink the first version unsent: the
// claim is found landed and uploaded, and the new version waits in incoming for its own claim.
TEST_F(FileProcessorAzuriteTest, AClaimWhoseReplyWasLostIsNotRenamedOver) {
  const std::string src = fs::Join(config_.incoming_dir, "s/again.bin");
  const std::string first = PatternBytes(1'000, 38);
  const std::string second = PatternBytes(2'000, 39);
  const WorkItem item = FreshItem("again.bin", first);
  int lost = 0;
  const nbu::test::ScopedPathPairCall seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        const int rc = std::string_view(op) == "rename" ? ::rename(from.c_str(), to.c_str())
                                                        : ::link(from.c_str(), to.c_str());
        if (rc != 0 || lost++ > 0 || from != src) return rc;
        WriteFile(src, second);  // the producer's next version, under the same name
        errno = EIO;             // carried out, the reply lost
        return -1;
      });
  processor_->Process(item, {});
  ASSERT_GE(lost, 1);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  // Sizes first, so that a failure prints 1000 or 2000 rather than the bytes.
  const std::string left = nbu::test::ReadFile(src);
  EXPECT_EQ(left.size(), second.size());
  EXPECT_TRUE(left == second) << "the next version is left for its own claim";
  const auto done = Entries(config_.processing_root);
  ASSERT_EQ(done.size(), 1u);
  const std::string claimed = nbu::test::ReadFile(fs::Join(config_.processing_root, done[0]));
  EXPECT_EQ(claimed.size(), first.size()) << done[0];
  EXPECT_TRUE(claimed == first) << done[0];
  const auto claim = ParseClaimPath(done[0]);
  ASSERT_TRUE(claim.has_value()) << done[0];
  WorkItem uploaded = item;
  uploaded.claim = *claim;
  ExpectBlobHolds(uploaded, first);
  EXPECT_EQ(inflight_.size(), 0u);
}

// The same lost reply with the server unable to say, for a while, whether the claim is there:
// the next try takes a name of its own and finds the source gone. Before it reads that as
// another replica's claim, it asks after the names it tried: the first one holds the file, which
// is claimed and uploaded now, not counted as lost and left for the sweep.
TEST_F(FileProcessorAzuriteTest, AClaimThatLandedUnseenIsFoundOnceTheSourceIsGone) {
  const std::string src = fs::Join(config_.incoming_dir, "s/unseen.bin");
  const std::string data = PatternBytes(1'000, 40);
  const WorkItem item = FreshItem("unseen.bin", data);
  std::string first_target;
  const nbu::test::ScopedPathPairCall rename_seam(
      [&](const char* op, const std::string& from, const std::string& to) {
        const int rc = std::string_view(op) == "rename" ? ::rename(from.c_str(), to.c_str())
                                                        : ::link(from.c_str(), to.c_str());
        if (rc != 0 || !first_target.empty() || from != src) return rc;
        first_target = to;
        errno = EIO;  // carried out, the reply lost
        return -1;
      });
  int looks_failed = 0;
  const nbu::test::ScopedPathCall stat_seam([&](const char* op, const std::string& path) {
    // RenameEntry's look and the try's own: the server cannot answer for them.
    return std::string_view(op) == "statx" && path == first_target && looks_failed++ < 2 ? ESTALE
                                                                                         : 0;
  });
  processor_->Process(item, {});
  ASSERT_FALSE(first_target.empty());
  EXPECT_EQ(looks_failed, 3) << "two failed looks, then the one that found it";
  EXPECT_EQ(Count(inst_.claim_conflicts), 0);
  EXPECT_EQ(Count(inst_.files_processed), 1);
  EXPECT_EQ(inflight_.size(), 0u);
  const auto done = Entries(config_.processing_root);
  ASSERT_EQ(done.size(), 1u);
  const auto claim = ParseClaimPath(done[0]);
  ASSERT_TRUE(claim.has_value()) << done[0];
  EXPECT_EQ(fs::Join(config_.processing_root, claim->WithState(ClaimState::kClaimed).Path()),
            first_target);
  WorkItem uploaded = item;
  uploaded.claim = *claim;
  ExpectBlobHolds(uploaded, data);
}

// A write during the upload itself (the commit is held here until it has happened): the claim is
// checked again once the blob is committed, and a claim that changed is not marked done; the
// next attempt replaces the blob with what the file holds then.
TEST_F(FileProcessorAzuriteTest, AWriteDuringTheUploadIsNotLeftOutOfStorage) {
  config_.min_file_age_s = 0.2;
  auto gate = std::make_shared<nbu::test::Gate>();
  auto held = std::make_shared<std::atomic<bool>>(false);
  nbu::test::FaultProxy proxy(azurite_.port(), [gate, held](const nbu::test::ProxyRequest& r) {
    if (r.method == "PUT" && r.target.find("during.bin") != std::string::npos &&
        !held->exchange(true)) {
      gate->Wait(30s);  // the first upload only
    }
    return nbu::test::FaultAction::Forward();
  });
  const auto open_at_exit = gate->OpenAtExit();
  auto blob = ClientVia(proxy);
  FileProcessor processor(
      FileProcessor::Deps{config_, RealClock::Instance(), *blob, inst_, tracer_, inflight_, {}});
  std::string model = PatternBytes(100'000, 33);
  WorkItem item = PlaceClaim("during.bin", model, false);
  // The producer's descriptor follows the file through the claim's renames.
  const int fd = ::open(fs::Join(config_.processing_root, item.claim.Path()).c_str(),
                        O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::thread worker([&] { processor.Process(item, {}); });
  ASSERT_TRUE(WaitFor([&] { return proxy.Count("during.bin", "PUT") >= 1; }, 30s));
  const std::string tail = PatternBytes(5'000, 34);
  EXPECT_EQ(::write(fd, tail.data(), tail.size()), 5'000);
  ::close(fd);
  model += tail;
  gate->Open();
  worker.join();
  EXPECT_GE(inst_.attempt_failures.Value({{"reason", "torn_copy"}}), 1);
  ExpectBlobHolds(item, model);
}

}  // namespace
}  // namespace nbu::core
