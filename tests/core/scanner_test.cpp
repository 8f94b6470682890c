#include "core/scanner.h"

#include "support/captured_log.h"
#include "support/process.h"
#include "support/tmpfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>
#include <thread>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;
using nbu::test::TempDir;
using nbu::test::WriteFile;

// Whether openat2 can be called here (not where it is missing, Linux before 5.6, or a seccomp
// profile filters it): without it the scanner opens by path, and the tests of what openat2
// refuses do not apply.
bool HaveOpenat2() {
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  const long probe = ::syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof how);
  if (probe >= 0) ::close(static_cast<int>(probe));
  return probe >= 0 || (errno != ENOSYS && errno != EPERM);
}

class ScannerTest : public ::testing::Test {
 protected:
  ScannerTest() {
    config.incoming_dir = dir.path() + "/incoming";
    config.min_file_age_s = 5;
  }
  std::string In(const std::string& rel) { return config.incoming_dir + "/s1/" + rel; }
  std::set<std::string> Drain(BoundedQueue<WorkItem>& q) {
    std::set<std::string> out;
    while (q.size() > 0) out.insert(q.Pop({})->rel);
    return out;
  }
  // The scan of session s1 past the minimum age, with a tmpfs mounted at `mounted` (below
  // incoming) that holds `file` (below s1): what it queued, and its stats. Nothing, and *skip
  // says why, where openat2 cannot be called (the scanner then opens by path and cannot tell a
  // mount) or a tmpfs cannot be mounted.
  struct MountScan {
    std::set<std::string> queued;
    Scanner::Stats stats;
  };
  std::optional<MountScan> ScanWithMountAt(const std::string& mounted, const std::string& file,
                                           std::string* skip) {
    if (!HaveOpenat2()) {
      *skip = "openat2 is missing or filtered here: the scanner opens by path, as before";
      return std::nullopt;
    }
    nbu::test::ScopedTmpfs mount(config.incoming_dir + "/" + mounted, "1m");
    if (!mount.ok()) {
      *skip = mount.error();
      return std::nullopt;
    }
    WriteFile(In(file), "t");
    BoundedQueue<WorkItem> q(100);
    Scanner scanner(config, clock, q, inst);
    scanner.ScanOnce("s1", {});
    clock.Advance(5s);
    MountScan out;
    out.stats = scanner.ScanOnce("s1", {});
    out.queued = Drain(q);
    return out;
  }

  TempDir dir;
  Config config;
  SimulatedClock clock{false};
  telemetry::MetricsRegistry registry;
  Instruments inst{registry};
};

TEST_F(ScannerTest, QueuesCompleteFilesOnceWithFilters) {
  WriteFile(In("a.csv"), "a");
  WriteFile(In("sub/deeper/b c.bin"), "bb");
  WriteFile(In("x.completed"), "x");
  WriteFile(In(".rsync.tmp.XYZ"), "hidden");
  WriteFile(In(".nfs0000000012345"), "silly");
  WriteFile(In(".hiddendir/f"), "in a hidden dir");
  WriteFile(In("skip.tmp"), "ignored");
  WriteFile(In("skip.part"), "ignored");
  ASSERT_EQ(::symlink("a.csv", In("link.csv").c_str()), 0);
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(q.size(), 0u);
  clock.Advance(5s);
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"a.csv", "sub/deeper/b c.bin", "x.completed"}));
  EXPECT_EQ(stats.queued, 3u);
  // Already queued: not queued again, and not stat-ed again.
  clock.Advance(5s);
  const auto again = scanner.ScanOnce("s1", {});
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(again.stats, 0u);
  EXPECT_EQ(inst.files_discovered.Value(), 3);
}

// With APP_INCLUDE_DOT_FILES, dot-files and dot-directories are names like others (a Zarr
// store's .zattrs and .zarray, a .git tree), through the same filters; an NFS silly rename is
// still skipped, counted as ignored.
TEST_F(ScannerTest, DotFilesAreTakenWhenIncluded) {
  config.include_dot_files = true;
  config.ignore_patterns = {"*.tmp", ".*.??????"};  // rsync's temporaries, as the README says
  WriteFile(In("store.zarr/.zattrs"), "{}");
  WriteFile(In("store.zarr/0/.zarray"), "{}");
  WriteFile(In(".hidden-dir/f"), "f");
  WriteFile(In(".profile"), "p");
  WriteFile(In(".nfs0000000000b1a2c300000004"), "deleted while open");
  WriteFile(In(".data.bin.a1B2c3"), "an rsync temporary");
  WriteFile(In(".skip.tmp"), "ignored by pattern");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"store.zarr/.zattrs", "store.zarr/0/.zarray",
                                             ".hidden-dir/f", ".profile"}));
  EXPECT_EQ(stats.ignored, 3u) << stats.ignored_example;
  // Off (the default): none of them, the directories not entered.
  config.include_dot_files = false;
  Scanner skipping(config, clock, q, inst);
  skipping.ScanOnce("s1", {});
  clock.Advance(5s);
  const auto off = skipping.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), std::set<std::string>{});
  EXPECT_EQ(off.ignored, 7u) << off.ignored_example;  // 6 files, and .hidden-dir/
}

