#include "core/lease.h"

#include "support/fs_seams.h"
#include "support/process.h"
#include "util/fs.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;
using nbu::test::TempDir;

class LeaseTest : public ::testing::Test {
 protected:
  LeaseTest() {
    config.processing_root = dir.path() + "/proc";
    config.replica_id = "r1";
    config.lease_timeout_s = 2;
    // Made at start-up (Service::Start): a lease write makes nothing above _replicas.
    EXPECT_TRUE(fs::MkdirAll(config.processing_root).ok());
  }
  std::string LeasePath() const { return config.processing_root + "/_replicas/r1.lease"; }
  void WriteLease(const nlohmann::json& j) {
    ASSERT_TRUE(fs::MkdirAll(config.processing_root + "/_replicas").ok());
    ASSERT_TRUE(fs::AtomicWriteFile(LeasePath(), j.dump()).ok());
  }
  static std::string Host() {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return buf;
  }

  TempDir dir;
  Config config;
};

// This replica (r1) and another (r2) on one simulated clock, with the default 30 s lease
// timeout: each has written its lease once, and r1 has seen r2's.
struct TwoReplicas {
  explicit TwoReplicas(const Config& base) : mine_config(base), other_config(base) {
    mine_config.lease_timeout_s = other_config.lease_timeout_s = 30;
    other_config.replica_id = "r2";
    EXPECT_TRUE(mine.Heartbeat().ok());
    EXPECT_TRUE(other.Heartbeat().ok());
    mine.Observe();
  }
  Config mine_config;
  Config other_config;
  SimulatedClock clock{false};
  LeaseBook mine{mine_config, clock};
  LeaseBook other{other_config, clock};
};

// Temp files of lease writes left behind (a process killed between its write and its rename, a
// lost reply) are removed by the sweeps' reads of the leases, once listed for a lease timeout (a
// write takes milliseconds): ours, and another replica's once it is dead (a live one may be about
// to rename it). A temp of a replica held dead is not removed at first sight either: that replica
// may have just restarted, its first heartbeat under way. Other names are not ours.
TEST_F(LeaseTest, TempFilesOfLeaseWritesLeftBehindAreRemoved) {
  SimulatedClock clock(false);
  LeaseBook book(config, clock);
  // Our heartbeats go on meanwhile (only a replica writing its own lease judges another dead).
  const auto pass = [&](Duration d) {
    for (; d > Duration(0); d -= 500ms) {
      clock.Advance(500ms);
      ASSERT_TRUE(book.Heartbeat().ok());
    }
  };
  const std::string d = config.processing_root + "/_replicas/";
  ASSERT_TRUE(fs::MkdirAll(d).ok());
  const auto there = [&](const std::string& name) { return fs::Stat(d + name).ok(); };
  test::WriteFile(d + "r1.lease.tmp-0123456789ab", "{\"replica\":");
  test::WriteFile(d + "r2.lease", R"({"seq":1})");
  test::WriteFile(d + "r2.lease.tmp-0123456789ab", "{");
  test::WriteFile(d + "r3.lease.tmp-0123456789ab", "{");  // its lease pruned already
  test::WriteFile(d + "notes.tmp-0123456789ab", "keep");
  test::WriteFile(d + "r1.lease.tmp-mine", "keep");
  ASSERT_TRUE(book.Heartbeat().ok());
  book.Observe();
  EXPECT_TRUE(there("r1.lease.tmp-0123456789ab")) << "a write of ours may be under way";
  EXPECT_TRUE(there("r3.lease.tmp-0123456789ab"));

  pass(3s);  // past the lease timeout; r2 beats on, r3 shows nothing
  test::WriteFile(d + "r2.lease", R"({"seq":2})");
  book.Observe();
  EXPECT_FALSE(there("r1.lease.tmp-0123456789ab"));
  EXPECT_TRUE(there("r2.lease.tmp-0123456789ab"));

  pass(3s);                                               // r2 and r3 are dead now
  test::WriteFile(d + "r2.lease.tmp-bbbbbbbbbbbb", "{");  // a restarted r2's first heartbeat
  book.Observe();
  EXPECT_FALSE(there("r2.lease.tmp-0123456789ab"));
  EXPECT_FALSE(there("r3.lease.tmp-0123456789ab"));
  EXPECT_TRUE(there("r2.lease.tmp-bbbbbbbbbbbb")) << "first seen now";
  EXPECT_TRUE(there("r2.lease"));  // that is Prune's, after ten lease timeouts

  pass(3s);  // r2 did not come back after all
  book.Observe();
  EXPECT_FALSE(there("r2.lease.tmp-bbbbbbbbbbbb"));
  EXPECT_TRUE(there("notes.tmp-0123456789ab"));
  EXPECT_TRUE(there("r1.lease.tmp-mine"));
}

