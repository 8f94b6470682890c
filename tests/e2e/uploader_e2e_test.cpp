// The uploader binary end to end against a real Azurite: odd names and sizes byte-exact, slow
// producers, kill -9 and restart, replicas sharing a volume, configuration errors, the API.
#include "core/config.h"
#include "core/file_processor.h"
#include "core/layout.h"
#include "e2e_support.h"
#include "support/fault_proxy.h"
#include "support/gate.h"
#include "support/tmpfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

namespace nbu::test {
namespace {

using namespace std::chrono_literals;

// What `command`, run by /bin/sh, writes to its standard output.
std::string RunShell(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  for (size_t n = 0; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

class UploaderE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    container_ = FreshContainer("e2e");
    blobs_ = MakeBlobClient(azurite_, container_);
    ASSERT_TRUE(blobs_->CreateContainerIfMissing().ok());
  }

  // The blob of <session>/<rel>, if it exists.
  std::optional<std::string> Blob(const std::string& session, const std::string& rel) {
    return GetBlobOf(*blobs_, session, rel);
  }

  // Waits until every expected file is in storage byte for byte.
  void ExpectAllUploaded(const std::string& session,
                         const std::map<std::string, std::string>& files,
                         std::chrono::seconds timeout = 60s) {
    std::map<std::string, std::string> missing = files;
    WaitFor(
        [&] {
          for (auto it = missing.begin(); it != missing.end();) {
            auto got = Blob(session, it->first);
            it = got && *got == it->second ? missing.erase(it) : std::next(it);
          }
          return missing.empty();
        },
        timeout);
    for (const auto& [rel, data] : missing) {
      auto got = Blob(session, rel);
      ADD_FAILURE() << "not uploaded byte-exact: " << rel << " (blob "
                    << (got ? std::to_string(got->size()) + " bytes" : "missing") << ", file "
                    << data.size() << " bytes)";
    }
  }

  // Nothing left behind: no files in incoming, no claims or markers, no staging copies.
  void ExpectNothingLeft(const std::vector<std::string>& staging_dirs) {
    EXPECT_TRUE(WaitFor([&] { return ClaimsLeft() == 0; }, 30s))
        << ClaimsLeft() << " claim entries left";
    EXPECT_TRUE(Volume::Files(volume_.incoming()).empty());
    for (const auto& s : staging_dirs) EXPECT_TRUE(Volume::Files(s).empty()) << s;
    EXPECT_TRUE(Volume::Files(volume_.failed()).empty());
  }
  size_t ClaimsLeft() { return volume_.ClaimEntries(); }
  std::string Drop(const std::string& session, const std::string& rel, const std::string& data) {
    WriteFile(volume_.incoming() + "/" + session + "/" + rel, data);
    return data;
  }

  Azurite& azurite_ = SharedAzurite();  // one for the suite
  Volume volume_;
  std::string container_;
  std::unique_ptr<azure::BlobClient> blobs_;
};

// Every size (empty, one Put Blob, blocks with a short last one) and names with spaces,
// Unicode, URL metacharacters, the service's own suffixes and, with APP_INCLUDE_DOT_FILES,
// dot-files and dot-directories: each blob holds the file's bytes under its own name.
TEST_F(UploaderE2E, UploadsEverySizeAndOddNameByteExact) {
  UploaderProcess up(azurite_, volume_, container_, "r1",
                     {{"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"},
                      {"APP_AZURE_BLOCK_SIZE", "262144"},
                      {"APP_INCLUDE_DOT_FILES", "true"}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"s1"})").status, 200);
  std::map<std::string, std::string> files;
  uint32_t seed = 1;
  for (const auto& [rel, size] : std::vector<std::pair<std::string, size_t>>{
           {"empty.bin", 0},
           {"one.bin", 1},
           {"k64.bin", 64 << 10},
           {"m9.bin", 9 << 20},                 // 36 blocks of 256 KiB
           {"blocks-odd.bin", (3 << 20) + 17},  // last block short
           {"with space.txt", 10},
           {"ünïcödé-файл-文件.csv", 10},
           {"pct%41%2F.txt", 10},
           {"hash#frag.txt", 10},
           {"semi;colon.txt", 10},
           {"plus+sign.txt", 10},
           {"amp&and=eq.txt", 10},
           {"quote'single\"double.txt", 10},
           {"x.completed", 10},
           {"x.processing", 10},
           {"x~r1~0123456789abcdef.claimed", 10},
           {"nested/a/b/c/deep.bin", 100},
           {"nested/a/sibling.bin", 100},
           {".zattrs", 10},  // dot-files, with APP_INCLUDE_DOT_FILES
           {"store.zarr/.zgroup", 10},
           {".hidden/..dots", 10},
       }) {
    files[rel] = Drop("s1", rel, PatternBytes(size, seed++));
  }
  // A file with a known mtime, to the nanosecond, set before it reaches incoming/.
  const std::string dated = volume_.dir.path() + "/dated.bin";
  files["dated.bin"] = PatternBytes(100, seed++);
  WriteFile(dated, files["dated.bin"]);
  const timespec times[2] = {{1'000'000'000, 123'456'789}, {1'000'000'000, 123'456'789}};
  ASSERT_EQ(::utimensat(AT_FDCWD, dated.c_str(), times, 0), 0);
  ASSERT_EQ(::rename(dated.c_str(), (volume_.incoming() + "/s1/dated.bin").c_str()), 0);
  ExpectAllUploaded("s1", files);
  // Under the very names: storage's listing, not a read through the same encoding.
  EXPECT_EQ(ListedFiles(*blobs_), FilesOf("s1", files));
  // The whole-file MD5 is on every blob: computed by storage for a file sent in one Put Blob
  // (Azurite 3.37 checks its CRC-64, as the start-up probe found), set on commit for blocks.
  for (const auto& name : {"m9.bin", "k64.bin", "dated.bin"}) {
    std::optional<azure::BlobInfo> props;
    for (const auto& blob : BlobNames("s1", name)) {
      auto got = blobs_->GetProperties(blob);
      ASSERT_TRUE(got.ok()) << blob << ": " << got.status().ToString();
      if (got->has_value()) {
        props = std::move(*got);
        break;
      }
    }
    ASSERT_TRUE(props.has_value()) << name;
    ASSERT_TRUE(props->content_md5.has_value()) << name;
    EXPECT_EQ(*props->content_md5, Md5::Of(files[name])) << name;
    EXPECT_EQ(props->metadata.at("source_size"), std::to_string(files[name].size()));
    // The mtime twice: ours in nanoseconds, and rclone's "mtime" for rclone's tools.
    EXPECT_EQ(props->metadata.at("mtime"),
              core::RcloneMtime(std::stoll(props->metadata.at("source_mtime_ns"))));
    if (std::string(name) == "dated.bin") {
      EXPECT_EQ(props->metadata.at("source_mtime_ns"), "1000000000123456789");
      EXPECT_EQ(props->metadata.at("mtime"), "2001-09-09T01:46:40.123456789Z");
    }
  }
  ExpectNothingLeft({up.staging()});
  const auto status = up.Status();
  EXPECT_EQ(status["counters"]["uploaded"], files.size());
  EXPECT_EQ(status["counters"]["failed"], 0);
  EXPECT_EQ(status["put_blob_checksum"], "crc64");
}

// Resident memory, in KiB, of process `pid` as /proc/<pid>/status gives `field` (VmRSS, VmHWM);
// -1 when it cannot be read.
long StatusKib(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

// The service keeps nothing per file once the file is done, and holds no file's bytes in
// memory beyond its fixed buffers. Resident memory after many batches of small files (in the
// same directories) is that after the third: the first ones warm the allocator's arenas, the
// queue and the latency window. The peak rises by a few buffers, not by a block per request in
// flight, when a file sent in 8 MiB blocks and one at the 64 MiB Put Blob limit pass through.
// Under a sanitizer resident memory is mostly the sanitizer's, so the test is skipped there.
TEST_F(UploaderE2E, MemoryGrowsWithNeitherTheFilesDoneNorTheirSize) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "resident memory under a sanitizer is the sanitizer's";
#endif
  UploaderProcess up(azurite_, volume_, container_, "r1", {{"APP_MIN_FILE_AGE_S", "0.2"}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"mem"})").status, 200);
  const int pid = up.process().pid();
  auto uploaded = [&](int n) {
    return WaitFor([&] { return up.Status()["counters"]["uploaded"].get<int>() >= n; }, 120s);
  };
  constexpr int kBatches = 8;
  constexpr int kFiles = 2000;
  std::vector<long> rss_kib;
  for (int b = 0; b < kBatches; ++b) {
    for (int i = 0; i < kFiles; ++i) {
      Drop("mem", "d" + std::to_string(i % 16) + "/b" + std::to_string(b) + "-" + std::to_string(i),
           PatternBytes(4 << 10, static_cast<uint32_t>(b * kFiles + i)));
    }
    ASSERT_TRUE(uploaded((b + 1) * kFiles)) << up.Status().dump();
    rss_kib.push_back(StatusKib(pid, "VmRSS"));
  }
  // 80 bytes kept per file would be 781 KiB over the last 10,000 files.
  EXPECT_LT(rss_kib.back() - rss_kib[2], 781)
      << "VmRSS after each batch, KiB: " << ::testing::PrintToString(rss_kib);

  const long peak_before = StatusKib(pid, "VmHWM");
  Drop("mem", "big/blocks.bin", PatternBytes(160 << 20, 7));
  Drop("mem", "big/at-limit.bin", PatternBytes(64 << 20, 8));
  ASSERT_TRUE(uploaded(kBatches * kFiles + 2)) << up.Status().dump();
  const long peak_after = StatusKib(pid, "VmHWM");
  // Four 8 MiB blocks in flight held in memory would add 32 MiB.
  EXPECT_LT(peak_after - peak_before, 16 << 10)
      << "VmHWM " << peak_before << " -> " << peak_after << " KiB";
  EXPECT_EQ(up.Status()["counters"]["uploaded"], kBatches * kFiles + 2);
  EXPECT_EQ(up.Status()["counters"]["failed"], 0);
}

// Names Azure would store under another name (a backslash becomes '/', a segment's last '.' is
// dropped) or refuse (bytes that are not UTF-8) get blob names of their own, so no two files
// share a blob; a name of all 255 bytes an entry allows is claimed, staged and uploaded; a name
// Azure would refuse for its length is dead-lettered and kept.
TEST_F(UploaderE2E, NamesAzureWouldChangeOrRefuseNeverShareABlob) {
  UploaderProcess up(
      azurite_, volume_, container_, "r1",
      {{"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"}, {"APP_AZURE_BLOCK_SIZE", "262144"}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"n"})").status, 200);
  std::string cjk;
  for (int i = 0; i < 85; ++i) cjk += "\u6587";                // 文: 255 bytes
  const std::string longest = std::string(250, 'L') + ".bin";  // 254 bytes
  std::map<std::string, std::string> blobs;                    // blob name below <date>/n/ -> bytes
  uint32_t seed = 1;
  for (const auto& [file, blob, size] : std::vector<std::tuple<std::string, std::string, size_t>>{
           {"col/x\\y.bin", "col/x\uFF3Cy.bin", 100},  // x＼y.bin
           {"col/x/y.bin", "col/x/y.bin", 100},
           {"dot.", "dot\uFF0E", 10},  // dot．
           {"dot", "dot", 10},
           {"caf\xE9.txt", "caf\u201BE9.txt", 10},  // caf‛E9.txt
           {"ctl\x01.txt", "ctl\u2401.txt", 10},    // ctl␁.txt
           {"deep/" + cjk, "deep/" + cjk, 10},
           {longest, longest, (3 << 20) + 5},  // in blocks, through a staging file
       }) {
    blobs[blob] = Drop("n", file, PatternBytes(size, seed++));
  }
  // 5 x 250 + 254 characters: more than the 1,024 Azure allows (Azurite takes it).
  std::string too_long_dir;
  for (int i = 0; i < 5; ++i) too_long_dir += std::string(250, static_cast<char>('a' + i)) + "/";
  const std::string kept = Drop("n", too_long_dir + longest, PatternBytes(1000, seed++));
  ExpectAllUploaded("n", blobs);
  EXPECT_EQ(ListedFiles(*blobs_), FilesOf("n", blobs));  // as storage names them; no other
  ASSERT_TRUE(WaitFor([&] { return up.Status()["dead_letter"]["count"] == 1; }, 30s))
      << up.Status().dump();
  const auto failed = Volume::Files(volume_.failed());
  ASSERT_EQ(failed.size(), 2u);
  std::string data_file, reason_file;
  for (const auto& f : failed) (f.ends_with(".json") ? reason_file : data_file) = f;
  EXPECT_EQ(ReadFile(volume_.failed() + "/" + data_file), kept);
  const auto reason = nlohmann::json::parse(ReadFile(volume_.failed() + "/" + reason_file));
  EXPECT_EQ(reason["attempts"], 1);  // permanent: not retried
  EXPECT_NE(reason["error"].get<std::string>().find("Azure allows at most 1024"), std::string::npos)
      << reason.dump();
  const auto status = up.Status();
  EXPECT_EQ(status["counters"]["uploaded"], blobs.size());
  EXPECT_EQ(status["counters"]["failed"], 1);
  EXPECT_TRUE(WaitFor([&] { return ClaimsLeft() == 0; }, 30s)) << ClaimsLeft();
  EXPECT_TRUE(Volume::Files(volume_.incoming()).empty());
  EXPECT_TRUE(Volume::Files(up.staging()).empty());
}

TEST_F(UploaderE2E, FileAppendedSlowlyIsUploadedOnceWhenComplete) {
  // With the MD5 computed here for storage to check (what a server that ignores CRC-64 gets).
  // The minimum age is 8 times the writes' gap, so only a stall of the writer of about 2 s
  // makes the file look complete early.
  UploaderProcess up(azurite_, volume_, container_, "r1",
                     {{"APP_MIN_FILE_AGE_S", "2.0"}, {"APP_AZURE_PUT_BLOB_CHECKSUM", "md5"}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  EXPECT_EQ(up.Status()["put_blob_checksum"], "md5");
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"slow"})").status, 200);
  const std::string path = volume_.incoming() + "/slow/instrument.dat";
  WriteFile(path, "");
  std::string all;
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    for (int i = 0; i < 12; ++i) {  // 12 chunks, 250 ms apart: 3 s of writing
      const std::string chunk = PatternBytes(4096, static_cast<uint32_t>(i + 100));
      out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      out.flush();
      all += chunk;
      std::this_thread::sleep_for(250ms);
    }
  }
  ExpectAllUploaded("slow", {{"instrument.dat", all}});
  std::this_thread::sleep_for(1500ms);  // time for a wrong second upload to show up
  EXPECT_EQ(up.Status()["counters"]["uploaded"], 1);
}

// A producer that keeps its file open and writes on after a pause longer than the minimum age:
// the file is uploaded at the pause, and the later bytes go into the completion marker the file
// became. They are not lost with it: the sweep claims the marker again and the blob ends with
// every byte, in a second upload. (Markers kept for the pause: one deleted first takes the
// later bytes with it, into a deleted file.)
TEST_F(UploaderE2E, BytesWrittenAfterTheUploadReachTheBlobToo) {
  UploaderProcess up(azurite_, volume_, container_, "r1", {{"APP_COMPLETED_RETENTION_S", "60"}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"late"})").status, 200);
  const std::string path = volume_.incoming() + "/late/run.log";
  WriteFile(path, "");
  std::ofstream out(path, std::ios::binary | std::ios::app);
  const std::string head = PatternBytes(10'000, 41);
  out << head << std::flush;
  ASSERT_TRUE(WaitFor([&] { return up.Status()["counters"]["uploaded"] == 1; }, 30s));
  const std::string tail = PatternBytes(5'000, 42);
  out << tail << std::flush;
  out.close();
  ExpectAllUploaded("late", {{"run.log", head + tail}}, 30s);
  // Counted once the second upload's completion rename is done, a moment after its commit.
  EXPECT_TRUE(WaitFor([&] { return up.Status()["counters"]["uploaded"] == 2; }, 10s))
      << up.Status().dump();
  EXPECT_EQ(up.Status()["counters"]["failed"], 0);
}

TEST_F(UploaderE2E, KillNineMidIngestThenRestartLosesNothing) {
  const std::map<std::string, std::string> env = {{"APP_AZURE_PUT_BLOB_MAX_BYTES", "1048576"},
                                                  {"APP_AZURE_BLOCK_SIZE", "262144"},
                                                  {"APP_MIN_FILE_AGE_S", "0.2"}};
  std::map<std::string, std::string> files;
  for (int i = 0; i < 150; ++i) {
    files["batch/f" + std::to_string(i) + ".bin"] =
        PatternBytes(64 << 10, static_cast<uint32_t>(i));
  }
  files["big/a.bin"] = PatternBytes(8 << 20, 7);
  files["big/b.bin"] = PatternBytes(6 << 20, 8);
  {
    UploaderProcess up(azurite_, volume_, container_, "r1", env);
    ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
    ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"crash"})").status, 200);
    for (const auto& [rel, data] : files) Drop("crash", rel, data);
    ASSERT_TRUE(WaitFor([&] { return up.Status().value("uploaded", 0) >= 20; }, 60s));
    up.process().Signal(SIGKILL);
    ASSERT_EQ(up.process().Wait(10s), 128 + SIGKILL);
  }
  EXPECT_GT(Volume::Files(volume_.incoming()).size() + ClaimsLeft(), 0u) << "killed too late";
  // The same replica comes back: recovery finishes its claims, then it keeps watching.
  UploaderProcess again(azurite_, volume_, container_, "r1", env);
  ASSERT_TRUE(again.WaitReady()) << again.process().ReadLog();
  ExpectAllUploaded("crash", files, 120s);
  ExpectNothingLeft({again.staging()});
  EXPECT_EQ(again.Status()["session"]["name"], "crash");
}

// pod-a is killed while it holds claims, and never comes back; pod-b (a new name, as after
// rescheduling) takes every one of them over once pod-a's lease has expired, and finishes them.
TEST_F(UploaderE2E, ClaimsOfADeadReplicaAreFinishedByASurvivor) {
  const std::map<std::string, std::string> env = {{"APP_LEASE_TIMEOUT_S", "2"},
                                                  {"APP_MIN_FILE_AGE_S", "0.2"}};
  std::map<std::string, std::string> files;
  for (int i = 0; i < 100; ++i)
    files["f" + std::to_string(i)] = PatternBytes(32 << 10, static_cast<uint32_t>(i));
  // pod-a reaches storage through a proxy that holds each upload of a session file until pod-a
  // is dead, then drops it unsent: whatever pod-a has claimed when it is killed, it has not
  // finished, and pod-b must.
  auto hold = std::make_shared<Gate>();
  FaultProxy proxy(azurite_.port(), [hold](const ProxyRequest& r) {
    if (r.method != "PUT" || r.target.find("/ha/") == std::string::npos) {
      return FaultAction::Forward();
    }
    hold->Wait(60s);
    return FaultAction::DropBefore();
  });
  const auto open_at_exit = hold->OpenAtExit();
  auto claims_of = [&](const std::string& replica) {
    size_t n = 0;
    for (const auto& f : Volume::Files(volume_.processing())) {
      auto c = core::ParseClaimPath(f);
      n += c && c->state == core::ClaimState::kClaimed && c->owner == replica ? 1U : 0U;
    }
    return n;
  };
  {
    auto via_proxy = env;
    via_proxy["APP_AZURE_CONNECTION_STRING"] = ConnectionStringVia(proxy.port());
    UploaderProcess a(azurite_, volume_, container_, "pod-a", via_proxy);
    ASSERT_TRUE(a.WaitReady()) << a.process().ReadLog();
    ASSERT_EQ(a.Call("POST", "/v1/watch/start", R"({"session_name":"ha"})").status, 200);
    for (const auto& [rel, data] : files) Drop("ha", rel, data);
    // Uploads under way, each one of pod-a's claims.
    ASSERT_TRUE(WaitFor([&] { return proxy.Count("/ha/", "PUT") >= 2; }, 60s))
        << a.process().ReadLog();
    a.process().Signal(SIGKILL);
    ASSERT_EQ(a.process().Wait(10s), 128 + SIGKILL);
  }
  hold->Open();
  const size_t held_by_a = claims_of("pod-a");
  ASSERT_GT(held_by_a, 0u) << "pod-a held no claim when it was killed";
  UploaderProcess b(azurite_, volume_, container_, "pod-b", env);
  ASSERT_TRUE(b.WaitReady()) << b.process().ReadLog();
  ExpectAllUploaded("ha", files, 120s);
  ExpectNothingLeft({b.staging()});
  EXPECT_EQ(claims_of("pod-a"), 0u);
  EXPECT_EQ(b.Status()["counters"]["takeovers"], held_by_a)
      << "pod-b took over each claim pod-a held, and nothing else";
}

// pod-a stalls (SIGSTOP: a frozen VM, a long pause) with uploads in flight, past its lease
// timeout; pod-b takes its claims over and finishes them. When pod-a resumes, its uploads of
// claims it no longer holds go through to storage late: no file fails, nothing is left behind,
// every blob holds its file, and pod-a reports the takeover.
TEST_F(UploaderE2E, AStalledReplicaThatResumesAfterATakeoverFailsNothing) {
  const std::map<std::string, std::string> env = {{"APP_LEASE_TIMEOUT_S", "2"},
                                                  {"APP_MIN_FILE_AGE_S", "0.2"}};
  std::map<std::string, std::string> files;
  for (int i = 0; i < 20; ++i)
    files["f" + std::to_string(i)] = PatternBytes(32 << 10, static_cast<uint32_t>(i + 300));
  // pod-a's uploads of the session are held until it has been taken over, then forwarded.
  auto gate = std::make_shared<Gate>();
  FaultProxy proxy(azurite_.port(), [gate](const ProxyRequest& r) {
    if (r.method == "PUT" && r.target.find("/stall/") != std::string::npos) gate->Wait(60s);
    return FaultAction::Forward();
  });
  const auto open_at_exit = gate->OpenAtExit();
  auto via_proxy = env;
  via_proxy["APP_AZURE_CONNECTION_STRING"] = ConnectionStringVia(proxy.port());
  UploaderProcess a(azurite_, volume_, container_, "pod-a", via_proxy);
  ASSERT_TRUE(a.WaitReady()) << a.process().ReadLog();
  ASSERT_EQ(a.Call("POST", "/v1/watch/start", R"({"session_name":"stall"})").status, 200);
  for (const auto& [rel, data] : files) Drop("stall", rel, data);
  ASSERT_TRUE(WaitFor([&] { return proxy.Count("/stall/", "PUT") >= 2; }, 60s))
      << a.process().ReadLog();
  a.process().Signal(SIGSTOP);
  UploaderProcess b(azurite_, volume_, container_, "pod-b", env);
  ASSERT_TRUE(b.WaitReady()) << b.process().ReadLog();
  ExpectAllUploaded("stall", files, 120s);
  ASSERT_GT(b.Status()["counters"]["takeovers"].get<int>(), 0) << b.process().ReadLog();
  gate->Open();
  a.process().Signal(SIGCONT);
  ASSERT_TRUE(WaitFor([&] { return a.Status()["in_progress"] == 0; }, 120s))
      << a.process().ReadLog();
  EXPECT_NE(a.process().ReadLog().find("another replica took it over"), std::string::npos)
      << a.process().ReadLog();
  EXPECT_EQ(a.Status()["counters"]["failed"], 0) << a.process().ReadLog();
  EXPECT_EQ(b.Status()["counters"]["failed"], 0) << b.process().ReadLog();
  EXPECT_TRUE(Volume::Files(volume_.failed()).empty());
  ExpectAllUploaded("stall", files, 10s);
  ExpectNothingLeft({a.staging(), b.staging()});
}

// Two processes with one APP_REPLICA_ID would each take the other's claims for its own
// orphans. A second process started while the first runs is refused (exit 2, one line). One
// started while the first is frozen gets past that check; once the first resumes, each finds
// the other's lease writes and both report it in the status.
TEST_F(UploaderE2E, ASecondProcessWithTheSameReplicaIdIsRefusedOrReported) {
  const std::map<std::string, std::string> env = {{"APP_LEASE_TIMEOUT_S", "2"}};
  auto twin_env = env;
  twin_env["APP_LOCAL_STAGING_ROOT"] = volume_.dir.path() + "/staging-twin";
  UploaderProcess first(azurite_, volume_, container_, "r1", env);
  ASSERT_TRUE(first.WaitReady()) << first.process().ReadLog();
  {
    UploaderProcess refused(azurite_, volume_, container_, "r1", twin_env);
    EXPECT_EQ(refused.process().Wait(30s), 2);
    const std::string log = refused.process().ReadLog();
    EXPECT_NE(log.find("config error: APP_REPLICA_ID: \"r1\" is in use by a live process"),
              std::string::npos)
        << log;
  }
  EXPECT_EQ(first.Call("GET", "/healthz").status, 200);

  first.process().Signal(SIGSTOP);
  UploaderProcess twin(azurite_, volume_, container_, "r1", twin_env);
  ASSERT_TRUE(twin.WaitReady()) << twin.process().ReadLog();
  first.process().Signal(SIGCONT);
  const auto reports = [](UploaderProcess& p) {
    const auto degraded = p.Status()["degraded"];
    return degraded.is_array() &&
           std::find(degraded.begin(), degraded.end(), "replica_id_in_use") != degraded.end();
  };
  EXPECT_TRUE(WaitFor([&] { return reports(first) && reports(twin); }, 30s))
      << first.Status().dump() << "\n"
      << twin.Status().dump();
  EXPECT_NE(twin.process().ReadLog().find("another live process uses this replica id"),
            std::string::npos);
  EXPECT_EQ(twin.Metric("replica_id_in_use"), "1");
}

// While a second process with our id waits to see whether we are alive (here: for ever, we are
// frozen), its API answers probes but refuses POSTs with 503, and SIGTERM ends it at once. It
// leaves our lease alone: once we resume, we report nothing.
TEST_F(UploaderE2E, TheReplicaIdWaitAnswersProbesRefusesPostsAndEndsOnSigterm) {
  UploaderProcess first(azurite_, volume_, container_, "r1", {{"APP_LEASE_TIMEOUT_S", "2"}});
  ASSERT_TRUE(first.WaitReady()) << first.process().ReadLog();
  first.process().Signal(SIGSTOP);
  UploaderProcess twin(azurite_, volume_, container_, "r1",
                       {{"APP_LEASE_TIMEOUT_S", "300"},  // a 112.5 s wait, ended by SIGTERM
                        {"APP_LOCAL_STAGING_ROOT", volume_.dir.path() + "/staging-twin"}});
  ASSERT_TRUE(WaitFor([&] { return twin.Call("GET", "/healthz").status == 200; }, 15s))
      << twin.process().ReadLog();
  EXPECT_EQ(twin.Call("GET", "/readyz").status, 503);
  auto post = twin.Call("POST", "/v1/watch/start", R"({"session_name":"early"})");
  EXPECT_EQ(post.status, 503) << twin.process().ReadLog();  // both processes' log (one file)
  EXPECT_TRUE(post.body.contains("error"));
  EXPECT_EQ(twin.Status()["degraded"], nlohmann::json::array()) << "not started: nothing tried";
  const std::string lease_path = volume_.processing() + "/_replicas/r1.lease";
  const std::string lease = ReadFile(lease_path);  // the frozen first's last write
  ASSERT_FALSE(lease.empty());
  twin.process().Signal(SIGTERM);
  EXPECT_EQ(twin.process().Wait(10s), 0) << twin.process().ReadLog();
  EXPECT_NE(twin.process().ReadLog().find("signal received before the service started"),
            std::string::npos);
  EXPECT_EQ(ReadFile(lease_path), lease) << "the twin wrote over the holder's lease";
  first.process().Signal(SIGCONT);
  EXPECT_FALSE(std::filesystem::exists(volume_.incoming() + "/early"));
  // The holder's next heartbeat compares the lease with its own last write before it writes.
  ASSERT_TRUE(WaitFor([&] { return ReadFile(lease_path) != lease; }, 10s));
  EXPECT_EQ(first.Status()["degraded"], nlohmann::json::array()) << first.process().ReadLog();
}

TEST_F(UploaderE2E, TwoReplicasShareOneVolumeAndUploadEachFileOnce) {
  UploaderProcess a(azurite_, volume_, container_, "pod-a");
  UploaderProcess b(azurite_, volume_, container_, "pod-b");
  ASSERT_TRUE(a.WaitReady());
  ASSERT_TRUE(b.WaitReady());
  ASSERT_EQ(a.Call("POST", "/v1/watch/start", R"({"session_name":"shared"})").status, 200);
  // The session is shared through the volume: b picks it up too.
  ASSERT_TRUE(WaitFor([&] { return b.Status()["state"] == "watching"; }, 10s));
  std::map<std::string, std::string> files;
  for (int i = 0; i < 200; ++i) {
    files["d" + std::to_string(i % 7) + "/f" + std::to_string(i)] =
        Drop("shared", "d" + std::to_string(i % 7) + "/f" + std::to_string(i),
             PatternBytes(8 << 10, static_cast<uint32_t>(i)));
  }
  ExpectAllUploaded("shared", files);
  ExpectNothingLeft({a.staging(), b.staging()});
  const int total =
      a.Status()["counters"]["uploaded"].get<int>() + b.Status()["counters"]["uploaded"].get<int>();
  EXPECT_EQ(total, 200) << "each file exactly once across replicas";
}

// A client that keeps sending a request's headers, a byte now and then, does not hold up a
// shutdown: SIGTERM ends the process within seconds, exit code 0, and the API's threads end
// with it (the request is given up at once).
TEST_F(UploaderE2E, SigtermEndsPromptlyDespiteASlowApiClient) {
  UploaderProcess up(azurite_, volume_, container_, "r1");
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  const int fd = ConnectLoopback(up.port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
  std::atomic<bool> done{false};
  std::thread slow([&] {
    for (int i = 0; i < 60 && !done.load(); ++i) {  // a header line a second, for at most 60 s
      if (!SendAll(fd, "X-Slow: " + std::to_string(i) + "\r\n")) break;
      std::this_thread::sleep_for(1s);
    }
  });
  std::this_thread::sleep_for(1500ms);  // the server is reading the request
  up.process().Signal(SIGTERM);
  const auto code = up.process().Wait(30s);
  done = true;
  slow.join();
  ::close(fd);
  EXPECT_EQ(code, 0) << up.process().ReadLog();
  EXPECT_NE(up.process().ReadLog().find("\"api_joined\":true"), std::string::npos)
      << up.process().ReadLog();
}

// cpp-httplib 0.11 reads a header line of any length into memory, and serves a client that
// sends a byte now and then for as long as it keeps doing so, on one of its 8 threads. The API
// receives each request whole before the library sees it: a head over 16 KiB is answered 431,
// a request not received within 10 s 408, as JSON on a closed connection; and more trickling
// clients than the library had threads leave the API answering others.
TEST_F(UploaderE2E, ApiRefusesEndlessAndTricklingRequestsAndStaysAvailable) {
  UploaderProcess up(azurite_, volume_, container_, "r1");
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  const std::string head = "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  auto endless = up.Raw(head + "X-Long: " + std::string(20 << 10, 'a'));
  EXPECT_EQ(endless.status, 431);
  EXPECT_TRUE(endless.body.contains("error")) << endless.body.dump();
  EXPECT_TRUE(endless.closed);
  // A whole head over 16 KiB too, however it arrives.
  EXPECT_EQ(up.Raw(head + "X-Long: " + std::string(17 << 10, 'a') + "\r\n\r\n").status, 431);
  // A body announced past the limit is refused at once, not read; a length that is no number
  // is refused too.
  const std::string post = "POST /v1/watch/stop HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  auto huge = up.Raw(post + "Content-Length: 1000000000\r\n\r\n{\"a\":");
  EXPECT_EQ(huge.status, 413);
  EXPECT_TRUE(huge.body.contains("error")) << huge.body.dump();
  EXPECT_TRUE(huge.closed);
  EXPECT_EQ(up.Raw(post + "Content-Length: -1\r\n\r\n").status, 400);
  EXPECT_EQ(up.Raw(post + "Content-Length: 12abc\r\n\r\n").status, 400);
  // A space before the colon would hide the header from the library: refused, not ignored.
  EXPECT_EQ(up.Raw(post + "Content-Length : 2\r\n\r\n{}").status, 400);
  // And so would a folded line, whitespace first: this stop, its body unseen, would stop
  // whichever session is active (the field that must name it would go unread).
  EXPECT_EQ(up.Raw(post + " Content-Length: 24\r\n\r\n" + R"({"session_name":"other"})").status,
            400);
  EXPECT_EQ(up.Raw(post + "X-A: b\r\n\tContent-Length: 2\r\n\r\n{}").status, 400);
  // So is a line that is no field at all, with no colon or nothing before it.
  EXPECT_EQ(up.Raw(post + "NoColon\r\nContent-Length: 2\r\n\r\n{}").status, 400);
  EXPECT_EQ(up.Raw(head + ": x\r\n\r\n").status, 400);
  // So would a line ending in a bare LF (the library would skip it, and with it this
  // Content-Length: the POST would have no body, and start a session under a random name), and
  // two lengths that differ. The POST with 100-continue below finds no session active.
  const std::string start = "POST /v1/watch/start HTTP/1.1\r\nContent-Length: 24\nHost: x\r\n\r\n";
  EXPECT_EQ(up.Raw(start + R"({"session_name":"run42"})").status, 400);
  EXPECT_EQ(up.Raw(post + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}").status, 400);
  // A head whose every line ends in a bare LF never holds CRLF CRLF: refused at once, not left
  // to wait for the 408 (Raw waits at most 10 s, so a 408 or no answer shows the wait).
  auto bare_lf = up.Raw("GET /healthz HTTP/1.1\nHost: x\n\n");
  EXPECT_EQ(bare_lf.status, 400) << bare_lf.head;
  EXPECT_TRUE(bare_lf.body.contains("error")) << bare_lf.body.dump();
  EXPECT_TRUE(bare_lf.closed);
  EXPECT_EQ(up.Raw("GET /healthz HTTP/1.1\r\nHost: x\r\n\n").status, 400) << "an empty line in LF";
  // No answer has parts: Range is ignored (the library would build the answer once per range,
  // overlapping or not).
  const auto ranged = up.Raw(head + "Range: bytes=0-1,0-1,0-1\r\nIf-Range: x\r\n\r\n");
  EXPECT_EQ(ranged.status, 200);
  EXPECT_EQ(ranged.head.find("Content-Range"), std::string::npos) << ranged.head;
  EXPECT_TRUE(ranged.body.contains("counters")) << ranged.head;
  EXPECT_NE(ranged.head.find("\r\nAccept-Ranges: none\r\n"), std::string::npos) << ranged.head;
  // Nor does a HEAD promise ranges (the library would answer it "Accept-Ranges: bytes").
  const auto head_only = up.Raw("HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(head_only.status, 200) << head_only.head;
  EXPECT_NE(head_only.head.find("\r\nAccept-Ranges: none\r\n"), std::string::npos)
      << head_only.head;
  EXPECT_EQ(head_only.head.find("bytes"), std::string::npos) << head_only.head;
  // A refused body that keeps coming (1 MiB here) does not cost the client its answer.
  auto large = up.Raw(post + "Content-Length: 1048576\r\n\r\n" + std::string(1 << 20, 'x'));
  EXPECT_EQ(large.status, 413);
  EXPECT_TRUE(large.closed);
  {  // A client that waits to be asked for its body (Expect: 100-continue) is asked.
    const int fd = ConnectLoopback(up.port());
    ASSERT_GE(fd, 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ASSERT_TRUE(SendAll(fd, post + "Content-Length: 2\r\nexpect:100-Continue\r\n\r\n"));
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 100 Continue\r\n", 0), 0u);
    ASSERT_TRUE(SendAll(fd, "{}"));
    std::string rest;
    for (ssize_t m = 0; (m = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      rest.append(buf, static_cast<size_t>(m));
    }
    ::close(fd);
    EXPECT_NE(rest.find("HTTP/1.1 409 "), std::string::npos) << rest;  // no session is active
  }
  {  // A client that closes its side before its body is whole is told so, not left unanswered.
    const int fd = ConnectLoopback(up.port());
    ASSERT_GE(fd, 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ASSERT_TRUE(
        SendAll(fd, post + "Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{}"));
    ::shutdown(fd, SHUT_WR);
    std::string got;
    char buf[4096];
    for (ssize_t m = 0; (m = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      got.append(buf, static_cast<size_t>(m));
    }
    ::close(fd);
    EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
    EXPECT_NE(got.find("{\"error\":\"the client closed its side"), std::string::npos) << got;
  }

  std::vector<int> trickling;
  for (int i = 0; i < 12; ++i) {
    const int fd = ConnectLoopback(up.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, head));
    trickling.push_back(fd);
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {  // one header byte a second to each, for at most 30 s
    for (int i = 0; i < 30 && !done.load(); ++i) {
      for (const int fd : trickling) ::send(fd, "X", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(1s);
    }
  });
  EXPECT_EQ(up.Call("GET", "/healthz").status, 200) << "not answered while 12 clients trickle";
  for (const int fd : trickling) {
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string got;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<size_t>(n));
    EXPECT_EQ(n, 0) << "the connection is closed after the answer";
    EXPECT_EQ(got.rfind("HTTP/1.1 408 ", 0), 0u) << got;
    EXPECT_NE(got.find("{\"error\":"), std::string::npos) << got;
  }
  done = true;
  trickle.join();
  for (const int fd : trickling) ::close(fd);
  EXPECT_EQ(up.Call("GET", "/healthz").status, 200);
}

// Connections that send nothing, more than the API has room for (256 waiting to send their
// request; they hold no thread): those waiting longest are answered 503 to make room, and a probe
// is answered at once, not once the ones ahead of it have had their 10 s.
TEST_F(UploaderE2E, AFloodOfIdleConnectionsDoesNotStarveProbes) {
  UploaderProcess up(azurite_, volume_, container_, "r1");
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  IdleConnections flood(up.port(), 300);
  ASSERT_TRUE(flood.all_open());
  const std::vector<int>& idle = flood.fds();
  // Requests sent whole on connections that had waited (not among the 44 that waited longest,
  // answered 503 already) are served. (One the kernel accepted late, past the listen backlog,
  // may have been turned away instead.)
  const std::set<int> waiting(idle.begin() + 100, idle.begin() + 105);
  for (const int fd : waiting) {
    ASSERT_TRUE(SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  }
  // Answered well before any connection has had its 10 s: those turned away, with a JSON 503.
  std::vector<pollfd> fds;
  for (const int fd : idle) fds.push_back({fd, POLLIN, 0});
  ASSERT_GT(::poll(fds.data(), fds.size(), 8000), 0) << "no connection answered at once";
  std::string shed;
  for (const auto& p : fds) {
    if ((p.revents & POLLIN) == 0 || waiting.count(p.fd) != 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(p.fd, buf, sizeof buf, 0);
    if (n > 0) shed.assign(buf, static_cast<size_t>(n));
    if (shed.rfind("HTTP/1.1 503 ", 0) == 0) break;
  }
  EXPECT_EQ(shed.rfind("HTTP/1.1 503 ", 0), 0u) << shed;
  EXPECT_NE(shed.find("{\"error\":"), std::string::npos) << shed;
  EXPECT_EQ(up.Call("GET", "/healthz").status, 200) << "a probe starved by idle connections";
  int served = 0;
  int turned = 0;
  for (const int fd : waiting) {
    timeval tv{20, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char head[64];
    const ssize_t got = ::recv(fd, head, sizeof head, 0);
    ASSERT_GT(got, 0);
    const std::string line(head, static_cast<size_t>(got));
    EXPECT_NE(line.rfind("HTTP/1.1 408 ", 0), 0u) << "a whole request answered 408 unread";
    if (line.rfind("HTTP/1.1 200 ", 0) == 0) ++served;
    if (line.rfind("HTTP/1.1 503 ", 0) == 0) ++turned;
  }
  EXPECT_EQ(served + turned, static_cast<int>(waiting.size())) << "answers other than 200, 503";
  EXPECT_LE(turned, 1) << "waiting requests turned away instead of served";
  const std::string turned_away = up.Metric("api_connections_turned_away_total");
  EXPECT_FALSE(turned_away.empty() || turned_away == "0") << turned_away;
  EXPECT_NE(up.process().ReadLog().find("API connections turned away"), std::string::npos);
  // The ~250 still waiting reach their 10 s within a second and are answered 408: that wave
  // neither fills the room for new connections nor holds threads, so a probe sent amid it is
  // answered.
  std::vector<pollfd> still;
  for (const int fd : idle) {
    char buf[512];
    if (waiting.count(fd) == 0 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0 &&
        errno == EAGAIN) {
      still.push_back({fd, POLLIN, 0});  // not answered yet (not one of those turned away)
    }
  }
  ASSERT_GT(still.size(), 200U);
  // Once half of them are answered: more than the room for new connections (64) and than the
  // threads (32) together.
  int answered = 0;
  for (const auto until = std::chrono::steady_clock::now() + 20s;
       answered < 120 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(5ms);  // poll returns at once once one is answered
    answered = std::max(::poll(still.data(), still.size(), 50), 0);
  }
  ASSERT_GE(answered, 120) << "the 408s did not come within 20 s";
  EXPECT_EQ(up.Call("GET", "/healthz").status, 200) << "a probe turned away by a wave of 408s";
}

TEST_F(UploaderE2E, ApiContractAndSessionSurvivesRestart) {
  {
    UploaderProcess up(azurite_, volume_, container_, "r1");
    ASSERT_TRUE(up.WaitReady());
    EXPECT_EQ(up.Call("GET", "/healthz").status, 200);
    EXPECT_EQ(up.Call("POST", "/v1/watch/stop").status, 409);
    // `curl -X POST` sends no Content-Length: such a request has no body (RFC 9112 6.3).
    auto bodiless = up.BodilessPost("/v1/watch/stop");
    EXPECT_EQ(bodiless.status, 409);
    EXPECT_EQ(bodiless.body["error"], "no watch session is active");
    auto wrong_method = up.BodilessPost("/v1/status");
    EXPECT_EQ(wrong_method.status, 405);
    EXPECT_TRUE(wrong_method.body.contains("error"));
    EXPECT_EQ(up.BodilessPost("/nope").status, 404);
    // Bodies the HTTP library would read without bound are refused before they are read, and
    // the connection is closed after the answer (none of these asks for that): a body that is
    // never finished is not waited for, and not parsed as a next request.
    const std::string head = " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    auto chunked = up.Raw("POST /v1/watch/start" + head +
                          "Transfer-Encoding: chunked\r\n\r\n1000\r\n{\"session_name\":");
    EXPECT_EQ(chunked.status, 411);
    EXPECT_TRUE(chunked.body.contains("error"));
    EXPECT_TRUE(chunked.closed);
    auto gzip = up.Raw("POST /v1/watch/start" + head +
                       "Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd");
    EXPECT_EQ(gzip.status, 415);
    EXPECT_TRUE(gzip.body.contains("error"));
    auto put = up.Raw("PUT /v1/status" + head + "\r\n{\"never\":");
    EXPECT_EQ(put.status, 405);
    EXPECT_TRUE(put.body.contains("error"));
    EXPECT_TRUE(put.closed);
    EXPECT_NE(put.head.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << put.head;
    auto get_post = up.Raw("GET /v1/failed/retry" + head + "\r\n");
    EXPECT_EQ(get_post.status, 405);
    EXPECT_NE(get_post.head.find("\r\nAllow: POST\r\n"), std::string::npos) << get_post.head;
    EXPECT_EQ(up.Raw("DELETE /nope" + head + "\r\n").status, 404);
    auto bad = up.Call("POST", "/v1/watch/start", "{not json");
    EXPECT_EQ(bad.status, 400);
    EXPECT_TRUE(bad.body.contains("error"));
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", "[1]").status, 400);
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"../etc"})").status, 422);
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":""})").status, 422);
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":".."})").status, 422);
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":42})").status, 422);
    // Storage drops a path segment's trailing dot: the blobs would not be under the name given.
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"run."})").status, 422);
    // Fields in the query would be ignored: a session under a generated name, or every dead
    // letter retried for one named.
    auto query = up.BodilessPost("/v1/watch/start?session_name=run-7");
    EXPECT_EQ(query.status, 422);
    EXPECT_EQ(query.body["error"],
              "unknown query parameter \"session_name\": this route takes no query (its fields, "
              "if any, go in a JSON body)");
    EXPECT_EQ(up.Call("POST", "/v1/failed/retry?file=20240101/s/x", "").status, 422);
    EXPECT_EQ(up.Status()["state"], "idle") << "nothing was started";
    // "identity" is a token, matched in any case.
    EXPECT_EQ(up.Raw("POST /v1/watch/stop" + head +
                     "Content-Encoding: Identity\r\nContent-Length: 0\r\n\r\n")
                  .status,
              409);
    // A misspelt field would otherwise start a session under a generated name.
    auto typo = up.Call("POST", "/v1/watch/start", R"({"session":"run-7"})");
    EXPECT_EQ(typo.status, 422);
    EXPECT_EQ(typo.body["error"], "unknown field \"session\" (the only one is session_name)");
    EXPECT_EQ(
        up.Call("POST", "/v1/watch/start", R"({"session_name":")" + std::string(129, 'a') + R"("})")
            .status,
        422);
    auto gen = up.Call("POST", "/v1/watch/start", "");
    ASSERT_EQ(gen.status, 200);
    const std::string name = gen.body["session_name"];
    EXPECT_EQ(name.size(), 36u) << "a UUIDv7 when no name is given";
    EXPECT_EQ(name[14], '7');
    EXPECT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"other"})").status, 409);
    auto nf = up.Call("GET", "/nope");
    EXPECT_EQ(nf.status, 404);
    EXPECT_TRUE(nf.body.contains("error"));
    EXPECT_EQ(up.Call("DELETE", "/v1/status").status, 405);
    EXPECT_EQ(up.Status()["session_name"], name);
    up.process().Signal(SIGTERM);
    EXPECT_EQ(up.process().Wait(20s), 0) << "SIGTERM exits 0";
  }
  UploaderProcess again(azurite_, volume_, container_, "r1");
  ASSERT_TRUE(again.WaitReady());
  EXPECT_EQ(again.Status()["state"], "watching");
  auto stopped = again.BodilessPost("/v1/watch/stop");
  EXPECT_EQ(stopped.status, 200);
  EXPECT_EQ(stopped.body["active"], false);
  EXPECT_EQ(again.Status()["state"], "idle");
  auto started = again.BodilessPost("/v1/watch/start");
  EXPECT_EQ(started.status, 200) << "no body: a generated session name";
  EXPECT_EQ(started.body["session_name"].get<std::string>().size(), 36u);
  again.process().Signal(SIGHUP);
  EXPECT_EQ(again.process().Wait(20s), 0) << "SIGHUP (a closed terminal) stops gracefully too";
  const std::string log = again.process().ReadLog();
  EXPECT_NE(log.find(R"("signal":"SIGHUP")"), std::string::npos) << log;
  EXPECT_NE(log.find(R"("message":"stopped")"), std::string::npos) << log;
}