// What incoming holds beside the session's directory is never scanned: files at its top and
// other directories that hold a file at any depth count; empty directories (a finished session
// keeps its tree), names the filters skip, a directory holding only such names (an NFS silly
// rename, a .tmp), links and the replicas' start-up probes do not.
TEST_F(ScannerTest, WhatLiesOutsideTheSessionIsCounted) {
  BoundedQueue<WorkItem> q(1);
  Scanner scanner(config, clock, q, inst);
  WriteFile(In("ours.bin"), "o");
  EXPECT_EQ(scanner.LookOutside("s1").count, 0u);
  WriteFile(config.incoming_dir + "/stray.bin", "s");
  WriteFile(config.incoming_dir + "/S1/misspelt.bin", "m");
  ASSERT_TRUE(fs::MkdirAll(config.incoming_dir + "/done-session").ok());
  WriteFile(config.incoming_dir + "/.hidden", "h");
  WriteFile(config.incoming_dir + "/skip.tmp", "t");
  WriteFile(config.incoming_dir + "/old/.nfs0000000000b1a2c300000004", "deleted while open");
  WriteFile(config.incoming_dir + "/partial/upload.tmp", "a file the patterns skip");
  ASSERT_TRUE(fs::MkdirAll(config.incoming_dir + "/finished/sub/deeper").ok());  // emptied
  WriteFile(config.incoming_dir + "/.nbu-probe-r1-0123456789abcdef", "");
  ASSERT_EQ(::symlink("/etc", (config.incoming_dir + "/link").c_str()), 0);
  const Scanner::Outside outside = scanner.LookOutside("s1");
  EXPECT_EQ(outside.count, 2u);
  EXPECT_TRUE(outside.example == "stray.bin" || outside.example == "S1/") << outside.example;
  EXPECT_EQ(scanner.LookOutside("S1").count, 2u) << "s1 is outside S1's watch";
  // A stop ends a look (a shutdown must not wait on a slow volume's tree).
  std::stop_source stopped;
  stopped.request_stop();
  EXPECT_EQ(scanner.LookOutside("s1", stopped.get_token()).count, 0u);
  // A file deep in a directory counts it; with dot-files taken, the replicas' probes still do
  // not, nor a snapshot directory.
  WriteFile(config.incoming_dir + "/finished/sub/deeper/late.bin", "l");
  config.include_dot_files = true;
  ASSERT_TRUE(fs::MkdirAll(config.incoming_dir + "/.snapshot/hourly.0").ok());
  WriteFile(config.incoming_dir + "/.snapshot/hourly.0/copy.bin", "c");
  // stray.bin, S1/, finished/ and now .hidden.
  EXPECT_EQ(scanner.LookOutside("s1").count, 4u);
  // A tree deeper than the look goes is neither counted nor missed: told apart as unchecked.
  std::string deep = config.incoming_dir + "/deep";
  for (int i = 0; i < 70; ++i) deep += "/d";
  ASSERT_TRUE(fs::MkdirAll(deep).ok());
  const Scanner::Outside with_deep = scanner.LookOutside("s1");
  EXPECT_EQ(with_deep.count, 4u);
  EXPECT_EQ(with_deep.unchecked, 1u);
}

// A session directory that is itself a symlink is not followed out of incoming: the files it
// points at are not the producer's to give away (nor the service's own, were it to point at
// the processing tree).
TEST_F(ScannerTest, ASessionDirectoryThatIsASymlinkIsNotFollowed) {
  WriteFile(dir.path() + "/elsewhere/theirs.bin", "t");
  WriteFile(In("ours.bin"), "o");
  ASSERT_EQ(
      ::symlink((dir.path() + "/elsewhere").c_str(), (config.incoming_dir + "/linked").c_str()), 0);
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  for (int i = 0; i < 2; ++i) {
    const auto stats = scanner.ScanOnce("linked", {});
    EXPECT_EQ(stats.files_seen, 0u);
    // Shown with the symlinks (the status, and a warning when their count grows), not warned
    // at every scan.
    EXPECT_EQ(stats.not_regular, 1u);
    EXPECT_EQ(stats.not_regular_example, "./");
    clock.Advance(5s);
  }
  EXPECT_EQ(q.size(), 0u);
  // The same scanner still takes a real session's files.
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"ours.bin"}));
}

// Nor is a directory above a subdirectory, swapped for a symlink between the listing that found
// the subdirectory and its opening: its files (another session's, the processing tree's) would be
// taken as this session's and uploaded under the wrong name.
TEST_F(ScannerTest, ASubdirectorysParentSwappedForASymlinkIsNotFollowed) {
  if (!HaveOpenat2()) {
    GTEST_SKIP() << "openat2 is missing or filtered here: the scanner opens by path, as before";
  }
  WriteFile(In("a/b/mine.bin"), "m");
  WriteFile(dir.path() + "/elsewhere/b/theirs.bin", "t");
  const std::string moved = dir.path() + "/a-moved";
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.SetFailForTest([&](std::string_view call, const std::string& rel) {
    if (call == "open" && rel == "a/b") {  // `a` listed already: swapped now
      EXPECT_EQ(::rename(In("a").c_str(), moved.c_str()), 0);
      EXPECT_EQ(::symlink((dir.path() + "/elsewhere").c_str(), In("a").c_str()), 0);
    }
    return 0;
  });
  // At each scan (the second past the minimum age): `a` is a directory when listed.
  for (int i = 0; i < 3; ++i) {
    scanner.ScanOnce("s1", {});
    ASSERT_EQ(::unlink(In("a").c_str()), 0);
    ASSERT_EQ(::rename(moved.c_str(), In("a").c_str()), 0);
    clock.Advance(5s);
  }
  EXPECT_EQ(Drain(q), std::set<std::string>{});
}