// A read of another replica's lease held up through an outage of the volume (a hard mount): this
// replica's heartbeat gets through first, then the other's write, then the read returns the new
// content. Its silence counts from when the read returned, not from when it began (which the
// outage, taken out of the credited clock meanwhile, would put far in the past): the other
// replica, which has just written, is not judged dead.
TEST_F(LeaseTest, ALeaseReadHeldUpThroughAnOutageCountsFromItsEnd) {
  TwoReplicas two(config);
  SimulatedClock& clock = two.clock;
  LeaseBook& mine = two.mine;
  LeaseBook& other = two.other;
  clock.Advance(7s);
  ASSERT_TRUE(mine.Heartbeat().ok());
  ASSERT_TRUE(other.Heartbeat().ok());
  clock.Advance(2s);
  bool held = false;
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& path) {
      if (held || std::string_view(op) != "open" || !path.ends_with("/r2.lease")) return 0;
      held = true;  // the outage, this read held up through it
      clock.Advance(120s);
      EXPECT_TRUE(mine.Heartbeat().ok());
      EXPECT_TRUE(other.Heartbeat().ok());
      return 0;
    });
    EXPECT_FALSE(mine.IsDead("r2"));
  }
  ASSERT_TRUE(held);
  for (int i = 0; i < 2; ++i) {  // 15 s on, the other replica's next beats not yet seen
    clock.Advance(7500ms);
    ASSERT_TRUE(mine.Heartbeat().ok());
    EXPECT_FALSE(mine.IsDead("r2")) << "judged dead " << 7.5 * (i + 1) << " s after it wrote";
  }
}

// An outage of the volume shorter than a lease timeout (a server failing over in 20 s) that
// holds both replicas up: our client gets back first, the other's 18 s later (its reconnect
// backs off longer). That replica, alive when our gap began, gets a whole lease timeout from our
// return; counted across the gap, the other's silence would reach it 15 s after our return.
TEST_F(LeaseTest, AReplicaBackLaterThanUsFromAnOutageIsNotJudgedDead) {
  TwoReplicas two(config);
  SimulatedClock& clock = two.clock;
  LeaseBook& mine = two.mine;
  LeaseBook& other = two.other;
  clock.Advance(7500ms);
  ASSERT_TRUE(mine.Heartbeat().ok());  // the other's beat now is held up by the outage
  clock.Advance(22s);                  // ours, too
  ASSERT_TRUE(mine.Heartbeat().ok());
  for (int s = 1; s <= 18; ++s) {  // we look every second, and beat every 7.5 s
    clock.Advance(1s);
    if (s % 7 == 0) {
      ASSERT_TRUE(mine.Heartbeat().ok());
    }
    ASSERT_FALSE(mine.IsDead("r2")) << "judged dead " << s << " s after our return";
  }
  ASSERT_TRUE(other.Heartbeat().ok());
  clock.Advance(1s);
  EXPECT_FALSE(mine.IsDead("r2"));
}

