#include "core/sweeper.h"

#include "support/captured_log.h"
#include "support/fs_seams.h"
#include "support/process.h"
#include "util/fs.h"

#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;
using nbu::test::RemoveTreeAt;
using nbu::test::TempDir;
using nbu::test::WriteFile;

class SweeperTest : public ::testing::Test {
 protected:
  SweeperTest() {
    config.processing_root = dir.path() + "/proc";
    config.staging_root = dir.path() + "/staging";
    config.failed_root = dir.path() + "/failed";
    config.replica_id = "me";
    config.lease_timeout_s = 30;
    EXPECT_TRUE(fs::MkdirAll(config.processing_root).ok());  // as Service::Start makes it
  }
  ClaimPath Claim(const std::string& base, const std::string& owner,
                  ClaimState state = ClaimState::kClaimed) {
    ClaimPath c{"20261128", "s", "d", base, owner, NewNonce(), state};
    const std::string path = config.processing_root + "/" + c.Path();
    WriteFile(path, base);
    // A completion marker comes of a rename after the file's last write: its mtime is older
    // than its ctime (one written here has them equal, as a write after the rename leaves them).
    if (state == ClaimState::kDone) {
      const timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000, 0}};
      EXPECT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
    }
    return c;
  }
  bool Exists(const std::string& rel) { return fs::Stat(config.processing_root + "/" + rel).ok(); }
  // Moves the clock on by `d` with this replica's heartbeats (and those of `also`), at the start
  // and every 7 s, as the heartbeat loop makes them: only a replica that can write its own lease
  // judges another dead.
  void Pass(Duration d, std::initializer_list<LeaseBook*> also = {}) {
    const auto beat = [&] {
      EXPECT_TRUE(leases.Heartbeat().ok());
      for (LeaseBook* b : also) EXPECT_TRUE(b->Heartbeat().ok());
    };
    beat();
    while (d > Duration(0)) {
      const Duration step = std::min<Duration>(d, 7s);
      clock.Advance(step);
      d -= step;
      beat();
    }
  }

  TempDir dir;
  Config config;
  SimulatedClock clock{false};
  telemetry::MetricsRegistry registry;
  Instruments inst{registry};
  InFlight inflight;
  LeaseBook leases{config, clock};
  std::vector<WorkItem> queued;
  Sweeper sweeper{config, clock, inflight, leases, inst, [this](WorkItem w, std::stop_token) {
                    queued.push_back(std::move(w));
                    return true;
                  }};
};

TEST_F(SweeperTest, RecoveryFindsOwnClaimsAndClearsStaging) {
  const ClaimPath mine = Claim("a", "me");
  Claim("b", "other");
  Claim("c", "me", ClaimState::kDone);
  WriteFile(config.staging_root + "/20261128/s/d/a~0123456789abcdef", "partial");
  WriteFile(config.staging_root + "/20261127/s/b~0123456789abcdef", "partial");
  // Not what staging makes (a root pointed at a shared directory): left alone.
  WriteFile(config.staging_root + "/notes.txt", "keep");
  WriteFile(config.staging_root + "/2026112/x", "keep");
  const auto own = sweeper.RecoverOwnClaims();
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(own[0].Path(), mine.Path());
  auto staging = fs::ListDir(config.staging_root);
  ASSERT_TRUE(staging.ok());
  std::vector<std::string> left;
  for (const auto& e : *staging) left.push_back(e.name);
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"2026112", "notes.txt"}));
}

// A stop during start-up (SIGTERM while storage was still unreachable) skips recovery: no walk
// of .processing and no clearing of staging eat the shutdown's grace.
TEST_F(SweeperTest, RecoveryStoppedBeforeItBeginsDoesNothing) {
  Claim("a", "me");
  WriteFile(config.staging_root + "/20261128/s/a~0123456789abcdef", "partial");
  std::stop_source stop;
  stop.request_stop();
  EXPECT_TRUE(sweeper.RecoverOwnClaims(stop.get_token()).empty());
  EXPECT_TRUE(fs::Stat(config.staging_root + "/20261128/s/a~0123456789abcdef").ok());
}

// A producer's tree may be deep: the walk holds one directory open at a time, not one per level
// (each an fd and a readdir buffer), and still finds what lies at the bottom.
TEST_F(SweeperTest, TheWalkHoldsOneDirectoryOpenAtATime) {
  std::string deep = "d";
  for (int level = 1; level < 40; ++level) deep += "/d" + std::to_string(level);
  const ClaimPath mine{"20261128", "s", deep, "bottom", "me", NewNonce(), ClaimState::kClaimed};
  WriteFile(config.processing_root + "/" + mine.Path(), "x");
  const auto open_fds = [] {
    size_t n = 0;  // not through fs::ListDir, whose opendir the seam below watches
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  const size_t before = open_fds();
  size_t most = 0;
  const test::ScopedPathCall seam([&](const char* op, const std::string&) {
    if (std::string_view(op) == "opendir") most = std::max(most, open_fds());
    return 0;
  });
  const auto own = sweeper.RecoverOwnClaims();
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(own[0].Path(), mine.Path());
  EXPECT_LE(most, before + 1) << "directories open at once while walking 42 levels";
}

TEST_F(SweeperTest, GcRemovesDoneMarkersAndEmptyDirsButNotUnknownFiles) {
  const ClaimPath done = Claim("x", "me", ClaimState::kDone);
  WriteFile(config.processing_root + "/20261128/s/d/not-ours.txt", "?");
  ASSERT_TRUE(fs::MkdirAll(config.processing_root + "/20261127/old/empty").ok());
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
  EXPECT_TRUE(Exists("20261128/s/d/not-ours.txt"));
  EXPECT_FALSE(Exists("20261127"));
}

// A marker is collected only on the file server's word: the sweep's look may be the NFS
// client's cached attributes, which another client's late write has not reached yet. While
// the server cannot be asked (here its fresh look fails), the marker stays.
TEST_F(SweeperTest, AMarkerIsCollectedOnlyOnceTheFileServerIsAsked) {
  const ClaimPath done = Claim("x", "me", ClaimState::kDone);
  const std::string path = config.processing_root + "/" + done.Path();
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& p) {
      return std::string_view(op) == "statx" && p == path ? ESTALE : 0;
    });
    sweeper.Sweep({});
  }
  EXPECT_TRUE(Exists(done.Path())) << "collected on a look the file server did not confirm";
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));

  // The server's answer differs from the sweep's look: another client's write reached it after
  // the look (here made just before the server is asked). Kept, and its bytes are not lost.
  const ClaimPath late = Claim("y", "me", ClaimState::kDone);
  const std::string late_path = config.processing_root + "/" + late.Path();
  bool written = false;
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& p) {
      if (std::string_view(op) == "statx" && p == late_path && !written) {
        written = true;
        const int fd = ::open(late_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::write(fd, "+late", 5), 5);
        ::close(fd);
      }
      return 0;
    });
    sweeper.Sweep({});
  }
  ASSERT_TRUE(written);
  EXPECT_TRUE(Exists(late.Path())) << "collected though the server saw a write the look did not";
}