// A subdirectory that is another mount (an NFSv4 crossmnt export, an automount, a bind mount):
// no claim can be renamed out of it (EXDEV), so its files are not queued to fail for ever; it is
// counted as unreadable, and the example says why. The rest of the session is scanned.
TEST_F(ScannerTest, ASubdirectoryOnAnotherMountIsCountedNotQueued) {
  WriteFile(In("here.bin"), "h");
  std::string skip;
  const auto scan = ScanWithMountAt("s1/sub", "sub/there.bin", &skip);
  if (!scan) GTEST_SKIP() << skip;
  EXPECT_EQ(scan->queued, std::set<std::string>{"here.bin"});
  EXPECT_EQ(scan->stats.unreadable, 1u);
  const std::string& example = scan->stats.unreadable_example;
  EXPECT_NE(example.find("sub/: "), std::string::npos) << example;
  EXPECT_NE(example.find("another mount"), std::string::npos) << example;
}

// The same for a session directory that is itself another mount (a per-session export, an
// automount).
TEST_F(ScannerTest, ASessionDirectoryOnAnotherMountIsCountedNotQueued) {
  std::string skip;
  const auto scan = ScanWithMountAt("s1", "there.bin", &skip);
  if (!scan) GTEST_SKIP() << skip;
  EXPECT_EQ(scan->queued, std::set<std::string>{});
  EXPECT_EQ(scan->stats.unreadable, 1u);
  const std::string& example = scan->stats.unreadable_example;
  EXPECT_NE(example.find("another mount"), std::string::npos) << example;
}

// The session directory itself that cannot be reached (here: incoming's path runs through a
// symlink loop) is reported, not skipped as a subdirectory swapped mid-scan is.
TEST_F(ScannerTest, ASessionDirectoryInASymlinkLoopIsReported) {
  ASSERT_EQ(::symlink("loop", (dir.path() + "/loop").c_str()), 0);
  config.incoming_dir = dir.path() + "/loop/incoming";
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(stats.unreadable, 1u);
  EXPECT_NE(stats.unreadable_example.find("Too many levels of symbolic links"), std::string::npos)
      << stats.unreadable_example;
}

// A subdirectory replaced by a file between its listing and its opening is gone as a directory,
// as one removed is: no unreadable entry, no warning; the file is looked at by the next scan.
TEST_F(ScannerTest, ASubdirectoryReplacedByAFileIsNoError) {
  WriteFile(In("sub/a.bin"), "a");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.SetFailForTest([&](std::string_view call, const std::string& rel) {
    if (call == "open" && rel == "sub") {
      std::filesystem::remove_all(In("sub"));
      WriteFile(In("sub"), "now a file");
    }
    return 0;
  });
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(stats.unreadable, 0u) << stats.unreadable_example;
  EXPECT_EQ(stats.not_regular, 0u) << stats.not_regular_example;
  scanner.SetFailForTest(nullptr);
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), std::set<std::string>{"sub"});
}

// A file this process may list and stat but not open (another user's, mode 0600) is not queued,
// and each scan that finds it ready counts it with its error, so it shows in the status. Needs
// root, to scan as another user.
TEST_F(ScannerTest, AFileThatCannotBeOpenedIsCountedNotQueued) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to scan as another user";
  WriteFile(In("mine.bin"), "m");
  WriteFile(In("private.bin"), "p");
  ASSERT_EQ(::chmod(In("private.bin").c_str(), 0600), 0);
  ASSERT_EQ(::chmod(In("mine.bin").c_str(), 0644), 0);
  for (const std::string& d : {dir.path(), config.incoming_dir, config.incoming_dir + "/s1"}) {
    ASSERT_EQ(::chmod(d.c_str(), 0755), 0);
  }
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  ASSERT_EQ(::seteuid(65534), 0);  // nobody
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  const auto stats = scanner.ScanOnce("s1", {});
  ASSERT_EQ(::seteuid(0), 0);
  EXPECT_EQ(Drain(q), (std::set<std::string>{"mine.bin"}));
  EXPECT_EQ(stats.unreadable, 1u);
  EXPECT_EQ(stats.unreadable_example.rfind("private.bin: ", 0), 0u) << stats.unreadable_example;
  EXPECT_NE(stats.unreadable_example.find("ermission"), std::string::npos)
      << stats.unreadable_example;
}