// A dead replica whose lease reads fail now and then (one in three: EIO on a soft mount, or
// EACCES refused now and then, as when Kerberos tickets expire): a failed read shows no life, so
// its silence is counted across the failures and it is judged dead at the first good read after
// a lease timeout; never while a read has just failed. So is one whose lease is missing (r3, a
// replica that never wrote one), counted from the first look. Taken for a change, each failure
// started the count again, and such claims were never taken over.
TEST_F(LeaseTest, AReplicaIsJudgedDeadThoughItsLeaseReadsFailNowAndThen) {
  for (const int error : {EIO, EACCES}) {
    for (const std::string owner : {"r2", "r3"}) {
      SCOPED_TRACE(std::string(std::strerror(error)) + ", " + owner);
      TwoReplicas two(config);
      SimulatedClock& clock = two.clock;
      LeaseBook& mine = two.mine;
      int reads = 0;
      bool failed_last = false;
      const test::ScopedPathCall seam([&](const char* op, const std::string& path) {
        if (std::string_view(op) != "open" || !path.ends_with("/" + owner + ".lease")) return 0;
        failed_last = ++reads % 3 == 0;
        return failed_last ? error : 0;
      });
      int t = 0;  // seconds since r2's last write; we look every second, and beat every 7 s
      for (; t <= 120 && !mine.IsDead(owner); ++t) {
        clock.Advance(1s);
        if ((t + 1) % 7 == 0) {
          ASSERT_TRUE(mine.Heartbeat().ok());
        }
      }
      ASSERT_LE(t, 120) << "never judged dead";
      EXPECT_FALSE(failed_last) << "judged dead on a failed read";
      EXPECT_GE(t, 30) << "judged dead before a lease timeout of silence";
      EXPECT_LE(t, 31) << "the reads at 29 or 30 s fail, the next does not";
    }
  }
}

// A live replica's lease that this one could never read (EACCES: another uid, mode 0600), then
// removed, say by an operator acting on the warning, before that replica writes it again: the
// read that finds it missing is a change, not the silence of a lease missing all along.
TEST_F(LeaseTest, ALeaseUnreadableFromTheStartThenRemovedIsNotSilent) {
  TwoReplicas two(config);  // r1 has read r2's lease once: drop what it saw
  Config fresh_config = two.mine_config;
  LeaseBook fresh(fresh_config, two.clock);
  ASSERT_TRUE(fresh.Heartbeat().ok());
  SimulatedClock& clock = two.clock;
  const std::string lease = fresh.Dir() + "/r2.lease";
  {
    const test::ScopedPathCall seam([&](const char* op, const std::string& path) {
      return std::string_view(op) == "open" && path == lease ? EACCES : 0;
    });
    for (int s = 1; s <= 60; ++s) {  // r2 beats on, unread; we look every second
      clock.Advance(1s);
      if (s % 7 == 0) {
        ASSERT_TRUE(fresh.Heartbeat().ok());
        ASSERT_TRUE(two.other.Heartbeat().ok());
      }
      ASSERT_FALSE(fresh.IsDead("r2"));
    }
  }
  ASSERT_EQ(::unlink(lease.c_str()), 0);
  clock.Advance(1s);
  EXPECT_FALSE(fresh.IsDead("r2")) << "judged dead one read after its lease was removed";
}