// A marker whose worker has yet to look at it after the completion rename (a write just before
// the rename would be in it) is not collected until the worker releases it.
TEST_F(SweeperTest, AMarkerHeldByItsWorkerIsNotCollected) {
  const ClaimPath done = Claim("held", "me", ClaimState::kDone);
  inflight.HoldMarker(done.Path());
  sweeper.Sweep({});
  EXPECT_TRUE(Exists(done.Path()));
  inflight.ReleaseMarker(done.Path());
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
}

// Another live replica's markers are its own to collect: its worker looks at each right after
// the completion rename, for a write made just before it, and only its own sweeps wait for that
// look. Once that replica is dead, they are anyone's.
TEST_F(SweeperTest, AnotherLiveReplicasMarkersAreLeftToIt) {
  Config other = config;
  other.replica_id = "other";
  LeaseBook other_leases(other, clock);
  ASSERT_TRUE(other_leases.Heartbeat().ok());
  const ClaimPath done = Claim("theirs", "other", ClaimState::kDone);
  const ClaimPath written{"20261128", "s", "d", "written", "other", NewNonce(), ClaimState::kDone};
  WriteFile(config.processing_root + "/" + written.Path(), "late");  // mtime == ctime
  const ClaimPath mine = Claim("mine", "me", ClaimState::kDone);
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(mine.Path()));
  EXPECT_TRUE(Exists(done.Path()));
  EXPECT_TRUE(Exists(written.Path()));
  EXPECT_TRUE(queued.empty());
  Pass(31s);  // no heartbeat since: dead
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
  ASSERT_EQ(queued.size(), 1u) << "the written-to marker, claimed again by this replica";
  EXPECT_EQ(queued[0].claim.BlobName(), written.BlobName());
  EXPECT_EQ(queued[0].claim.owner, "me");
}

// While another live process has our id, a marker of ours that no worker here holds may be held
// there, its worker yet to look at it: it is not collected until that process is gone.
TEST_F(SweeperTest, OwnMarkerIsNotCollectedWhileAnotherProcessHasOurId) {
  LeaseBook twin(config, clock);
  ASSERT_TRUE(leases.Heartbeat().ok());
  ASSERT_TRUE(twin.Heartbeat().ok());
  ASSERT_TRUE(leases.Heartbeat().ok());
  ASSERT_TRUE(leases.IdInUseElsewhere());
  const ClaimPath done = Claim("twins", "me", ClaimState::kDone);
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_TRUE(Exists(done.Path()));
  clock.Advance(31s);
  ASSERT_TRUE(leases.Heartbeat().ok());  // only our own write since the last one
  ASSERT_FALSE(leases.IdInUseElsewhere());
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
}

// A lease that cannot be read (other than missing) gives no proof of silence, which a takeover
// needs. So the claims of its replica wait, and that is told: a warning, and the count behind
// the status's lease_unreadable, until the lease can be read again.
TEST_F(SweeperTest, AReplicaWhoseLeaseCannotBeReadKeepsItsClaimsAndIsTold) {
  const ClaimPath theirs = Claim("theirs", "other");
  const std::string lease = leases.Dir() + "/other.lease";
  ASSERT_TRUE(fs::MkdirAll(lease).ok());  // read fails: EISDIR
  // Nor is such a lease removed as one of a replica gone for good (ten lease timeouts silent,
  // no claims): that replica is not known to be gone.
  ASSERT_TRUE(fs::MkdirAll(leases.Dir() + "/idle.lease").ok());
  test::CapturedLog logged("cannot be read");
  for (int i = 0; i < 32; ++i) {  // 352 s
    sweeper.Sweep({});
    Pass(11s);
  }
  sweeper.Sweep({});
  EXPECT_TRUE(fs::Stat(leases.Dir() + "/idle.lease").ok());
  EXPECT_EQ(leases.UnreadableLeases(), 2);
  logged.Stop();
  const std::vector<std::string> lines = logged.Lines();
  EXPECT_TRUE(queued.empty()) << "not taken over";
  EXPECT_TRUE(Exists(theirs.Path()));
  for (const char* replica : {"\"other\"", "\"idle\""}) {
    EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                            [&](const std::string& l) { return l.find(replica) != l.npos; }),
              1)
        << replica << " warned once";
  }
  ASSERT_EQ(::rmdir(lease.c_str()), 0);
  ASSERT_TRUE(fs::AtomicWriteFile(lease, "{}").ok());
  sweeper.Sweep({});
  EXPECT_EQ(leases.UnreadableLeases(), 1);
  // A lease removed while it cannot be read is told no more: read as missing.
  ASSERT_EQ(::rmdir((leases.Dir() + "/idle.lease").c_str()), 0);
  sweeper.Sweep({});
  EXPECT_EQ(leases.UnreadableLeases(), 0);
  Pass(31s);  // readable, and silent since: dead
  sweeper.Sweep({});
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.BlobName(), theirs.BlobName());
}

TEST_F(SweeperTest, RetentionKeepsFreshMarkers) {
  config.completed_retention_s = 3600;
  const ClaimPath done = Claim("x", "me", ClaimState::kDone);
  sweeper.Sweep({});
  EXPECT_TRUE(Exists(done.Path()));
}

// Retention is measured on the clock that set the marker's ctime, the file server's, not on this
// host's: a host clock hours ahead does not cut it short (a late write would go with the
// marker), and one years behind (the fixture's) does not stretch it.
TEST_F(SweeperTest, RetentionIsMeasuredOnTheFileServersClock) {
  config.completed_retention_s = 3600;
  const ClaimPath kept = Claim("kept", "me", ClaimState::kDone);
  SimulatedClock ahead(false, WallTime(std::chrono::system_clock::now().time_since_epoch() + 2h));
  Sweeper ahead_sweeper{config, ahead, inflight,
                        leases, inst,  [](WorkItem, std::stop_token) { return true; }};
  ahead_sweeper.Sweep({});
  EXPECT_TRUE(Exists(kept.Path())) << "collected an hour early by this host's clock";
  config.completed_retention_s = 0.5;
  const ClaimPath old = Claim("old", "me", ClaimState::kDone);
  std::this_thread::sleep_for(600ms);
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(old.Path())) << "kept past its retention by this host's clock";
  EXPECT_FALSE(Exists("_clock-probe-me")) << "the probe is removed";
  // While the probe cannot be made (a directory holds its name; a full volume, say), markers
  // are kept, and a warning says why, once for several sweeps.
  test::CapturedLog logged("the file server's clock cannot be read");
  ASSERT_TRUE(fs::MkdirAll(config.processing_root + "/_clock-probe-me/blocker").ok());
  const ClaimPath stuck = Claim("stuck", "me", ClaimState::kDone);
  std::this_thread::sleep_for(600ms);
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_TRUE(Exists(stuck.Path()));
  ASSERT_EQ(logged.Json().size(), 1u);
  EXPECT_NE(logged.Json()[0]["error"].get<std::string>().find("_clock-probe-me"), std::string::npos)
      << logged.Json()[0];
}