// With APP_HTTP_TOKEN set, a POST without the token is refused 401 (JSON, with
// WWW-Authenticate) before it does anything; GET routes, which probes and scrapers use, stay
// open; the token is never logged or shown.
TEST_F(UploaderE2E, PostRoutesNeedTheTokenWhenOneIsSet) {
  const std::string token = "dG9rZW4tdGhhdC1tdXN0LW5vdC1sZWFr";
  UploaderProcess up(azurite_, volume_, container_, "r1", {{"APP_HTTP_TOKEN", token}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  const std::string start = "POST /v1/watch/start HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  const std::string body = "Content-Length: 2\r\n\r\n{}";
  for (const std::string& auth :
       {std::string(), std::string("Authorization: Bearer wrong\r\n"),
        "Authorization: " + token + "\r\n", "Authorization: Bearer " + token + "x\r\n"}) {
    auto refused = up.Raw(start + auth + body);
    EXPECT_EQ(refused.status, 401) << auth;
    EXPECT_TRUE(refused.body.contains("error")) << auth;
    EXPECT_NE(refused.head.find("\r\nWWW-Authenticate: Bearer\r\n"), std::string::npos)
        << refused.head;
  }
  EXPECT_EQ(up.BodilessPost("/v1/watch/stop").status, 401);
  EXPECT_EQ(up.Status()["state"], "idle") << "nothing was started";
  // A POST where only GET is served is 405 whatever the token: it could change nothing.
  auto metrics = up.Raw("POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(metrics.status, 405);
  EXPECT_NE(metrics.head.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << metrics.head;
  {
    // make watch-start's client finds the port and the token in the .env file, read as the
    // service reads it (a byte-order mark, comments, quotes, an export), when the environment
    // holds neither. It never goes through a proxy (here a dead one), which would get the
    // token, and a refusal is its exit status (curl's 22), its body printed all the same.
    const std::string dir = volume_.dir.path() + "/make-dir";
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    WriteFile(dir + "/.env",
              "\xEF\xBB\xBF"
              "APP_HTTP_PORT=" +
                  std::to_string(up.port()) + " # the API\nexport APP_HTTP_TOKEN=\"" + token +
                  "\"  # the token\n");
    const std::string start_via_make =
        "cd " + dir +
        " && env -u APP_HTTP_PORT -u APP_HTTP_TOKEN -u APP_HTTP_HOST -u API "
        "http_proxy=http://127.0.0.1:1 HTTP_PROXY=http://127.0.0.1:1 " NBU_SOURCE_DIR
        "/scripts/api.sh POST /v1/watch/start '{\"session_name\":\"via-make\"}'; echo \" rc=$?\"";
    const std::string out = RunShell(start_via_make);
    EXPECT_NE(out.find("\"via-make\""), std::string::npos) << out;
    EXPECT_NE(out.find(" rc=0\n"), std::string::npos) << out;
    EXPECT_EQ(up.Status()["session"]["name"], "via-make") << up.Status().dump();
    const std::string again = RunShell(start_via_make);
    EXPECT_NE(again.find("already active"), std::string::npos) << again;
    EXPECT_NE(again.find(" rc=22\n"), std::string::npos) << again;
    EXPECT_EQ(up.BodilessPost("/v1/watch/stop").status, 401);
    const std::string stopped =
        RunShell("cd " + dir + " && " NBU_SOURCE_DIR "/scripts/api.sh POST /v1/watch/stop");
    EXPECT_NE(stopped.find("\"via-make\""), std::string::npos) << stopped;
    EXPECT_EQ(up.Status()["state"], "idle");
  }
  // The scheme is case-insensitive (RFC 9110 11.1).
  auto started = up.Raw(start + "authorization: bearer " + token + "\r\n" + body);
  EXPECT_EQ(started.status, 200);
  EXPECT_EQ(up.Status()["state"], "watching");
  EXPECT_EQ(up.Call("GET", "/metrics").status, 200);
  EXPECT_EQ(up.Call("GET", "/readyz").status, 200);
  EXPECT_EQ(up.Status().dump().find(token), std::string::npos);
  up.process().Signal(SIGTERM);
  EXPECT_EQ(up.process().Wait(20s), 0);
  EXPECT_EQ(up.process().ReadLog().find(token), std::string::npos);
}

// The command line: the version the build names, each variable with its default and meaning,
// the usage on --help; an argument it does not know is named and refused (exit 2), nothing
// started.
TEST_F(UploaderE2E, TheCommandLineAnswersAndNamesAnArgumentItDoesNotKnow) {
  const auto run = [](const std::string& arg, std::optional<int>* code) {
    TempDir dir;
    ChildProcess proc({BinaryPath("nfs-blob-uploader"), arg}, {}, dir / "out");
    proc.CheckAtEnd(10s);  // a sanitizer's report fails the test
    *code = proc.Wait(30s);
    return proc.ReadLog();
  };
  std::optional<int> code;
  EXPECT_EQ(run("--version", &code), std::string(NBU_VERSION) + "\n");
  EXPECT_EQ(code, 0);
  const std::string help = run("--config-help", &code);
  EXPECT_EQ(code, 0);
  for (const auto& v : core::ConfigVars()) {
    EXPECT_NE(help.find(std::string(v.name) + " "), std::string::npos) << v.name;
  }
  EXPECT_NE(run("--help", &code).find("--config-vars"), std::string::npos);
  EXPECT_EQ(code, 0);
  const std::string typo = run("--confg-vars", &code);
  EXPECT_EQ(code, 2);
  EXPECT_EQ(typo.rfind("nfs-blob-uploader: unknown argument \"--confg-vars\"\n", 0), 0u) << typo;
  EXPECT_NE(typo.find("--config-vars"), std::string::npos) << typo;  // and the usage
  EXPECT_EQ(typo.find("starting"), std::string::npos) << typo;
}

// A misspelt variable is named by a warning; an API address that cannot be listened on, an
// APP_ENV_FILE that does not exist and a line of it that is not KEY=VALUE are configuration
// errors (exit 2, one line each, also for a value holding a line break).
TEST_F(UploaderE2E, TyposAndUnusableListenAddressesAreReported) {
  {
    UploaderProcess up(azurite_, volume_, container_, "r1", {{"APP_AZURE_CONTAINTER", "x"}});
    ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
    up.process().Signal(SIGTERM);
    EXPECT_EQ(up.process().Wait(20s), 0);
    const std::string log = up.process().ReadLog();
    EXPECT_NE(log.find(R"("name":"APP_AZURE_CONTAINTER")"), std::string::npos) << log;
  }
  {  // an address of no interface here (a literal: a name would be asked of DNS)
    UploaderProcess up(azurite_, volume_, container_, "r2", {{"APP_HTTP_HOST", "192.0.2.1"}});
    EXPECT_EQ(up.process().Wait(20s), 2);
    const std::string log = up.process().ReadLog();
    EXPECT_NE(log.find("config error: APP_HTTP_HOST, APP_HTTP_PORT: cannot listen on 192.0.2.1:"),
              std::string::npos)
        << log;
  }
  {  // a port another server holds, even one that allows sharing it (as cpp-httplib's do): a
     // second replica on it would be sent half of the first one's requests
    const int port = FreeLoopbackPort();
    const int holder = ListenLoopbackShared(port);
    ASSERT_GE(holder, 0);
    UploaderProcess up(azurite_, volume_, container_, "r5",
                       {{"APP_HTTP_PORT", std::to_string(port)}});
    const auto code = up.process().Wait(20s);
    ::close(holder);
    EXPECT_EQ(code, 2);
    EXPECT_NE(up.process().ReadLog().find("cannot listen on 127.0.0.1:" + std::to_string(port)),
              std::string::npos)
        << up.process().ReadLog();
  }
  {
    UploaderProcess up(azurite_, volume_, container_, "r3",
                       {{"APP_ENV_FILE", volume_.dir.path() + "/no-such.env"}});
    EXPECT_EQ(up.process().Wait(20s), 2);
    const std::string log = up.process().ReadLog();
    EXPECT_NE(log.find("config error: APP_ENV_FILE: "), std::string::npos) << log;
  }
  {  // a value holding a line break (a manifest's block string): still one line, the break shown;
     // a blank APP_ENV_FILE is unset (the optional .env of the working directory, none here)
    UploaderProcess up(azurite_, volume_, container_, "r6",
                       {{"APP_POLL_INTERVAL_S", "1\nAPP_MIN_FILE_AGE_S=2"}, {"APP_ENV_FILE", " "}});
    EXPECT_EQ(up.process().Wait(20s), 2);
    const std::string log = up.process().ReadLog();
    EXPECT_EQ(log,
              "config error: APP_POLL_INTERVAL_S: must be a decimal number, got "
              "\"1\\nAPP_MIN_FILE_AGE_S=2\"\n");
  }
  {  // a misspelt name beside the error it causes: named too, its value never shown
    UploaderProcess up(azurite_, volume_, container_, "r7",
                       {{"APP_POLL_INTERVAL_S", "soon"}, {"APP_AZURE_SAS", "sig=c2VjcmV0"}});
    EXPECT_EQ(up.process().Wait(20s), 2);
    const std::string log = up.process().ReadLog();
    EXPECT_EQ(log,
              "config error: APP_POLL_INTERVAL_S: must be a decimal number, got \"soon\"\n"
              "config note: APP_AZURE_SAS is not read by this service (a typo? --config-vars "
              "lists them all)\n");
  }
  {  // `:` for `=`: the token would be unset (the POST routes open) and its name most of it.
    const std::string secret = "Zm9vYmFyYmF6cXV4LXNlY3JldC10b2tlbg==";
    const std::string env_file = volume_.dir.path() + "/typo.env";
    std::ofstream(env_file) << "# API\nAPP_HTTP_TOKEN: " << secret << "\n";
    UploaderProcess up(azurite_, volume_, container_, "r4", {{"APP_ENV_FILE", env_file}});
    EXPECT_EQ(up.process().Wait(20s), 2);
    const std::string log = up.process().ReadLog();
    EXPECT_NE(log.find("config error: APP_ENV_FILE: " + env_file + " line 2 is not KEY=VALUE"),
              std::string::npos)
        << log;
    EXPECT_EQ(log.find("Zm9vYmFy"), std::string::npos) << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  }
}

// A replica started before its volume is mounted stops (exit 2, a line per root) without making
// its roots on the empty mount point, where a later mount would hide its claims; once the volume
// is there, the same settings start. A tmpfs stands for the NFS mount.
TEST_F(UploaderE2E, AVolumeThatIsNotMountedStopsStartupAndIsLeftUntouched) {
  const std::string mount_point = volume_.dir.path() + "/mnt";
  ASSERT_TRUE(fs::MkdirAll(mount_point).ok());
  if (fs::MountOf(mount_point)->type == "tmpfs") GTEST_SKIP() << "the test's own disk is a tmpfs";
  const std::map<std::string, std::string> env = {
      {"APP_NFS_INCOMING_DIR", mount_point + "/incoming"},
      {"APP_NFS_PROCESSING_ROOT", mount_point + "/.processing"},
      {"APP_NFS_FAILED_ROOT", mount_point + "/.failed"},
      {"APP_NFS_REQUIRE_FS_TYPE", "nfs4,tmpfs"}};
  {
    UploaderProcess up(azurite_, volume_, container_, "r1", env);
    EXPECT_EQ(up.process().Wait(20s), 2);
    const std::string log = up.process().ReadLog();
    for (const std::string root : {"incoming", ".processing", ".failed"}) {
      EXPECT_NE(log.find(mount_point + "/" + root + " is on "), std::string::npos) << log;
    }
    EXPECT_NE(log.find("not nfs4 or tmpfs as APP_NFS_REQUIRE_FS_TYPE requires: is the volume "
                       "mounted?"),
              std::string::npos)
        << log;
    const auto left = fs::ListDir(mount_point);
    ASSERT_TRUE(left.ok());
    EXPECT_TRUE(left->empty()) << left->front().name;
  }
  ScopedTmpfs mounted(mount_point, "16m");
  if (!mounted.ok()) GTEST_SKIP() << mounted.error();
  UploaderProcess up(azurite_, volume_, container_, "r2", env);
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  EXPECT_TRUE(fs::Stat(mount_point + "/incoming").ok());
  up.process().Signal(SIGTERM);
  EXPECT_EQ(up.process().Wait(20s), 0);
}

// The volume unmounted under a running replica (umount -l; a bind mount of a tmpfs stands for the
// NFS mount): its roots are gone from the empty mount point, and the heartbeats and session
// changes that follow fail, said in the status, rather than make them again on the disk under it,
// where no other replica would see them and the next mount would hide them. Nor is the session
// taken for gone. Mounted again, the replica goes on where it was.
TEST_F(UploaderE2E, AVolumeUnmountedWhileRunningIsNotMadeAgainUnderItsMountPoint) {
  ScopedTmpfs tmpfs(volume_.dir.path() + "/backing", "16m");
  if (!tmpfs.ok()) GTEST_SKIP() << tmpfs.error();
  const std::string mount_point = volume_.dir.path() + "/mnt";
  ScopedBindMount volume(volume_.dir.path() + "/backing", mount_point);
  ASSERT_TRUE(volume.ok()) << volume.error();
  UploaderProcess up(azurite_, volume_, container_, "r1",
                     {{"APP_NFS_INCOMING_DIR", mount_point + "/incoming"},
                      {"APP_NFS_PROCESSING_ROOT", mount_point + "/.processing"},
                      {"APP_NFS_FAILED_ROOT", mount_point + "/.failed"},
                      {"APP_LEASE_TIMEOUT_S", "2"},  // a heartbeat every 0.5 s
                      {"APP_MIN_FILE_AGE_S", "0.2"}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"vol"})").status, 200);
  std::map<std::string, std::string> files = {{"before.bin", PatternBytes(10 << 10, 1)}};
  WriteFile(mount_point + "/incoming/vol/before.bin", files["before.bin"]);
  ExpectAllUploaded("vol", files);

  ASSERT_TRUE(volume.Unmount()) << volume.error();
  const auto degraded = [&](const char* what) {
    const auto listed = up.Status()["degraded"];
    return std::find(listed.begin(), listed.end(), what) != listed.end();
  };
  EXPECT_TRUE(WaitFor([&] { return degraded("lease_write_failing"); }, 10s)) << up.Status().dump();
  EXPECT_TRUE(WaitFor([&] { return degraded("session_unreadable"); }, 10s)) << up.Status().dump();
  EXPECT_FALSE(degraded("session_lost"));
  for (const auto& [path, body] : {std::pair{"/v1/watch/start", R"({"session_name":"other"})"},
                                   std::pair{"/v1/watch/stop", ""}}) {
    const ApiResponse changed = up.Call("POST", path, body);
    EXPECT_EQ(changed.status, 503) << path << ": " << changed.body.dump();
  }
  const auto left = fs::ListDir(mount_point);
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << "made under the mount point: " << left->front().name;

  ASSERT_TRUE(volume.Mount()) << volume.error();
  EXPECT_TRUE(WaitFor([&] { return up.Status()["degraded"].empty(); }, 10s)) << up.Status().dump();
  files["after.bin"] = PatternBytes(20 << 10, 2);
  WriteFile(mount_point + "/incoming/vol/after.bin", files["after.bin"]);
  ExpectAllUploaded("vol", files);
  EXPECT_EQ(up.Status()["session"]["name"], "vol");
  up.process().Signal(SIGTERM);
  EXPECT_EQ(up.process().Wait(20s), 0);
}

// Every problem in one start, of every kind: values, the telemetry variables, the volume, the
// CA file, the credential and a listen port already taken (the checks that need no network run
// whatever else is wrong).
TEST_F(UploaderE2E, InvalidConfigurationStopsStartupWithOneLinePerProblem) {
  const std::string secret = "U2VjcmV0S2V5VGhhdE11c3ROb3RMZWFr";
  const int port = FreeLoopbackPort();
  const int holder = ListenLoopbackShared(port);
  ASSERT_GE(holder, 0);
  UploaderProcess up(azurite_, volume_, container_, "r1",
                     {{"APP_HTTP_PORT", std::to_string(port)},
                      {"APP_POLL_INTERVAL_S", "soon"},
                      {"APP_WORKER_CONCURRENCY", "-1"},
                      {"APP_AZURE_CONTAINER", "NO"},
                      {"APP_AZURE_PUT_BLOB_CHECKSUM", "sha1"},
                      {"APP_AZURE_CONNECTION_STRING", "AccountName=a;AccountKey=" + secret + "!!;"},
                      {"APP_AZURE_CA_FILE", volume_.dir.path() + "/no-such-ca.pem"},
                      {"APP_LOCAL_STAGING_ROOT", "/proc/no-such-dir"},
                      {"OTEL_METRIC_EXPORT_INTERVAL", "often"}});
  EXPECT_EQ(up.process().Wait(20s), 2);
  ::close(holder);
  const std::string log = up.process().ReadLog();
  EXPECT_NE(log.find("config error: APP_HTTP_HOST, APP_HTTP_PORT: cannot listen on 127.0.0.1:" +
                     std::to_string(port)),
            std::string::npos)
      << log;
  for (const char* line :
       {"config error: APP_POLL_INTERVAL_S: ", "config error: APP_WORKER_CONCURRENCY: ",
        "config error: APP_AZURE_CONTAINER: ", "config error: APP_AZURE_PUT_BLOB_CHECKSUM: ",
        "config error: OTEL_METRIC_EXPORT_INTERVAL: ",
        "config error: APP_LOCAL_STAGING_ROOT: cannot create a file in /proc/no-such-dir",
        "config error: APP_AZURE_CA_FILE: cannot read ",
        "config error: APP_AZURE_CONNECTION_STRING: connection string: AccountKey is not valid "
        "base64"}) {
    EXPECT_NE(log.find(line), std::string::npos) << line << "\n" << log;
  }
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 9) << log;
  EXPECT_EQ(log.find(secret), std::string::npos);
}

// Claims are renames: a processing root on another file system would fail every claim with
// EXDEV, and a staging root that cannot hold a file every copy. Both stop start-up, one line each.
TEST_F(UploaderE2E, VolumeThatCannotHoldTheLayoutStopsStartup) {
  std::filesystem::create_directories(volume_.incoming());
  struct stat shm = {};
  struct stat vol = {};
  if (::stat("/dev/shm", &shm) != 0 || ::stat(volume_.incoming().c_str(), &vol) != 0 ||
      shm.st_dev == vol.st_dev) {
    GTEST_SKIP() << "needs /dev/shm on a file system other than the test volume's";
  }
  // The service creates it; removed on every way out of the test (after the process is gone).
  struct RemovedAtEnd {
    std::string path;
    ~RemovedAtEnd() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } other_dir{"/dev/shm/nbu-e2e-" + std::to_string(::getpid())};
  const std::string& other = other_dir.path;
  UploaderProcess up(
      azurite_, volume_, container_, "r1",
      {{"APP_NFS_PROCESSING_ROOT", other}, {"APP_LOCAL_STAGING_ROOT", "/proc/no-such-dir"}});
  EXPECT_EQ(up.process().Wait(20s), 2);
  const std::string log = up.process().ReadLog();
  EXPECT_NE(log.find("APP_NFS_PROCESSING_ROOT: a file in APP_NFS_INCOMING_DIR"), std::string::npos)
      << log;
  EXPECT_NE(log.find("cross-device"), std::string::npos) << log;
  EXPECT_NE(log.find("APP_LOCAL_STAGING_ROOT: cannot create a file in /proc/no-such-dir"),
            std::string::npos)
      << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 2) << log;
  // The probe file is gone from wherever it got to.
  EXPECT_TRUE(Volume::Files(volume_.incoming()).empty());
  EXPECT_TRUE(Volume::Files(other).empty());
}

// A staging volume smaller than one file's staging ring is named at start-up; it is a warning,
// not a configuration error: files that fit (here one sent in a single Put Blob) still go.
TEST_F(UploaderE2E, StagingVolumeTooSmallForOneFileIsNamedAtStartup) {
  const std::string tiny = volume_.dir.path() + "/tiny-staging";
  ScopedTmpfs staging(tiny, "16m");
  if (!staging.ok()) GTEST_SKIP() << staging.error();
  UploaderProcess up(azurite_, volume_, container_, "r1", {{"APP_LOCAL_STAGING_ROOT", tiny}});
  ASSERT_TRUE(up.WaitReady()) << up.process().ReadLog();
  const std::string log = up.process().ReadLog();
  EXPECT_NE(log.find("holds 16 MiB in all, and one file can need up to " +
                     std::to_string(core::StagingNeedPerFile(core::Config{}) >> 20) + " MiB"),
            std::string::npos)
      << log;
  ASSERT_EQ(up.Call("POST", "/v1/watch/start", R"({"session_name":"fits"})").status, 200);
  const std::string data = PatternBytes(2 << 20, 7);  // staged in a file, 2 of the 16 MiB
  Drop("fits", "two.bin", data);
  ExpectAllUploaded("fits", {{"two.bin", data}});
}

// A key Azurite does not accept: the service waits (the key may be rotated back), and the status
// says why, never showing the key.
TEST_F(UploaderE2E, CredentialsStorageRefusesShowInTheStatus) {
  const std::string key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=";
  UploaderProcess up(azurite_, volume_, container_, "r1",
                     {{"APP_AZURE_CONNECTION_STRING",
                       "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" +
                           key + ";BlobEndpoint=" + azurite_.BlobEndpoint() + ";"}});
  nlohmann::json status;
  ASSERT_TRUE(WaitFor(
      [&] {
        status = up.Status();
        return !status["recent_errors"].empty();
      },
      30s))
      << up.process().ReadLog();
  EXPECT_EQ(status["ready"], false);
  EXPECT_EQ(status["degraded"], nlohmann::json::array({"storage_refuses_credentials"}));
  EXPECT_NE(status["recent_errors"][0]["error"].get<std::string>().find("403"), std::string::npos)
      << status.dump();
  EXPECT_EQ(status.dump().find(key), std::string::npos);
  EXPECT_EQ(up.process().ReadLog().find(key), std::string::npos);
}

// A stop signal during start-up's first token fetch (here from an identity endpoint that takes
// the connection and never answers) ends the process at once, exit 0, instead of after the
// fetch's timeouts (15 s per request): a pod being deleted is not held up by it.
TEST_F(UploaderE2E, AStopDuringTheFirstTokenFetchEndsStartup) {
  const int idp_port = FreeLoopbackPort();
  const int idp = ListenLoopbackShared(idp_port);  // connections wait in its backlog, unanswered
  ASSERT_GE(idp, 0);
  UploaderProcess up(azurite_, volume_, container_, "r1",
                     {{"APP_AZURE_CONNECTION_STRING", ""},
                      {"APP_AZURE_AUTH", "environment"},
                      {"APP_AZURE_ACCOUNT_URL", azurite_.BlobEndpoint()},
                      {"AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
                      {"AZURE_CLIENT_ID", "0b7a9d4e-1c2f-4a6b-9e8d-7f6a5b4c3d2e"},
                      {"AZURE_CLIENT_SECRET", "not-a-secret"},
                      {"AZURE_AUTHORITY_HOST", "http://127.0.0.1:" + std::to_string(idp_port)}});
  pollfd pending{idp, POLLIN, 0};  // the fetch's connection is there
  const bool fetching = WaitFor([&] { return ::poll(&pending, 1, 0) == 1; }, 20s);
  up.process().Signal(SIGTERM);
  const auto code = up.process().Wait(10s);
  ::close(idp);
  ASSERT_TRUE(fetching) << up.process().ReadLog();
  EXPECT_EQ(code, 0) << up.process().ReadLog();
  EXPECT_NE(up.process().ReadLog().find("signal received before the service started"),
            std::string::npos)
      << up.process().ReadLog();
}

TEST_F(UploaderE2E, NoCredentialsIsAConfigurationError) {
  UploaderProcess up(azurite_, volume_, container_, "r1", {{"APP_AZURE_CONNECTION_STRING", ""}});
  EXPECT_EQ(up.process().Wait(20s), 2);
  EXPECT_NE(up.process().ReadLog().find("APP_AZURE_AUTH"), std::string::npos);
}

}  // namespace
}  // namespace nbu::test