// A file ready by its stat that cannot be opened keeps its first sight: each scan tries the open
// again and counts it, the backlog age grows while it waits (an alert on that age must see a file
// stuck for days), it is not taken for a young file, and once it opens it is queued at once.
TEST_F(ScannerTest, AFileThatCannotBeOpenedIsCountedAtEveryScanAndKeepsItsAge) {
  WriteFile(In("locked.bin"), "l");
  WriteFile(In("fine.bin"), "f");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  bool failing = true;
  scanner.SetFailForTest([&](std::string_view call, const std::string& rel) {
    return failing && call == "open-file" && rel == "locked.bin" ? EACCES : 0;
  });
  scanner.ScanOnce("s1", {});
  for (int i = 1; i <= 4; ++i) {
    clock.Advance(5s);
    const auto stats = scanner.ScanOnce("s1", {});
    EXPECT_EQ(stats.unreadable, 1u) << "scan " << i;
    EXPECT_EQ(stats.unreadable_example.rfind("locked.bin: ", 0), 0u) << stats.unreadable_example;
    EXPECT_NE(stats.unreadable_example.find("open: Permission denied"), std::string::npos)
        << stats.unreadable_example;
    EXPECT_EQ(stats.not_ready, 0u) << stats.not_ready_example;
    EXPECT_GE(scanner.OldestPendingAgeS(), 5.0 * i) << "scan " << i;
    EXPECT_EQ(scanner.NextDue(), std::nullopt) << "no scan is due early for it";
  }
  EXPECT_EQ(Drain(q), std::set<std::string>{"fine.bin"});
  failing = false;  // its mode fixed: a change of ctime alone, no new minimum age
  clock.Advance(1s);
  const auto fixed = scanner.ScanOnce("s1", {});
  EXPECT_EQ(fixed.unreadable, 0u);
  EXPECT_EQ(fixed.queued, 1u);
  EXPECT_EQ(Drain(q), std::set<std::string>{"locked.bin"});
  clock.Advance(5s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u) << "queued once";
  EXPECT_EQ(inst.files_discovered.Value(), 2);
}

// A ready file whose claim failed for a reason that keeps it in incoming (a permission on its
// directory, an I/O error) is queued again while unchanged by the first scan a poll interval
// after the failure, and keeps its first sight: not taken for a young file, and the backlog age
// grows while it waits. One whose claim settled otherwise (won, lost) is tracked anew.
TEST_F(ScannerTest, AFileWhoseClaimFailedIsQueuedAgainAndKeepsItsAge) {
  WriteFile(In("held.bin"), "h");
  WriteFile(In("taken.bin"), "t");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"held.bin", "taken.bin"}));
  ASSERT_EQ(::unlink(In("taken.bin").c_str()), 0);  // claimed
  scanner.Forget("s1", "taken.bin");
  for (int i = 1; i <= 3; ++i) {
    scanner.Forget("s1", "held.bin", /*held=*/true);
    clock.Advance(2s);
    const auto stats = scanner.ScanOnce("s1", {});
    EXPECT_EQ(stats.queued, 1u) << "scan " << i;
    EXPECT_EQ(stats.not_ready, 0u) << stats.not_ready_example;
    EXPECT_EQ(Drain(q), std::set<std::string>{"held.bin"});
    EXPECT_GE(scanner.OldestPendingAgeS(), 5.0 + 2.0 * i);
  }
  // Not tried again by the scans that change hints bring before a poll interval has passed (a
  // claim each on the file server), nor counted as found again when it is.
  const auto discovered = inst.files_discovered.Value();
  scanner.Forget("s1", "held.bin", /*held=*/true);
  for (int i = 0; i < 3; ++i) {
    clock.Advance(10ms);
    EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u) << "tried again at once";
  }
  clock.Advance(2s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 1u);
  EXPECT_EQ(Drain(q), std::set<std::string>{"held.bin"});
  EXPECT_EQ(inst.files_discovered.Value(), discovered);
  // The scan loop is woken for it: due a poll interval after the failure, which came after the
  // periodic scan began, it would otherwise wait for the periodic scan after next. The wake
  // comes no sooner than half an interval after the scan before it (failures spread over an
  // interval must not each bring a scan).
  Drain(q);
  clock.Advance(100ms);
  scanner.Forget("s1", "held.bin", /*held=*/true);  // failed 100 ms after that scan
  const MonoTime failed = clock.Now();
  clock.Advance(1900ms);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u) << "not due yet";
  EXPECT_EQ(scanner.NextDue(), failed + 2900ms) << "half an interval after this scan";
  clock.Advance(100ms);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 1u);
  EXPECT_EQ(Drain(q), std::set<std::string>{"held.bin"});
  // Settled: a file under the name is tracked from scratch, and waits the minimum age.
  scanner.Forget("s1", "held.bin");
  clock.Advance(2s);
  const auto settled = scanner.ScanOnce("s1", {});
  EXPECT_EQ(settled.queued, 0u);
  EXPECT_EQ(settled.not_ready, 1u);
}