// A completion marker written to after its completion rename (its mtime equals its ctime: a
// producer that kept the file open wrote on after a long pause): collecting it would delete
// bytes storage never got. Once it holds still from one sweep to the next it becomes a fresh
// claim of this replica, queued to be uploaded again as a new version of the same blob, whoever
// completed it and whatever the retention. Completed again (a rename), it is collected.
TEST_F(SweeperTest, AMarkerWrittenToAfterItsCompletionIsClaimedAgainOnceItHoldsStill) {
  for (const std::string owner : {"me", "other"}) {
    config.completed_retention_s = owner == "me" ? 0 : 3600;
    if (owner == "other") {  // dead: no lease for longer than the timeout
      EXPECT_FALSE(leases.IsDead(owner));
      Pass(31s);
    }
    const ClaimPath done{"20261128",       "s", "d", "tail-" + owner, owner, NewNonce(),
                         ClaimState::kDone};
    const std::string path = config.processing_root + "/" + done.Path();
    WriteFile(path, "head");  // as a write after the rename leaves it: mtime == ctime
    queued.clear();
    sweeper.Sweep({});
    EXPECT_TRUE(Exists(done.Path())) << "kept, not collected";
    std::ofstream(path, std::ios::app) << "+tail";  // still being written
    sweeper.Sweep({});
    EXPECT_TRUE(queued.empty()) << "claimed while it was still written to";
    ASSERT_TRUE(Exists(done.Path()));
    sweeper.Sweep({});
    EXPECT_FALSE(Exists(done.Path()));
    ASSERT_EQ(queued.size(), 1u) << owner;
    const ClaimPath again = queued[0].claim;
    EXPECT_EQ(again.state, ClaimState::kClaimed);
    EXPECT_EQ(again.owner, "me");
    EXPECT_NE(again.nonce, done.nonce);
    EXPECT_EQ(again.BlobName(), done.BlobName());
    EXPECT_TRUE(queued[0].check_existing);
    EXPECT_TRUE(inflight.Contains(again.Path()));
    EXPECT_EQ(nbu::test::ReadFile(config.processing_root + "/" + again.Path()), "head+tail");
    // Uploaded and completed again: a rename, after which the marker is an ordinary one (its
    // mtime older than its ctime; set back, since a kernel with coarse timestamps may give the
    // append and this rename, a moment apart, the same tick).
    inflight.Remove(again.Path());
    const timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000, 0}};
    ASSERT_EQ(
        ::utimensat(AT_FDCWD, (config.processing_root + "/" + again.Path()).c_str(), times, 0), 0);
    const ClaimPath completed = again.WithState(ClaimState::kDone);
    ASSERT_TRUE(fs::RenameEntry(config.processing_root + "/" + again.Path(),
                                config.processing_root + "/" + completed.Path())
                    .ok());
    config.completed_retention_s = 0;
    sweeper.Sweep({});
    sweeper.Sweep({});
    EXPECT_FALSE(Exists(completed.Path()));
    EXPECT_EQ(queued.size(), 1u) << "claimed again although nothing was written";
  }
}

// A producer's write into a claim after its worker's last check and before the completion
// rename, and the worker gone before its look at the marker (a crash, or a replica that died):
// the rename moved the ctime past the write, as for any marker, and no look is noted here. But a
// file is claimed only once it held still for APP_MIN_FILE_AGE_S, so a marker completed sooner
// after its mtime is claimed again once it holds still, to be checked against its blob; one
// completed long after its last write is collected as before.
TEST_F(SweeperTest, AMarkerWrittenJustBeforeItsCompletionIsClaimedAgainWithoutItsWorkersLook) {
  config.completed_retention_s = 0;
  const ClaimPath settled = Claim("settled", "me", ClaimState::kDone);  // mtime in 2023
  const ClaimPath late{"20261128", "s", "d", "late", "me", NewNonce(), ClaimState::kClaimed};
  const std::string claimed = config.processing_root + "/" + late.Path();
  WriteFile(claimed, "head+late");
  // The write a second before the rename (not in the same tick as it, on a coarse clock).
  timespec now{};
  ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &now), 0);
  const timespec times[2] = {{0, UTIME_OMIT}, {now.tv_sec - 1, now.tv_nsec}};
  ASSERT_EQ(::utimensat(AT_FDCWD, claimed.c_str(), times, 0), 0);
  const ClaimPath done = late.WithState(ClaimState::kDone);
  const std::string marker = config.processing_root + "/" + done.Path();
  ASSERT_TRUE(fs::RenameEntry(claimed, marker).ok());
  auto st = fs::Stat(marker);
  ASSERT_TRUE(st.ok());
  if (st->ctime_ns <= st->mtime_ns) GTEST_SKIP() << "a rename does not move the ctime here";
  test::CapturedLog logged("claimed again");
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(settled.Path())) << "completed long after its last write: collected";
  ASSERT_TRUE(Exists(done.Path())) << "kept, not collected";
  EXPECT_TRUE(queued.empty());
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
  ASSERT_EQ(queued.size(), 1u);
  // Logged as what it is: a write that may have been missed, not one seen after the upload.
  EXPECT_EQ(logged.Messages(),
            std::vector<std::string>{
                "a completed file may have been written to just before its completion, unseen by "
                "a worker that stopped: claimed again, to be checked against its blob and "
                "uploaded again if need be"});
  EXPECT_EQ(queued[0].claim.BlobName(), done.BlobName());
  EXPECT_EQ(queued[0].claim.state, ClaimState::kClaimed);
  EXPECT_TRUE(queued[0].check_existing);
  EXPECT_EQ(nbu::test::ReadFile(config.processing_root + "/" + queued[0].claim.Path()),
            "head+late");
  // With its worker's look noted (this process completed it), the same marker is collected.
  inflight.Remove(queued[0].claim.Path());
  const std::string again = config.processing_root + "/" + queued[0].claim.Path();
  ASSERT_EQ(::utimensat(AT_FDCWD, again.c_str(), times, 0), 0);
  const ClaimPath completed = queued[0].claim.WithState(ClaimState::kDone);
  ASSERT_TRUE(fs::RenameEntry(again, config.processing_root + "/" + completed.Path()).ok());
  st = fs::Stat(config.processing_root + "/" + completed.Path());
  ASSERT_TRUE(st.ok());
  inflight.NoteSettledMarker(completed.Path(), {st->ctime_ns, /*linked=*/false, st->mtime_ns});
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(completed.Path()));
  EXPECT_EQ(queued.size(), 1u);
}