// Two processes with one id: each heartbeat finds the other's write since its own, and both
// report it for a lease timeout after the last such finding. A process alone never does.
TEST_F(LeaseTest, TwoInstancesWithOneIdSeeEachOther) {
  SimulatedClock clock;
  LeaseBook a(config, clock);
  LeaseBook b(config, clock);
  Config other_config = config;
  other_config.replica_id = "r2";
  LeaseBook other(other_config, clock);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a.Heartbeat().ok());
    ASSERT_TRUE(other.Heartbeat().ok());
  }
  EXPECT_FALSE(a.IdInUseElsewhere());
  ASSERT_TRUE(b.Heartbeat().ok());  // b's first write: it had none to compare with
  EXPECT_FALSE(b.IdInUseElsewhere());
  ASSERT_TRUE(a.Heartbeat().ok());
  EXPECT_TRUE(a.IdInUseElsewhere());
  ASSERT_TRUE(b.Heartbeat().ok());
  EXPECT_TRUE(b.IdInUseElsewhere());
  EXPECT_FALSE(other.IdInUseElsewhere());
  // b is gone: a's own heartbeats find only its writes, and the report ends a timeout later.
  ASSERT_TRUE(a.Heartbeat().ok());
  clock.Advance(1s);
  EXPECT_TRUE(a.IdInUseElsewhere());
  clock.Advance(1s);
  EXPECT_FALSE(a.IdInUseElsewhere());
}

TEST_F(LeaseTest, AFreeIdIsNotWaitedFor) {
  SimulatedClock clock;  // sleeps are recorded and return at once
  LeaseBook book(config, clock);
  EXPECT_EQ(book.CheckIdFree({}), std::nullopt) << "no lease yet";
  {
    LeaseBook before(config, clock);
    ASSERT_TRUE(before.Heartbeat().ok());
    before.MarkStopped();
  }
  EXPECT_EQ(book.CheckIdFree({}), std::nullopt) << "stopped cleanly";
  // A process of this host that is gone (a crash and a restart on one machine), and one that
  // had our pid (a restarted container).
  pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ASSERT_GT(gone, 0);
  ASSERT_EQ(::waitpid(gone, nullptr, 0), gone);
  ASSERT_FALSE(PidSpace().empty());
  const nlohmann::json predecessor = {{"replica", "r1"},
                                      {"instance", "0123456789abcdef"},
                                      {"host", Host()},
                                      {"pid", gone},
                                      {"pid_space", PidSpace()}};
  WriteLease(predecessor);
  EXPECT_EQ(book.CheckIdFree({}), std::nullopt);
  ASSERT_TRUE(clock.SleepsForTest().empty());
  // One that exited and is not reaped yet (a zombie, which kill() still finds): gone too.
  pid_t zombie = ::fork();
  if (zombie == 0) ::_exit(0);
  ASSERT_GT(zombie, 0);
  siginfo_t exited{};  // waited for without reaping it
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(zombie), &exited, WEXITED | WNOWAIT), 0);
  auto unreaped = predecessor;
  unreaped["pid"] = zombie;
  WriteLease(unreaped);
  EXPECT_EQ(book.CheckIdFree({}), std::nullopt);
  EXPECT_TRUE(clock.SleepsForTest().empty()) << "waited for a process that had exited";
  ASSERT_EQ(::waitpid(zombie, nullptr, 0), zombie);
  // The same host name and pid from another boot or machine (a cloned VM keeps the host name,
  // and the host-name default id with it), or from a version that wrote no pid space: there,
  // that pid may be a live twin's. Watched, and free when it does not change.
  for (const char* other : {"another-boot/4026531836", ""}) {
    auto lease = predecessor;
    if (*other != '\0') {
      lease["pid_space"] = other;
    } else {
      lease.erase("pid_space");
    }
    WriteLease(lease);
    const size_t before = clock.SleepsForTest().size();
    EXPECT_EQ(book.CheckIdFree({}), std::nullopt);
    EXPECT_GT(clock.SleepsForTest().size(), before) << "not watched: " << lease.dump();
  }
  // A lease with our host and pid may be a restarted container's predecessor, or a twin
  // container with the same host name (both pid 1): watched, and free when it does not change.
  WriteLease(
      {{"replica", "r1"}, {"instance", "0123456789abcdef"}, {"host", Host()}, {"pid", ::getpid()}});
  EXPECT_EQ(book.CheckIdFree({}), std::nullopt);
  const size_t sleeps = clock.SleepsForTest().size();
  EXPECT_GT(sleeps, 0u);
  // Another host's lease that does not change while watched: a predecessor, after the wait.
  WriteLease({{"replica", "r1"}, {"instance", "0123456789abcdef"}, {"host", "elsewhere"}});
  EXPECT_EQ(book.CheckIdFree({}), std::nullopt);
  EXPECT_GT(clock.SleepsForTest().size(), sleeps);
}