// A file whose claim failed and whose open then fails when it is tried again was queued before:
// when it finally opens, it is not counted as discovered a second time.
TEST_F(ScannerTest, AClaimFailureThenAnOpenFailureIsDiscoveredOnce) {
  WriteFile(In("held.bin"), "h");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  bool fail_open = false;
  scanner.SetFailForTest([&](std::string_view call, const std::string&) {
    return call == "open-file" && fail_open ? EACCES : 0;
  });
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  ASSERT_EQ(Drain(q), std::set<std::string>{"held.bin"});
  const auto discovered = inst.files_discovered.Value();
  scanner.Forget("s1", "held.bin", /*held=*/true);
  clock.Advance(2s);
  fail_open = true;
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u);
  fail_open = false;
  clock.Advance(10ms);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 1u);
  EXPECT_EQ(inst.files_discovered.Value(), discovered);
}

// A directory whose path is longer than PATH_MAX cannot be opened by path, and its files could
// not be claimed by name either: it is counted with the unreadable entries, named by its
// relative path, so that the status shows it, and the files beside it go on.
TEST_F(ScannerTest, ADirectoryPastPathMaxIsCountedAsUnreadable) {
  WriteFile(In("near.bin"), "n");
  int fd = ::open(In("").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string part(250, 'd');
  std::string rel;
  for (int depth = 0; depth < 17; ++depth) {  // 17 x 251 bytes: past PATH_MAX (4096)
    ASSERT_EQ(::mkdirat(fd, part.c_str(), 0755), 0) << depth;
    const int next = ::openat(fd, part.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0) << depth;
    ::close(fd);
    fd = next;
    if (depth < 16) rel += (rel.empty() ? "" : "/") + part;
  }
  const int file = ::openat(fd, "deep.bin", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(file, 0);
  ::close(file);
  ::close(fd);
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"near.bin"}));
  EXPECT_EQ(stats.unreadable, 1u);
  EXPECT_EQ(stats.unreadable_example.rfind(rel + "/" + part + "/: ", 0), 0u)
      << stats.unreadable_example;
  EXPECT_NE(stats.unreadable_example.find("File name too long"), std::string::npos);
}

// An entry whose stat fails (an I/O error, a stale handle, a permission on some servers) is not
// queued, and not silent either: each scan counts it with its error, as it counts a file it cannot
// open, so that the status, a warning and the recent errors name it. A name gone between its
// listing and its stat (ENOENT) is no error. Listed with or without its type (DT_UNKNOWN); one
// listed without it is stat-ed even when the filters skip its name (it may be a directory), and
// counted if that fails.
TEST_F(ScannerTest, AnEntryThatCannotBeStatedIsCountedNotQueued) {
  for (const char* name : {"a.bin", "b.bin", "c.bin", "notes.tmp"}) WriteFile(In(name), name);
  for (const bool unknown : {false, true}) {
    BoundedQueue<WorkItem> q(100);
    Scanner scanner(config, clock, q, inst);
    scanner.SetEntryTypesUnknownForTest(unknown);
    scanner.SetFailForTest([](std::string_view call, const std::string& rel) {
      if (call != "stat") return 0;
      return rel == "b.bin" || rel == "notes.tmp" ? EIO : rel == "c.bin" ? ENOENT : 0;
    });
    for (int i = 0; i < 3; ++i) {
      const auto stats = scanner.ScanOnce("s1", {});
      EXPECT_EQ(stats.unreadable, unknown ? 2u : 1u) << "scan " << i << ", unknown: " << unknown;
      const std::string& example = stats.unreadable_example;
      EXPECT_TRUE(example.starts_with("b.bin: ") || (unknown && example.starts_with("notes.tmp: ")))
          << example;
      EXPECT_NE(example.find("stat: Input/output error"), std::string::npos) << example;
      clock.Advance(5s);
    }
    EXPECT_EQ(Drain(q), (std::set<std::string>{"a.bin"})) << "types unknown: " << unknown;
  }
}

// A listing that fails part-way (readdir reports EIO) is counted like a directory that cannot be
// opened, and the files it did not list this time are not taken as gone: those waiting in the
// queue are not queued a second time once the listing works again (a second claim would find
// the source gone and look like another replica's), and a pending one keeps its clock.
TEST_F(ScannerTest, AListingThatFailsPartWayIsCountedAndForgetsNoFile) {
  for (const char* name : {"a.bin", "b.bin", "c.bin"}) WriteFile(In(name), name);
  BoundedQueue<WorkItem> q(100);  // a backlog: no worker takes from it
  Scanner scanner(config, clock, q, inst);
  bool failing = false;
  scanner.SetFailForTest([&](std::string_view call, const std::string& rel) {
    return failing && call == "readdir" && rel.find('/') == std::string::npos ? EIO : 0;
  });
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  WriteFile(In("sub/d.bin"), "d");
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 3u);  // and d.bin is seen
  clock.Advance(3s);
  failing = true;  // the session directory's listing fails at its first name
  const auto failed = scanner.ScanOnce("s1", {});
  EXPECT_EQ(failed.files_seen, 0u);
  EXPECT_EQ(failed.unreadable, 1u);
  EXPECT_EQ(failed.unreadable_example.rfind("./: ", 0), 0u) << failed.unreadable_example;
  EXPECT_NE(failed.unreadable_example.find("readdir: Input/output error"), std::string::npos)
      << failed.unreadable_example;
  EXPECT_EQ(scanner.NextDue(), std::nullopt) << "d.bin is looked at when it is listed again";
  failing = false;
  clock.Advance(2s);  // d.bin first seen 5 s ago
  const auto again = scanner.ScanOnce("s1", {});
  EXPECT_EQ(again.unreadable, 0u);
  EXPECT_EQ(again.queued, 1u) << "d.bin, on its first sight's clock";
  clock.Advance(5s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u);
  EXPECT_EQ(q.size(), 4u);
  EXPECT_EQ(Drain(q), (std::set<std::string>{"a.bin", "b.bin", "c.bin", "sub/d.bin"}));
  EXPECT_EQ(inst.files_discovered.Value(), 4);
}