// A marker whose mtime is far past its ctime had no write just before its completion rename (a
// write sets both; the rename moves the ctime only): its producer set the time ahead. Without
// its worker's look at hand it is not taken for one written just before the completion (it would
// be claimed again, read and completed again at every restart until that time came), and with
// the look at hand, hard-linked, its mtime is not taken for a write after it (claimed again at
// every other sweep). It is collected after its retention as any other.
TEST_F(SweeperTest, AMarkerWhoseMtimeIsAheadIsNotClaimedAgain) {
  config.completed_retention_s = 3600;
  const ClaimPath ahead = Claim("ahead", "me", ClaimState::kDone);
  const ClaimPath linked = Claim("linked-ahead", "me", ClaimState::kDone);
  const std::string root = config.processing_root + "/";
  const timespec times[2] = {{0, UTIME_OMIT}, {1'900'000'000, 0}};  // 2030
  for (const ClaimPath& c : {ahead, linked}) {
    ASSERT_EQ(::utimensat(AT_FDCWD, (root + c.Path()).c_str(), times, 0), 0);
  }
  ASSERT_EQ(::link((root + linked.Path()).c_str(), (dir.path() + "/other-name").c_str()), 0);
  // A writer's clock a little ahead of the server's (a second here) is not a time set ahead:
  // such a marker is checked against its blob, as one completed a second after its last write.
  const ClaimPath skewed = Claim("skewed", "me", ClaimState::kDone);
  timespec now{};
  ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &now), 0);
  const timespec skewed_times[2] = {{0, UTIME_OMIT}, {now.tv_sec + 1, now.tv_nsec}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (root + skewed.Path()).c_str(), skewed_times, 0), 0);
  const auto looked = fs::Stat(root + linked.Path());
  ASSERT_TRUE(looked.ok());
  inflight.NoteSettledMarker(linked.Path(), {looked->ctime_ns, /*linked=*/true, looked->mtime_ns});
  for (int restart = 0; restart < 2; ++restart) {
    Sweeper again{config, clock, inflight, leases, inst, [this](WorkItem w, std::stop_token) {
                    queued.push_back(std::move(w));
                    return true;
                  }};
    for (int i = 0; i < 3; ++i) again.Sweep({});
  }
  ASSERT_EQ(queued.size(), 1u) << "claimed again, first "
                               << (queued.empty() ? "" : queued[0].claim.BlobName());
  EXPECT_EQ(queued[0].claim.BlobName(), skewed.BlobName());
  config.completed_retention_s = 0;
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(ahead.Path()));
  EXPECT_FALSE(Exists(linked.Path()));
}

// Names of one file (hard links), each uploaded and completed: a rename of any name moves the
// ctime of all, which is no write. Neither marker is claimed again for it (each one's claim
// would then move the other's ctime, and so on for ever); a write into the file still counts,
// for both names.
TEST_F(SweeperTest, HardLinkedMarkersDoNotClaimEachOtherAgain) {
  config.completed_retention_s = 3600;
  const ClaimPath a = Claim("a", "me", ClaimState::kDone);
  const ClaimPath b{"20261128", "s", "d", "b", "me", NewNonce(), ClaimState::kDone};
  const std::string root = config.processing_root + "/";
  ASSERT_EQ(::link((root + a.Path()).c_str(), (root + b.Path()).c_str()), 0);
  const auto looked = fs::Stat(root + a.Path());  // each worker's look after its completion
  ASSERT_TRUE(looked.ok());
  inflight.NoteSettledMarker(a.Path(), {looked->ctime_ns, /*linked=*/true, looked->mtime_ns});
  inflight.NoteSettledMarker(b.Path(), {looked->ctime_ns, /*linked=*/true, looked->mtime_ns});
  // A third name's claim renamed a tick later (as by another worker, or this sweep's own).
  const std::string third = root + "20261128/s/d/c~me~0123456789abcdef.claimed";
  ASSERT_EQ(::link((root + a.Path()).c_str(), third.c_str()), 0);
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(::rename(third.c_str(), (third + "-moved").c_str()), 0);
  const auto moved = fs::Stat(root + a.Path());
  ASSERT_TRUE(moved.ok());
  if (moved->ctime_ns <= looked->ctime_ns) GTEST_SKIP() << "a rename does not move the ctime here";
  ASSERT_EQ(::unlink((third + "-moved").c_str()), 0);
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_TRUE(queued.empty()) << "claimed again for another name's rename";
  EXPECT_TRUE(Exists(a.Path()));
  EXPECT_TRUE(Exists(b.Path()));
  std::ofstream(root + b.Path(), std::ios::app) << "+late";  // a write: both names hold it
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_EQ(queued.size(), 2u) << "a write into the file was not seen";
}

// A producer that published by a hard link writes on into the file after its upload, and then
// removes its other name before a sweep: the unlink moves the ctime past the mtime again, so
// only the note taken while the marker had two names tells the write (an mtime other than it
// had then). One
// whose other name is removed with no write is not claimed again for the unlink.
TEST_F(SweeperTest, AWriteIntoAMarkerShowsAfterItsOtherNameIsGone) {
  config.completed_retention_s = 3600;
  const ClaimPath written = Claim("written", "me", ClaimState::kDone);
  const ClaimPath quiet = Claim("quiet", "me", ClaimState::kDone);
  const auto marker = [&](const ClaimPath& c) { return config.processing_root + "/" + c.Path(); };
  const auto other = [&](const ClaimPath& c) { return dir.path() + "/work-" + c.base; };
  for (const ClaimPath& c : {written, quiet}) {
    ASSERT_EQ(::link(marker(c).c_str(), other(c).c_str()), 0);  // the producer's own name
    const auto looked = fs::Stat(marker(c));  // its worker's look after the completion
    ASSERT_TRUE(looked.ok());
    inflight.NoteSettledMarker(c.Path(), {looked->ctime_ns, /*linked=*/true, looked->mtime_ns});
  }
  std::this_thread::sleep_for(20ms);  // a tick of the file system's clock
  std::ofstream(other(written), std::ios::app) << "+trailer";
  std::this_thread::sleep_for(20ms);
  for (const ClaimPath& c : {written, quiet}) {
    ASSERT_EQ(::unlink(other(c).c_str()), 0);
    const auto now = fs::Stat(marker(c));
    ASSERT_TRUE(now.ok());
    ASSERT_EQ(now->nlink, 1u);
    if (now->ctime_ns <= now->mtime_ns) GTEST_SKIP() << "an unlink does not move the ctime here";
  }
  sweeper.Sweep({});
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u) << "the trailer written after the upload is lost, or the unlink "
                                  "counted as a write";
  EXPECT_EQ(queued[0].claim.BlobName(), written.BlobName());
  EXPECT_TRUE(Exists(quiet.Path()));
}