// A second process with the id of one that is running (on another host) is refused, naming
// the holder.
TEST_F(LeaseTest, AnIdHeldByALiveProcessIsRefused) {
  WriteLease({{"replica", "r1"}, {"instance", "0123456789abcdef"}, {"host", "twin"}, {"pid", 42}});
  std::atomic<bool> done{false};
  std::thread beating([&] {  // much faster than the 0.5 s heartbeat interval; at most 10 s
    for (int seq = 0; seq < 500 && !done.load(); ++seq) {
      (void)fs::AtomicWriteFile(LeasePath(), nlohmann::json{{"replica", "r1"},
                                                            {"instance", "0123456789abcdef"},
                                                            {"host", "twin"},
                                                            {"pid", 42},
                                                            {"seq", seq}}
                                                 .dump());
      std::this_thread::sleep_for(20ms);
    }
  });
  LeaseBook second(config, RealClock::Instance());
  const auto refused = second.CheckIdFree({});
  done = true;
  beating.join();
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(*refused,
            "APP_REPLICA_ID: \"r1\" is in use by a live process (host twin, pid 42); give each "
            "replica its own id");
}

// A process refused at start-up (it never wrote a lease) does not mark the holder's lease
// stopped when it ends; and a "stopped" written by a third process does not free the id.
TEST_F(LeaseTest, OnlyTheHolderCanMarkItsLeaseStopped) {
  SimulatedClock clock;
  LeaseBook holder(config, clock);
  ASSERT_TRUE(holder.Heartbeat().ok());
  const auto before = fs::ReadSmallFile(LeasePath());
  ASSERT_TRUE(before.ok());
  LeaseBook refused(config, clock);
  refused.MarkStopped();
  EXPECT_EQ(*fs::ReadSmallFile(LeasePath()), *before);
  // A twin that wrote a lease too, but not the last one, leaves the other's alone as well.
  LeaseBook twin(config, clock);
  ASSERT_TRUE(twin.Heartbeat().ok());
  ASSERT_TRUE(holder.Heartbeat().ok());
  const auto holders = fs::ReadSmallFile(LeasePath());
  ASSERT_TRUE(holders.ok());
  twin.MarkStopped();
  EXPECT_EQ(*fs::ReadSmallFile(LeasePath()), *holders);

  WriteLease({{"replica", "r1"}, {"instance", "0123456789abcdef"}, {"host", "h"}, {"pid", 42}});
  std::thread third([&] {
    std::this_thread::sleep_for(100ms);
    (void)fs::AtomicWriteFile(
        LeasePath(),
        nlohmann::json{{"replica", "r1"}, {"instance", "fedcba9876543210"}, {"stopped", true}}
            .dump());
  });
  LeaseBook next(config, RealClock::Instance());
  EXPECT_TRUE(next.CheckIdFree({}).has_value());
  third.join();
}

// A predecessor that stops cleanly while it is watched (its last write says so) leaves the id
// free.
TEST_F(LeaseTest, AnIdWhoseHolderStopsWhileWatchedIsFree) {
  const nlohmann::json lease = {
      {"replica", "r1"}, {"instance", "0123456789abcdef"}, {"host", "old"}, {"pid", 42}};
  WriteLease(lease);
  std::thread stopping([&] {
    std::this_thread::sleep_for(100ms);
    auto last = lease;
    last["stopped"] = true;
    (void)fs::AtomicWriteFile(LeasePath(), last.dump());
  });
  LeaseBook next(config, RealClock::Instance());
  EXPECT_EQ(next.CheckIdFree({}), std::nullopt);
  stopping.join();
}

}  // namespace
}  // namespace nbu::core