// A directory not listed, or listed part-way, is the example rather than a file that came first:
// the names it holds may be many, and unseen.
TEST_F(ScannerTest, ADirectoryNotListedIsTheExampleRatherThanAFile) {
  WriteFile(In("a.bin"), "a");
  WriteFile(In("z/b.bin"), "b");
  WriteFile(In("z/c.bin"), "c");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.SetFailForTest([&](std::string_view call, const std::string& rel) {
    return (call == "stat" && rel == "a.bin") || (call == "readdir" && rel.starts_with("z/")) ? EIO
                                                                                              : 0;
  });
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(stats.unreadable, 2u);
  EXPECT_EQ(stats.unreadable_example.rfind("z/: ", 0), 0u) << stats.unreadable_example;
  EXPECT_NE(stats.unreadable_example.find("readdir"), std::string::npos)
      << stats.unreadable_example;
}

// A subdirectory that cannot be opened for a while (an I/O error, a stale handle) is counted,
// and the files it held stay as they were: queued ones are not queued again when it opens.
TEST_F(ScannerTest, ASubdirectoryThatCannotBeOpenedForAWhileForgetsNoFile) {
  WriteFile(In("sub/a.bin"), "a");
  WriteFile(In("top.bin"), "t");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  bool failing = false;
  scanner.SetFailForTest([&](std::string_view call, const std::string& rel) {
    return failing && call == "open" && rel == "sub" ? ESTALE : 0;
  });
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 2u);
  failing = true;
  const auto failed = scanner.ScanOnce("s1", {});
  EXPECT_EQ(failed.files_seen, 1u);
  EXPECT_EQ(failed.unreadable, 1u);
  EXPECT_EQ(failed.unreadable_example.rfind("sub/: ", 0), 0u) << failed.unreadable_example;
  failing = false;
  for (int i = 0; i < 2; ++i) {
    clock.Advance(5s);
    EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u) << "scan " << i;
  }
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(inst.files_discovered.Value(), 2);
}

// Symlinks (to files, to directories, dangling) and FIFOs are counted and never queued, and a
// linked directory is never entered: its files are not the producer's to give away.
TEST_F(ScannerTest, EntriesThatAreNotRegularFilesAreCountedNeverQueued) {
  WriteFile(In("plain.bin"), "p");
  WriteFile(dir.path() + "/outside/secret.bin", "s");
  ASSERT_EQ(::symlink("plain.bin", In("link.bin").c_str()), 0);
  ASSERT_EQ(::symlink((dir.path() + "/outside").c_str(), In("linkdir").c_str()), 0);
  ASSERT_EQ(::symlink("/nonexistent", In("dangling").c_str()), 0);
  ASSERT_EQ(::mkfifo(In("fifo").c_str(), 0644), 0);
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"plain.bin"}));
  EXPECT_EQ(stats.not_regular, 4u);
  EXPECT_TRUE((std::set<std::string>{"link.bin", "linkdir", "dangling", "fifo"})
                  .contains(stats.not_regular_example))
      << stats.not_regular_example;
}

// Files the filters skip (a dot-file, an ignore pattern, the extension filter) are never queued
// but counted, with the first one's relative path, on every scan (they are not tracked), so that
// the status shows why a producer's file was not uploaded. Accepted files and directories are
// not counted; a dot-directory is not entered, and counts as one entry.
TEST_F(ScannerTest, FilesTheFiltersSkipAreCountedWithAnExample) {
  config.file_extensions = {".csv"};
  config.ignore_patterns = {"draft-*"};
  WriteFile(In("a.csv"), "a");
  WriteFile(In("sub/ok.csv"), "ok");
  WriteFile(In("draft-1.csv"), "an ignore pattern");
  WriteFile(In("data.bin"), "not a .csv");
  WriteFile(In("sub/.hidden.csv"), "a dot-file");
  WriteFile(In(".git/config.csv"), "in a dot-directory, which is not entered");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  const std::set<std::string> skipped{"draft-1.csv", "data.bin", "sub/.hidden.csv", ".git/"};
  const auto first = scanner.ScanOnce("s1", {});
  EXPECT_EQ(first.ignored, 4u);
  EXPECT_TRUE(skipped.contains(first.ignored_example)) << first.ignored_example;
  clock.Advance(5s);
  const auto stats = scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"a.csv", "sub/ok.csv"}));
  EXPECT_EQ(stats.ignored, 4u);
  EXPECT_TRUE(skipped.contains(stats.ignored_example)) << stats.ignored_example;
  ASSERT_EQ(::unlink(In("draft-1.csv").c_str()), 0);
  ASSERT_EQ(::unlink(In("data.bin").c_str()), 0);
  ASSERT_EQ(::unlink(In("sub/.hidden.csv").c_str()), 0);
  const auto dot_dir = scanner.ScanOnce("s1", {});
  EXPECT_EQ(dot_dir.ignored, 1u);
  EXPECT_EQ(dot_dir.ignored_example, ".git/");
  // The example is the path below the session directory.
  ASSERT_TRUE(fs::RemoveTree(In(".git")).ok());
  WriteFile(In("sub/.hidden.csv"), "a dot-file");
  const auto last = scanner.ScanOnce("s1", {});
  EXPECT_EQ(last.ignored, 1u);
  EXPECT_EQ(last.ignored_example, "sub/.hidden.csv");
}