// ... and a producer that sets the file's times after its last write (cp -p, tar), which moves
// the ctime past the mtime, does not make a marker seen written to collectable: it is claimed
// again once it holds still.
TEST_F(SweeperTest, AWrittenMarkerWhoseTimesAreSetAfterwardsIsStillClaimedAgain) {
  const ClaimPath done{"20261128", "s", "d", "touched", "me", NewNonce(), ClaimState::kDone};
  const std::string path = config.processing_root + "/" + done.Path();
  WriteFile(path, "head+tail");  // as a write after the rename leaves it: mtime == ctime
  sweeper.Sweep({});
  ASSERT_TRUE(Exists(done.Path())) << "kept, not collected";
  const timespec source_times[2] = {{1'700'000'000, 0}, {1'700'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), source_times, 0), 0);  // cp -p, at its end
  sweeper.Sweep({});
  ASSERT_TRUE(Exists(done.Path())) << "collected: the bytes written after the upload are lost";
  EXPECT_TRUE(queued.empty());
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.BlobName(), done.BlobName());
  EXPECT_EQ(queued[0].claim.state, ClaimState::kClaimed);
}

// ... and a write and a setting of times that both fall between two sweeps, which leave the mtime
// older than the ctime as the completion rename does: caught for a marker whose worker found it
// unchanged after that rename (its ctime then noted), and claimed again once it holds still.
// One nobody changed since is collected as usual, its note dropped.
TEST_F(SweeperTest, AMarkerChangedSinceItsWorkersLookIsClaimedAgain) {
  const ClaimPath untouched = Claim("untouched", "me", ClaimState::kDone);
  const ClaimPath touched = Claim("touched-later", "me", ClaimState::kDone);
  for (const ClaimPath& c : {untouched, touched}) {
    auto st = fs::Stat(config.processing_root + "/" + c.Path());
    ASSERT_TRUE(st.ok());
    inflight.NoteSettledMarker(c.Path(), {st->ctime_ns, /*linked=*/false, st->mtime_ns});
  }
  std::this_thread::sleep_for(20ms);  // a tick of the file system's clock
  const std::string path = config.processing_root + "/" + touched.Path();
  std::ofstream(path, std::ios::app) << "+tail";  // the rest of the file, and then cp -p's
  const timespec source_times[2] = {{1'700'000'000, 0}, {1'700'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), source_times, 0), 0);
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(untouched.Path()));
  EXPECT_EQ(inflight.SettledMarker(untouched.Path()), std::nullopt);
  ASSERT_TRUE(Exists(touched.Path())) << "collected: the bytes written after the upload are lost";
  EXPECT_TRUE(queued.empty());
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(touched.Path()));
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.BlobName(), touched.BlobName());
  EXPECT_EQ(inflight.SettledMarker(touched.Path()), std::nullopt);
}

// A dead replica's marker written to after its completion, whose times are then set (cp -p):
// sweeps that cannot tell the replica is dead (its lease unreadable, then read again, which
// starts its silence anew) do not forget the write they saw, or the sweep that finds it dead
// again would collect the marker with the bytes never uploaded.
TEST_F(SweeperTest, AWrittenMarkerOfAReplicaWhoseLeaseCannotBeReadIsNotForgotten) {
  const ClaimPath done{"20261128", "s", "d", "late", "ghost", NewNonce(), ClaimState::kDone};
  const std::string path = config.processing_root + "/" + done.Path();
  WriteFile(path, "head+tail");  // as a write after the rename leaves it: mtime == ctime
  sweeper.Sweep({});
  Pass(31s);  // no lease seen for 31 s: ghost is dead
  sweeper.Sweep({});
  ASSERT_TRUE(Exists(done.Path()));
  const timespec source_times[2] = {{1'700'000'000, 0}, {1'700'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), source_times, 0), 0);  // cp -p, at its end
  const std::string lease = leases.Dir() + "/ghost.lease";
  ASSERT_TRUE(fs::MkdirAll(lease).ok());  // its read fails: EISDIR
  Pass(2s);
  sweeper.Sweep({});
  ASSERT_TRUE(Exists(done.Path()));
  ASSERT_EQ(::rmdir(lease.c_str()), 0);  // missing again: a change, so silent since now
  Pass(2s);
  sweeper.Sweep({});
  Pass(31s);  // dead again
  sweeper.Sweep({});
  ASSERT_TRUE(Exists(done.Path())) << "collected: the bytes written after the upload are lost";
  EXPECT_TRUE(queued.empty()) << "held still since its times were set? not yet seen so";
  sweeper.Sweep({});
  EXPECT_FALSE(Exists(done.Path()));
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.BlobName(), done.BlobName());
  EXPECT_EQ(queued[0].claim.owner, "me");
}

// A sweep that could not look at such a marker (its stat, or the listing of its directory, failed
// with a passing error, as on a flaky NFS server) does not start its count again: the next sweep
// that sees it unchanged since the last look claims it. Otherwise a directory whose listing often
// fails could keep a file written after its upload from storage for good.
TEST_F(SweeperTest, AWrittenMarkerKeepsItsCountThroughASweepThatCouldNotLookAtIt) {
  config.completed_retention_s = 3600;
  for (const std::string failing : {"stat", "opendir"}) {
    const ClaimPath done{"20261128",       "s", "d", "tail-" + failing, "me", NewNonce(),
                         ClaimState::kDone};
    const std::string path = config.processing_root + "/" + done.Path();
    WriteFile(path, "head");  // as a write after the rename leaves it: mtime == ctime
    queued.clear();
    sweeper.Sweep({});
    {
      const test::ScopedPathCall seam([&](const char* op, const std::string& p) {
        if (op != failing) return 0;
        return p == (failing == "stat" ? path : fs::Dirname(path)) ? ESTALE : 0;
      });
      sweeper.Sweep({});
    }
    EXPECT_TRUE(queued.empty()) << failing;
    ASSERT_TRUE(Exists(done.Path()));
    sweeper.Sweep({});
    ASSERT_EQ(queued.size(), 1u) << failing;
    EXPECT_EQ(queued[0].claim.BlobName(), done.BlobName());
    // Out of the way of the next round: the claim uploaded and gone.
    inflight.Remove(queued[0].claim.Path());
    ASSERT_EQ(::unlink((config.processing_root + "/" + queued[0].claim.Path()).c_str()), 0);
  }
}

// The looks of workers noted stop at a bound (memory), told by the false the worker logs; a
// marker's note is updated, and one forgotten makes room.
TEST(InFlightTest, SettledNotesStopAtTheirBound) {
  InFlight f;
  for (size_t i = 0; i < InFlight::kMaxSettled; ++i) {
    ASSERT_TRUE(f.NoteSettledMarker("m" + std::to_string(i), {1, false, 1}));
  }
  EXPECT_FALSE(f.NoteSettledMarker("over", {1, false, 1}));
  EXPECT_FALSE(f.SettledMarker("over"));
  EXPECT_TRUE(f.NoteSettledMarker("m0", {2, false, 2}));
  EXPECT_EQ(f.SettledMarker("m0")->ctime_ns, 2);
  f.ForgetSettledMarker("m1");
  EXPECT_TRUE(f.NoteSettledMarker("over", {1, false, 1}));
}

// While the probe of whether a rename moves the ctime cannot be made (here a directory holds
// the probe's name), a marker that looks written to is neither claimed nor collected.
TEST_F(SweeperTest, AMarkerThatMayHoldLateBytesWaitsWhileTheProbeCannotTell) {
  const std::string probe = config.processing_root + "/_ctime-probe-me";
  ASSERT_TRUE(fs::MkdirAll(probe + "/blocker").ok());
  const ClaimPath done{"20261128", "s", "d", "late", "me", NewNonce(), ClaimState::kDone};
  WriteFile(config.processing_root + "/" + done.Path(), "bytes");
  test::CapturedLog logged("whether a rename moves a file's change time cannot be probed");
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_TRUE(Exists(done.Path()));
  EXPECT_TRUE(queued.empty());
  EXPECT_EQ(logged.Json().size(), 1u) << "said once, not at every sweep";
  ASSERT_TRUE(fs::RemoveTree(probe).ok());
  sweeper.Sweep({});
  sweeper.Sweep({});
  EXPECT_EQ(queued.size(), 1u);
}

// The probe's write left a temp file when a process of this replica was killed mid-write: the
// next probe removes it. Another replica's, and names not the probe's, are left alone.
TEST_F(SweeperTest, TheProbeRemovesTempFilesOfItsWriteLeftBehind) {
  const std::string root = config.processing_root + "/";
  WriteFile(root + "_ctime-probe-me.tmp-0123456789ab", "probe");
  WriteFile(root + "_ctime-probe-me2.tmp-0123456789ab", "probe");
  WriteFile(root + "_ctime-probe-me.tmp-notours", "keep");
  const ClaimPath done{"20261128", "s", "d", "late", "me", NewNonce(), ClaimState::kDone};
  WriteFile(root + done.Path(), "bytes");  // mtime == ctime: the probe is made
  sweeper.Sweep({});
  EXPECT_FALSE(fs::Stat(root + "_ctime-probe-me.tmp-0123456789ab").ok());
  EXPECT_TRUE(fs::Stat(root + "_ctime-probe-me2.tmp-0123456789ab").ok());
  EXPECT_TRUE(fs::Stat(root + "_ctime-probe-me.tmp-notours").ok());
  EXPECT_FALSE(fs::Stat(root + "_ctime-probe-me").ok());
  EXPECT_FALSE(fs::Stat(root + "_ctime-probe-me.renamed").ok());
}

TEST_F(SweeperTest, OrphanedOwnClaimIsRequeuedAfterTwoSweeps) {
  const ClaimPath c = Claim("a", "me");
  sweeper.Sweep({});
  EXPECT_TRUE(queued.empty());  // might be a worker that has not registered it yet
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.Path(), c.Path());
  EXPECT_TRUE(queued[0].check_existing);
  EXPECT_TRUE(inflight.Contains(c.Path()));
  sweeper.Sweep({});
  EXPECT_EQ(queued.size(), 1u);  // in flight now: not queued twice
}

// A sweep that could not list the claim's directory (a passing error, as on a flaky NFS server)
// does not start its count again: the next sweep that sees it still not in flight re-queues it.
// Otherwise a directory whose listing often fails could keep an orphaned claim from storage for
// good.
TEST_F(SweeperTest, AnOrphanedClaimKeepsItsCountThroughASweepThatCouldNotListIt) {
  const ClaimPath c = Claim("a", "me");
  const std::string claim_dir = fs::Dirname(config.processing_root + "/" + c.Path());
  sweeper.Sweep({});
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& p) {
      return std::string(op) == "opendir" && p == claim_dir ? ESTALE : 0;
    });
    sweeper.Sweep({});
  }
  EXPECT_TRUE(queued.empty());
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.Path(), c.Path());

  // But what a partial walk did see counts: a claim it saw in flight (another directory's
  // listing failed) starts its count again once its worker lets it go.
  queued.clear();
  const ClaimPath other = Claim("b", "me");
  const std::string other_dir = config.processing_root + "/20261128/other";
  WriteFile(other_dir + "/notes.txt", "not a claim: kept, and keeps the directory");
  sweeper.Sweep({});
  ASSERT_TRUE(queued.empty()) << "in flight from the first re-queue";
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& p) {
      return std::string(op) == "opendir" && p == other_dir ? ESTALE : 0;
    });
    ASSERT_TRUE(inflight.Add(other.Path()));
    sweeper.Sweep({});
  }
  inflight.Remove(other.Path());
  sweeper.Sweep({});
  EXPECT_TRUE(queued.empty()) << "seen once out of flight";
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.Path(), other.Path());
}

// So does a sweep that could not stat the claim, listed with an unknown type (as some NFS
// servers list entries), and the failure shows in the errors.
TEST_F(SweeperTest, AnOrphanedClaimKeepsItsCountThroughASweepThatCouldNotStatIt) {
  const ClaimPath c = Claim("a", "me");
  const std::string full = config.processing_root + "/" + c.Path();
  sweeper.Sweep({});
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& p) {
      const std::string o(op);
      return p == full && (o == "d_type" || o == "stat") ? ESTALE : 0;
    });
    sweeper.Sweep({});
  }
  EXPECT_TRUE(queued.empty());
  sweeper.Sweep({});
  EXPECT_EQ(queued.size(), 1u) << "the count started again";
  const auto errors = inst.errors.Snapshot();
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors.back().error.find("stat " + full), std::string::npos) << errors.back().error;
}

// While another live process has our id, a claim of ours that no worker here holds may be in
// flight there: it is left alone, and re-queued only once that process is gone for a timeout.
TEST_F(SweeperTest, OwnClaimIsNotRequeuedWhileAnotherProcessHasOurId) {
  LeaseBook twin(config, clock);
  ASSERT_TRUE(leases.Heartbeat().ok());
  ASSERT_TRUE(twin.Heartbeat().ok());
  ASSERT_TRUE(leases.Heartbeat().ok());
  ASSERT_TRUE(leases.IdInUseElsewhere());
  const ClaimPath c = Claim("a", "me");
  for (int i = 0; i < 3; ++i) sweeper.Sweep({});
  EXPECT_TRUE(queued.empty());
  clock.Advance(std::chrono::seconds(31));
  ASSERT_TRUE(leases.Heartbeat().ok());  // only our own write since the last one
  ASSERT_FALSE(leases.IdInUseElsewhere());
  sweeper.Sweep({});
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.Path(), c.Path());
}