// Some NFS servers and file systems list entries without their type (DT_UNKNOWN). Each type then
// comes from stat: a directory is entered whatever the filters say of its name (as it is when
// listed as DT_DIR), and symlinks and FIFOs are still counted, never queued.
TEST_F(ScannerTest, EntriesListedWithoutTheirTypeAreTypedByStat) {
  config.file_extensions = {".csv"};
  WriteFile(In("a.csv"), "a");
  WriteFile(In("run1/b.csv"), "b");
  WriteFile(In("run1/skip.bin"), "not a .csv");
  WriteFile(In("notes.tmp/deeper/c.csv"), "in a directory an ignore pattern matches");
  ASSERT_EQ(::symlink("a.csv", In("link.csv").c_str()), 0);
  ASSERT_EQ(::mkfifo(In("fifo.csv").c_str(), 0644), 0);
  const std::set<std::string> want{"a.csv", "run1/b.csv", "notes.tmp/deeper/c.csv"};
  for (const bool unknown : {false, true}) {
    BoundedQueue<WorkItem> q(100);
    Scanner scanner(config, clock, q, inst);
    scanner.SetEntryTypesUnknownForTest(unknown);
    scanner.ScanOnce("s1", {});
    clock.Advance(5s);
    const auto stats = scanner.ScanOnce("s1", {});
    EXPECT_EQ(Drain(q), want) << "types unknown: " << unknown;
    EXPECT_EQ(stats.files_seen, 3u) << "types unknown: " << unknown;
    EXPECT_EQ(stats.not_regular, 2u) << "types unknown: " << unknown;
    // Filtered out: the file, not the directory whose name an ignore pattern matches.
    EXPECT_EQ(stats.ignored, 1u) << "types unknown: " << unknown;
    EXPECT_EQ(stats.ignored_example, "run1/skip.bin") << "types unknown: " << unknown;
  }
}

TEST_F(ScannerTest, PendingFilesAreStatedOnlyWhenTheirAgeIsDue) {
  for (int i = 0; i < 10; ++i) WriteFile(In(std::to_string(i) + ".bin"), "x");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  const auto first = scanner.ScanOnce("s1", {});
  EXPECT_EQ(first.stats, 10u);  // first sight
  EXPECT_GT(first.cpu_s, 0.0);  // the scan measures its own cost
  EXPECT_EQ(scanner.NextDue(), clock.Now() + 5s) << "the scan loop wakes when the age is due";
  clock.Advance(2s);
  const auto early = scanner.ScanOnce("s1", {});  // age not due: a listing only
  EXPECT_EQ(early.stats, 0u);
  EXPECT_EQ(early.files_seen, 10u);
  clock.Advance(3s);
  const auto due = scanner.ScanOnce("s1", {});
  EXPECT_EQ(due.stats, 10u);
  EXPECT_EQ(due.queued, 10u);
  EXPECT_FALSE(scanner.NextDue()) << "nothing left to come of age";
}

TEST_F(ScannerTest, ChangeBetweenChecksRestartsTheClock) {
  WriteFile(In("a.bin"), "1");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(2s);
  WriteFile(In("a.bin"), "12");  // written while its stat was not being checked
  scanner.ScanOnce("s1", {});
  clock.Advance(3s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 0u);  // due: changed, so the clock restarts
  clock.Advance(5s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 1u);
  EXPECT_EQ(q.Pop({})->observed.size, 2u);
}

TEST_F(ScannerTest, ExtensionFilterIsCaseInsensitive) {
  config.file_extensions = {".csv"};
  WriteFile(In("a.CSV"), "a");
  WriteFile(In("b.bin"), "b");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(Drain(q), (std::set<std::string>{"a.CSV"}));
}

TEST_F(ScannerTest, GrowingFileWaitsUntilItStopsChanging) {
  WriteFile(In("grow.bin"), "1");
  BoundedQueue<WorkItem> q(100);
  Scanner scanner(config, clock, q, inst);
  for (int i = 2; i < 6; ++i) {
    scanner.ScanOnce("s1", {});
    clock.Advance(5s);
    WriteFile(In("grow.bin"), std::string(static_cast<size_t>(i), 'x'));
  }
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(q.size(), 0u);
  clock.Advance(5s);
  scanner.ScanOnce("s1", {});
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q.Pop({})->observed.size, 5u);
}