// A directory the sweep cannot list (here: its path is longer than PATH_MAX) hides the claims
// in it. The failure shows in the errors, and a long-dead replica whose claim is there keeps its
// lease: it is not pruned as one that owns nothing (which would make its claim wait yet another
// lease timeout once it is seen).
TEST_F(SweeperTest, AnUnlistableDirectoryShowsAndKeepsItsOwnersLease) {
  Config gone_config = config;
  gone_config.replica_id = "gone";
  LeaseBook gone(gone_config, clock);
  ASSERT_TRUE(gone.Heartbeat().ok());
  const std::string top = config.processing_root + "/20261128/s";
  ASSERT_TRUE(fs::MkdirAll(top).ok());
  const std::string level(250, 'd');
  int fd = ::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 18; ++i) {  // 18 x 251 bytes: past PATH_MAX (4096)
    ASSERT_EQ(::mkdirat(fd, level.c_str(), 0755), 0);
    const int next = ::openat(fd, level.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    ASSERT_GE(next, 0);
    fd = next;
  }
  const int claim = ::openat(fd, "f~gone~0123456789abcdef.claimed", O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(claim, 0);
  ::close(claim);
  ::close(fd);
  sweeper.Sweep({});  // sees gone's lease
  Pass(std::chrono::seconds(10 * 30 + 1));
  sweeper.Sweep({});
  EXPECT_TRUE(fs::Stat(gone.Dir() + "/gone.lease").ok()) << "pruned while its claim was unseen";
  const auto errors = inst.errors.Snapshot();
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors.back().error.find("could not list"), std::string::npos) << errors.back().error;
  const int top_fd = ::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(top_fd, 0);
  RemoveTreeAt(top_fd, level);
  ::close(top_fd);
  // Seen in full again: the long-dead replica that owns nothing now is pruned.
  sweeper.Sweep({});
  EXPECT_FALSE(fs::Stat(gone.Dir() + "/gone.lease").ok());
}

TEST_F(SweeperTest, TakesOverClaimsOfADeadReplicaOnlyAfterTheLeaseTimeout) {
  Config other = config;
  other.replica_id = "other";
  LeaseBook other_leases(other, clock);
  ASSERT_TRUE(other_leases.Heartbeat().ok());
  const ClaimPath c = Claim("a", "other");
  sweeper.Sweep({});
  Pass(20s);
  ASSERT_TRUE(other_leases.Heartbeat().ok());  // alive: lease changes
  sweeper.Sweep({});
  Pass(20s);
  sweeper.Sweep({});
  EXPECT_TRUE(queued.empty());
  EXPECT_TRUE(Exists(c.Path()));
  Pass(15s);  // no heartbeat for 35 s > 30 s
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.owner, "me");
  EXPECT_EQ(queued[0].claim.nonce, c.nonce);
  EXPECT_FALSE(Exists(c.Path()));
  EXPECT_TRUE(Exists(c.WithOwner("me").Path()));
  EXPECT_EQ(inst.takeovers.Value(), 1);
}

// An outage of the volume (a server rebooting, a hard mount hanging) stops every replica's
// heartbeat, so every lease is stale when it ends. The first replica back must not take the
// others' claims before they could write their leases: silence counts from its own first
// heartbeat after the gap, and not at all before it.
TEST_F(SweeperTest, AReplicaBackFromAVolumeOutageTakesNothingBeforeOthersCouldBeat) {
  Config other = config;
  other.replica_id = "other";
  LeaseBook other_leases(other, clock);
  ASSERT_TRUE(other_leases.Heartbeat().ok());
  const ClaimPath theirs = Claim("theirs", "other");
  Pass(7s);
  sweeper.Sweep({});
  clock.Advance(120s);  // the outage: no replica writes its lease
  sweeper.Sweep({});    // back before our own heartbeat
  EXPECT_TRUE(queued.empty()) << "taken over while this replica could not write its own lease";
  // Ours again since 20 s, the other's still not: after a gap longer than the lease timeout,
  // its silence counts from our return only.
  Pass(20s);
  sweeper.Sweep({});
  EXPECT_TRUE(queued.empty()) << "taken over before a lease timeout since this replica is back";
  EXPECT_TRUE(Exists(theirs.Path()));
  Pass(11s);  // silent for a lease timeout that this replica saw whole: dead
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.owner, "me");
}

// A volume that refuses lease writes (ENOSPC, EDQUOT; often while a backlog fills it) silences
// every replica at once: none takes another's claims while it cannot write its own lease.
TEST_F(SweeperTest, AReplicaThatCannotWriteItsLeaseTakesNothingOver) {
  const ClaimPath theirs = Claim("theirs", "other");  // a replica whose lease never appeared
  Pass(7s);
  sweeper.Sweep({});
  {
    test::ScopedPathCall full([](const char* op, const std::string& path) {
      return std::string_view(op) == "create" && path.find("/_replicas/me.lease") != path.npos
                 ? ENOSPC
                 : 0;
    });
    for (int i = 0; i < 8; ++i) {  // 56 s
      clock.Advance(7s);
      EXPECT_FALSE(leases.Heartbeat().ok());
      sweeper.Sweep({});
    }
  }
  EXPECT_TRUE(queued.empty()) << "taken over while this replica could not write its own lease";
  EXPECT_TRUE(Exists(theirs.Path()));
  Pass(31s);
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u) << "taken once this replica's own lease was written again";
}

// But lease writes that fail now and then (one in three here: EIO on a soft mount, ENOSPC coming
// and going), each taking 0.5 s, only slow the count of silence down: a replica really gone is
// still taken over, here after 72 s. (Silence counted only from the first heartbeat after each
// gap longer than half the lease timeout, for every lease, would never reach it.)
TEST_F(SweeperTest, AReplicaWhoseLeaseWritesFailNowAndThenStillTakesOver) {
  const ClaimPath theirs = Claim("theirs", "ghost");  // a replica whose lease never appeared
  Pass(0s);
  sweeper.Sweep({});
  int beats = 0;
  const test::ScopedPathCall flaky([&](const char* op, const std::string& path) {
    const bool ours =
        std::string_view(op) == "create" && path.find("/_replicas/me.lease") != path.npos;
    return ours && beats % 3 == 2 ? EIO : 0;
  });
  for (; beats < 16 && queued.empty(); ++beats) {  // at most 128 s, four lease timeouts
    clock.Advance(8s);                             // the interval, and the write
    EXPECT_EQ(leases.Heartbeat().ok(), beats % 3 != 2);
    sweeper.Sweep({});
  }
  ASSERT_EQ(queued.size(), 1u) << "never taken over";
  EXPECT_EQ(queued[0].claim.owner, "me");
  // Each 8 s gap counts 7.5 s, and each 16 s one too. The first 16 s gap (from 16 to 32 s) began
  // 15 s of silence into the ghost's count, so that count starts again at its end; the next
  // (from 40 to 56 s) began 30 s into it, and so does not. 30 s are counted at 72 s.
  EXPECT_EQ(beats, 9);
}

// A takeover the volume refuses is tried again at every sweep, for each claim of the dead
// replica: one warning a minute says so, not one per claim per sweep; none is taken meanwhile.
TEST_F(SweeperTest, TakeoversTheVolumeRefusesAreToldOnceAMinute) {
  for (const char* base : {"a", "b", "c"}) Claim(base, "ghost");
  sweeper.Sweep({});
  Pass(31s);  // no lease for longer than the timeout: dead
  test::CapturedLog logged("took over a claim of a dead replica: failed");
  const test::ScopedPathPairCall seam([](const char*, const std::string&, const std::string&) {
    errno = EACCES;
    return -1;
  });
  for (int i = 0; i < 3; ++i) sweeper.Sweep({});
  const std::vector<std::string> lines = logged.Lines();
  EXPECT_TRUE(queued.empty());
  EXPECT_EQ(inst.takeovers.Value(), 0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("Permission denied"), std::string::npos) << lines[0];
}

// Death is judged on a read of the lease made when the question is asked, not on the last
// sweep's observation: a sweep may run long (it waits while the queue is full), or its read
// may have failed. A lease that cannot be read is not judged dead.
TEST_F(SweeperTest, ALiveReplicaIsNotJudgedDeadOnAStaleObservation) {
  Config other = config;
  other.replica_id = "other";
  LeaseBook other_leases(other, clock);
  ASSERT_TRUE(other_leases.Heartbeat().ok());
  leases.Observe();
  Pass(31s);
  ASSERT_TRUE(other_leases.Heartbeat().ok());  // alive, but not observed since
  EXPECT_FALSE(leases.IsDead("other"));
  Pass(31s);  // silent since the last heartbeat
  EXPECT_TRUE(leases.IsDead("other"));

  // Unreadable (here a directory where the file should be): no proof of silence.
  ASSERT_TRUE(fs::MkdirAll(leases.Dir() + "/odd.lease").ok());
  leases.Observe();
  Pass(31s);
  EXPECT_FALSE(leases.IsDead("odd"));
}

// The claims each other replica holds, as the last sweep left them, and how long its lease has
// been silent (none while it cannot be read): what the status shows while a takeover waits. A
// replica whose claims were all taken over is no longer listed.
TEST_F(SweeperTest, ClaimsLeftWithOtherReplicasAreShownWithTheirSilence) {
  Config other = config;
  other.replica_id = "other";
  LeaseBook other_leases(other, clock);
  ASSERT_TRUE(other_leases.Heartbeat().ok());
  Claim("a", "other");
  Claim("b", "other");
  Claim("c", "ghost");                                          // no lease at all
  ASSERT_TRUE(fs::MkdirAll(leases.Dir() + "/odd.lease").ok());  // cannot be read
  Claim("d", "odd");
  sweeper.Sweep({});
  auto shown = sweeper.other_replicas();
  ASSERT_EQ(shown.size(), 3u);
  EXPECT_EQ(shown["other"].claims, 2u);
  ASSERT_TRUE(shown["other"].silent.has_value());
  EXPECT_LT(*shown["other"].silent, 1s);
  EXPECT_EQ(shown["ghost"].claims, 1u);
  ASSERT_TRUE(shown["ghost"].silent.has_value());
  EXPECT_EQ(shown["odd"].claims, 1u);
  EXPECT_FALSE(shown["odd"].silent.has_value());
  Pass(14s);
  sweeper.Sweep({});
  shown = sweeper.other_replicas();
  ASSERT_TRUE(shown["other"].silent.has_value());
  EXPECT_GE(*shown["other"].silent, 14s);
  EXPECT_LT(*shown["other"].silent, 30s);
  Pass(17s);  // 31 s: other and ghost are dead
  sweeper.Sweep({});
  EXPECT_EQ(queued.size(), 3u);
  shown = sweeper.other_replicas();
  EXPECT_EQ(shown.size(), 1u);
  EXPECT_EQ(shown.count("odd"), 1u);
}

TEST_F(SweeperTest, ClaimOfAReplicaWithoutAnyLeaseIsTakenAfterTheTimeout) {
  const ClaimPath c = Claim("a", "ghost");
  sweeper.Sweep({});
  EXPECT_TRUE(queued.empty());
  Pass(31s);
  sweeper.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.Path(), c.WithOwner("me").Path());
}

// Two survivors take over one dead replica's claims at once: each claim goes to exactly one of
// them. Here the second survivor sweeps from inside the first's hand-off of the first claim it
// took, so the first then meets, in its listing, a claim that the second has just taken.
TEST_F(SweeperTest, TwoSurvivorsTakeEachClaimOfADeadReplicaOnce) {
  Config second_config = config;
  second_config.replica_id = "me2";
  InFlight second_inflight;
  LeaseBook second_leases(second_config, clock);
  std::vector<WorkItem> second_queued;
  Sweeper second(second_config, clock, second_inflight, second_leases, inst,
                 [&](WorkItem w, std::stop_token) {
                   second_queued.push_back(std::move(w));
                   return true;
                 });
  const std::vector<ClaimPath> claims = {Claim("a", "ghost"), Claim("b", "ghost")};
  sweeper.Sweep({});
  second.Sweep({});
  Pass(31s, {&second_leases});
  Sweeper first(config, clock, inflight, leases, inst, [&](WorkItem w, std::stop_token stop) {
    const bool first_hand_off = queued.empty();
    queued.push_back(std::move(w));
    if (first_hand_off) second.Sweep(stop);
    return true;
  });
  first.Sweep({});
  ASSERT_EQ(queued.size(), 1u);
  ASSERT_EQ(second_queued.size(), 1u);
  EXPECT_EQ(queued[0].claim.owner, "me");
  EXPECT_EQ(second_queued[0].claim.owner, "me2");
  EXPECT_NE(queued[0].claim.base, second_queued[0].claim.base);
  for (const ClaimPath& c : claims) EXPECT_FALSE(Exists(c.Path())) << c.Path();
  EXPECT_EQ(inst.takeovers.Value(), 2);
}

TEST_F(SweeperTest, CountsDeadLetters) {
  WriteFile(config.failed_root + "/20261128/s/a~0123456789abcdef.failed", "x");
  WriteFile(config.failed_root + "/20261128/s/a~0123456789abcdef.failed.json", "{}");
  sweeper.Sweep({});
  EXPECT_EQ(sweeper.dead_letters().count, 1u);
  EXPECT_EQ(sweeper.dead_letters().sample.at(0), "20261128/s/a");
}

}  // namespace
}  // namespace nbu::core