TEST_F(ScannerTest, FullQueueMakesTheScanWaitWithoutDroppingFiles) {
  for (int i = 0; i < 5; ++i) WriteFile(In(std::to_string(i) + ".f"), "x");
  BoundedQueue<WorkItem> q(2);
  Scanner scanner(config, clock, q, inst);
  scanner.ScanOnce("s1", {});
  clock.Advance(5s);
  std::set<std::string> got;
  std::jthread consumer([&](std::stop_token st) {
    while (got.size() < 5) {
      auto item = q.Pop(st);
      if (!item) return;
      got.insert(item->rel);
      scanner.Forget("s1", item->rel);
    }
  });
  // Blocks while the queue is full, until the consumer drains (stopped if still blocked at 30 s).
  nbu::test::CallWithDeadline(30s,
                              [&](std::stop_token stop) { return scanner.ScanOnce("s1", stop); });
  // The consumer takes what is left; stopped then, so a file never queued fails the test rather
  // than leaving it waiting for it.
  EXPECT_TRUE(nbu::test::WaitFor([&] { return q.size() == 0; }, 30s)) << q.size() << " left";
  consumer.request_stop();
  consumer.join();
  EXPECT_EQ(got.size(), 5u);
}

TEST_F(ScannerTest, AFullQueueIsLoggedOnceAMinuteWhileTheScanWaits) {
  nbu::test::CapturedLog log("work queue full", LogLevel::kWarn);
  BoundedQueue<WorkItem> q(2);
  Scanner scanner(config, clock, q, inst);
  int next = 0;
  const auto take = [&] {  // as a worker does: the file claimed, out of incoming
    const std::string rel = q.Pop({})->rel;
    ::unlink(In(rel).c_str());
    scanner.Forget("s1", rel);
  };
  // Three new files, seen and then queued: the third finds the queue full, and the scan waits
  // until one is taken.
  const auto round = [&] {
    for (int i = 0; i < 3; ++i) WriteFile(In(std::to_string(next++) + ".f"), "x");
    scanner.ScanOnce("s1", {});
    clock.Advance(5s);
    std::jthread scan([&](std::stop_token stop) { scanner.ScanOnce("s1", stop); });
    ASSERT_TRUE(nbu::test::WaitFor([&] { return q.pushes_waiting() == 1; }, 30s));
    while (q.size() > 0) take();
    scan.join();
    while (q.size() > 0) take();
  };
  round();
  ASSERT_EQ(log.Lines().size(), 1u);
  EXPECT_EQ(log.Json()[0]["queue_capacity"], 2);
  round();  // 5 s later: not again
  EXPECT_EQ(log.Lines().size(), 1u);
  clock.Advance(60s);
  round();
  EXPECT_EQ(log.Lines().size(), 2u);
}

TEST_F(ScannerTest, AScanWatchesTheDirectoriesItLists) {
  WriteFile(In("sub/deeper/b"), "b");
  WriteFile(config.incoming_dir + "/other/c", "c");
  ChangeHints hints;
  ASSERT_TRUE(hints.available()) << hints.error();
  BoundedQueue<WorkItem> q(8);
  Scanner scanner(config, clock, q, inst, &hints);
  scanner.ScanOnce("s1", {});
  EXPECT_EQ(hints.stats().watches, 4u);  // incoming (for new sessions), s1, sub, sub/deeper
  scanner.ScanOnce("other", {});
  EXPECT_EQ(hints.stats().watches, 2u);  // s1's are dropped
}

TEST_F(ScannerTest, AFileReportedClosedIsLookedAtAgainBeforeItsCheckIsDue) {
  ChangeHints hints;
  ASSERT_TRUE(hints.available()) << hints.error();
  BoundedQueue<WorkItem> q(8);
  Scanner scanner(config, clock, q, inst, &hints);  // minimum age 5 s
  ASSERT_TRUE(fs::MkdirAll(In("")).ok());
  scanner.ScanOnce("s1", {});  // watches s1
  // A scan sees the file before its last bytes...
  const int fd = ::open(In("f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "ab", 2), 2);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).stats, 1u);
  clock.Advance(3s);
  ASSERT_EQ(::write(fd, "cd", 2), 2);
  ::close(fd);
  // ... and its close is reported (the service's hint thread reads the events).
  ASSERT_TRUE(nbu::test::CallWithDeadline(30s, [&](std::stop_token stop) {
    return hints.Wait(stop);
  })) << "the close was not reported within 30 s";
  EXPECT_EQ(scanner.ScanOnce("s1", {}).stats, 1u);  // its check was due at 5 s
  // Its clock restarted at its close: ready 5 s after it, not 5 s after the check at 5 s.
  clock.Advance(5s);
  EXPECT_EQ(scanner.ScanOnce("s1", {}).queued, 1u);
}

TEST_F(ScannerTest, MissingSessionDirectoryIsNotAnError) {
  BoundedQueue<WorkItem> q(2);
  Scanner scanner(config, clock, q, inst);
  const auto stats = scanner.ScanOnce("nope", {});
  EXPECT_EQ(stats.files_seen, 0u);
  EXPECT_EQ(stats.unreadable, 0u) << stats.unreadable_example;
  EXPECT_EQ(stats.not_regular, 0u) << stats.not_regular_example;
}

}  // namespace
}  // namespace nbu::core
