#include "util/fs.h"

#include "support/fs_seams.h"
#include "support/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <map>
#include <string_view>

namespace nbu {
namespace {

void Touch(const std::string& path) { std::ofstream(path) << "x"; }

// The stat asked of the server is the same stat as fstat's, field for field that equality
// compares (a claim's stat at open is compared with it after the copy), and sees a change.
TEST(FStatFresh, AgreesWithFStatAndSeesAWrite) {
  test::TempDir dir;
  test::WriteFile(dir / "f", "abc");
  auto fd = fs::OpenRead(dir / "f");
  ASSERT_TRUE(fd.ok());
  auto plain = fs::FStat(fd->get());
  auto fresh = fs::FStatFresh(fd->get());
  ASSERT_TRUE(plain.ok() && fresh.ok());
  EXPECT_TRUE(*plain == *fresh);
  EXPECT_EQ(fresh->ctime_ns, plain->ctime_ns);
  EXPECT_TRUE(fresh->is_regular);
  std::ofstream(dir / "f", std::ios::app) << "d";
  auto after = fs::FStatFresh(fd->get());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size, 4u);
  EXPECT_FALSE(*after == *plain);
}

// A time a producer set past what nanoseconds in an int64_t hold (after 2262: touch -d
// 2300-01-01, which ext4, XFS and NFSv4 keep) is held at the end, still later than any time
// before it, as the newer-version comparisons need; not undefined behaviour (an abort under
// UBSan).
TEST(FromStat, TimesPastTheNanosecondRangeKeepTheirOrder) {
  struct stat st {};
  st.st_mtim = {1'700'000'000, 5};
  st.st_ctim = {-10'000'000'000, 0};  // before 1677
  const fs::FileStat now = fs::FromStat(st);
  EXPECT_EQ(now.mtime_ns, 1'700'000'000'000'000'005);
  st.st_mtim = {10'000'000'000, 0};  // the year 2286
  const fs::FileStat later = fs::FromStat(st);
  EXPECT_GT(later.mtime_ns, now.mtime_ns);
  EXPECT_LT(later.ctime_ns, now.mtime_ns);
  // Through statx too (StatFresh), on a real file.
  test::TempDir dir;
  const std::string path = dir / "future";
  test::WriteFile(path, "x");
  const timespec times[2] = {{0, UTIME_OMIT}, {10'000'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  const auto fresh = fs::StatFresh(path);
  ASSERT_TRUE(fresh.ok());
  EXPECT_GT(fresh->mtime_ns, now.mtime_ns);
}

TEST(RenameEntry, MakesAMissingTargetDirectoryAndRenames) {
  test::TempDir dir;
  Touch(dir / "a");
  ASSERT_TRUE(fs::RenameEntry(dir / "a", dir / "new/deeper/a").ok());
  EXPECT_TRUE(fs::Stat(dir / "new/deeper/a").ok());
  EXPECT_FALSE(fs::Stat(dir / "a").ok());
}

TEST(RenameEntry, ALandedRenameIsSuccessAndAGoneSourceIsNotFound) {
  test::TempDir dir;
  // What a retransmitted NFS rename leaves: the source gone, the target there.
  Touch(dir / "landed");
  EXPECT_TRUE(fs::RenameEntry(dir / "gone", dir / "landed").ok());
  // Neither there: another process moved the source elsewhere; no directory is made for it.
  const Status s = fs::RenameEntry(dir / "gone", dir / "sub/target");
  EXPECT_EQ(s.kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(fs::Stat(dir / "sub").ok());
}

// The target's directory removed again between its making and the second rename (another
// replica's sweep of empty directories): the source is still there, so that is no "not found"
// (which callers take for the entry moved by another process) but a passing error.
TEST(RenameEntry, ATargetDirectoryRemovedAgainIsNoNotFound) {
  test::TempDir dir;
  Touch(dir / "a");
  int renames = 0;
  {
    // Every rename fails so, unmade, as one into a directory removed just before it would.
    const test::ScopedPathPairCall missing(
        [&](const char* op, const std::string& from, const std::string& to) {
          if (std::string_view(op) != "rename") return ::link(from.c_str(), to.c_str());
          ++renames;
          errno = ENOENT;
          return -1;
        });
    const Status s = fs::RenameEntry(dir / "a", dir / "new/a");
    EXPECT_EQ(s.kind(), ErrorKind::kTransient) << s.ToString();
  }
  EXPECT_EQ(renames, 2);
  EXPECT_TRUE(fs::Stat(dir / "a").ok());
  // Removed while it is being made, each time: no "not found" either.
  {
    const test::ScopedPathPairCall missing(
        [&](const char* op, const std::string& from, const std::string& to) {
          if (std::string_view(op) != "rename") return ::link(from.c_str(), to.c_str());
          errno = ENOENT;
          return -1;
        });
    const test::ScopedPathCall pruned([&](const char* op, const std::string& path) {
      return std::string_view(op) == "mkdir" && path == dir / "new" ? ENOENT : 0;
    });
    const Status s = fs::RenameEntry(dir / "a", dir / "new/a");
    EXPECT_EQ(s.kind(), ErrorKind::kTransient) << s.ToString();
  }
  EXPECT_TRUE(fs::Stat(dir / "a").ok());
}

// A parent directory that MkdirAll made, removed again before the child could be made in it
// (another replica's sweep of empty directories): made again.
TEST(MkdirAll, MakesAParentRemovedMeanwhileAgain) {
  test::TempDir dir;
  int leaf_tries = 0;
  {
    const test::ScopedPathCall prune([&](const char* op, const std::string& path) {
      if (std::string_view(op) != "mkdir" || path != dir / "a/b/c") return 0;
      if (++leaf_tries != 2) return 0;
      ::rmdir((dir / "a/b").c_str());  // pruned just after it was made
      return ENOENT;
    });
    const Status s = fs::MkdirAll(dir / "a/b/c");
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(leaf_tries, 3);
  EXPECT_TRUE(fs::Stat(dir / "a/b/c").ok());
}

// MkdirBelow makes what lies between the root and the path, and never the root: a root that is
// gone (a volume unmounted, its mount point empty) fails with not-found, nothing made above it.
// A path outside the root is refused.
TEST(MkdirBelow, MakesNothingAtOrAboveTheRoot) {
  test::TempDir dir;
  const std::string mnt = dir / "mnt";
  ASSERT_TRUE(fs::MkdirAll(mnt).ok());
  const std::string root = mnt + "/.processing";
  Status s = fs::MkdirBelow(root, root + "/_replicas");
  EXPECT_EQ(s.kind(), ErrorKind::kNotFound) << s.ToString();
  s = fs::MkdirBelow(root, root + "/a/b/c");
  EXPECT_EQ(s.kind(), ErrorKind::kNotFound) << s.ToString();
  auto left = fs::ListDir(mnt);
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << left->front().name;

  ASSERT_TRUE(fs::MkdirAll(root).ok());
  EXPECT_TRUE(fs::MkdirBelow(root + "/", root + "/a/b/c").ok());  // a root written with a '/'
  EXPECT_TRUE(fs::Stat(root + "/a/b/c").ok());
  EXPECT_TRUE(fs::MkdirBelow(root, root + "/a/b/c").ok());  // there already
  for (const std::string& outside : {root, root + "/", mnt + "/.processing2/x", mnt + "/x"}) {
    s = fs::MkdirBelow(root, outside);
    EXPECT_EQ(s.kind(), ErrorKind::kPermanent) << outside << ": " << s.ToString();
  }
  EXPECT_FALSE(fs::Stat(mnt + "/.processing2").ok());
}

// link() as create-if-absent: the first link of a name lands, a second one to another file is a
// conflict that leaves the first in place, and an EEXIST for a link that did land (what a
// retransmitted NFS link reports) is success.
TEST(LinkNew, CreatesANameOnlyIfAbsent) {
  test::TempDir dir;
  test::WriteFile(dir / "mine", "1");
  test::WriteFile(dir / "theirs", "2");
  ASSERT_TRUE(fs::LinkNew(dir / "mine", dir / "name").ok());
  EXPECT_EQ(fs::LinkNew(dir / "theirs", dir / "name").kind(), ErrorKind::kConflict);
  EXPECT_EQ(test::ReadFile(dir / "name"), "1");
  EXPECT_TRUE(fs::LinkNew(dir / "mine", dir / "name").ok());
  // A file with names already (mine and name) is not taken as linked where another file is.
  EXPECT_EQ(fs::LinkNew(dir / "mine", dir / "theirs").kind(), ErrorKind::kConflict);
  EXPECT_EQ(test::ReadFile(dir / "theirs"), "2");
}

// The end of a listing is told from a failure of readdir by errno, set before each call: an
// errno left by what the loop did in between (here: the test seam) is no failure.
TEST(ListDir, AnErrnoSetBetweenEntriesIsNoFailure) {
  test::TempDir dir;
  test::WriteFile(dir / "a", "1");
  test::WriteFile(dir / "b", "2");
  const test::ScopedPathCall seam([](const char* op, const std::string&) {
    if (std::string_view(op) == "d_type") errno = EIO;
    return 0;
  });
  const auto entries = fs::ListDir(dir.path());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ(entries->size(), 2u);
}

// One entry at a time: every entry once, a stop when the callback says so, an errno that the
// callback leaves no failure, and a directory that is not there kNotFound with no call.
TEST(ForEachEntry, EveryEntryOnceUntilTheCallbackStops) {
  test::TempDir dir;
  for (const char* name : {"a", "b", "c"}) test::WriteFile(dir / name, name);
  ASSERT_EQ(::mkdir((dir / "d").c_str(), 0755), 0);
  std::vector<std::string> seen;
  Status s = fs::ForEachEntry(dir.path(), [&](const fs::DirEntry& e) {
    seen.push_back(e.name + (e.type == DT_DIR ? "/" : ""));
    errno = EIO;
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d/"}));
  int calls = 0;
  s = fs::ForEachEntry(dir.path(), [&](const fs::DirEntry&) {
    errno = EIO;  // what the callback did last is not readdir's failure
    return ++calls < 2;
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(calls, 2);
  calls = 0;
  s = fs::ForEachEntry(dir / "missing", [&](const fs::DirEntry&) { return ++calls > 0; });
  EXPECT_EQ(s.kind(), ErrorKind::kNotFound);
  EXPECT_EQ(calls, 0);
}

// Entries the callback removes, and names it adds, leave the walk whole: each entry there from
// start to end is seen once (the sweeper collects markers and renames claims as it walks).
TEST(ForEachEntry, RemovingAndAddingAsItGoesSeesEachLastingEntryOnce) {
  test::TempDir dir;
  for (int i = 0; i < 2000; ++i) test::WriteFile(dir / ("f" + std::to_string(i)), "x");
  std::map<std::string, int> seen;
  Status s = fs::ForEachEntry(dir.path(), [&](const fs::DirEntry& e) {
    ++seen[e.name];
    const int n = e.name[0] == 'f' ? std::stoi(e.name.substr(1)) : -1;
    if (n >= 0 && n % 2 == 0) {  // the even ones go, each making a new name
      EXPECT_EQ(::unlink((dir / e.name).c_str()), 0);
      test::WriteFile(dir / ("g" + std::to_string(n)), "y");
    }
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (int i = 0; i < 2000; ++i) {
    EXPECT_EQ(seen["f" + std::to_string(i)], 1) << i;
    EXPECT_LE(seen["g" + std::to_string(i)], 1) << i;
  }
}

// rename(2) and link(2) as a soft NFS mount can answer them: carried out, or not, and either way
// reported as a passing error (EIO, ESTALE), the server's reply lost.
class LostReply {
 public:
  LostReply(int err, bool carry_out) {
    fs::SetPathPairCallForTest([=](const char* op, const std::string& from, const std::string& to) {
      if (carry_out) {
        const int rc = std::string_view(op) == "rename" ? ::rename(from.c_str(), to.c_str())
                                                        : ::link(from.c_str(), to.c_str());
        if (rc != 0) return rc;
      }
      errno = err;
      return -1;
    });
  }
  ~LostReply() { fs::SetPathPairCallForTest(nullptr); }
  LostReply(const LostReply&) = delete;
  LostReply& operator=(const LostReply&) = delete;
};

// A run's rename (the claim's run count, a dead letter) whose reply was lost: carried out, it is
// success, or the worker would take the claim for not renamed and open its old name; not carried
// out, the error stands.
TEST(RenameEntry, ARenameCarriedOutDespiteItsErrorIsSuccess) {
  for (const int err : {EIO, ESTALE, ETIMEDOUT}) {
    test::TempDir dir;
    Touch(dir / "a~1.claimed");
    {
      const LostReply lost(err, true);
      EXPECT_TRUE(fs::RenameEntry(dir / "a~1.claimed", dir / "a~2.claimed").ok()) << err;
    }
    EXPECT_TRUE(fs::Stat(dir / "a~2.claimed").ok());
    {
      const LostReply lost(err, false);
      const Status s = fs::RenameEntry(dir / "a~2.claimed", dir / "a~3.claimed");
      EXPECT_EQ(s.kind(), ErrorKind::kTransient) << s.ToString();
    }
    EXPECT_TRUE(fs::Stat(dir / "a~2.claimed").ok());
    EXPECT_FALSE(fs::Stat(dir / "a~3.claimed").ok());
  }
}

// A lease or session file written whole: its rename into place carried out but reported failed
// is a write that happened (no "cannot write the lease"), and no temporary file is left.
TEST(AtomicWriteFile, ARenameCarriedOutDespiteItsErrorIsAWrite) {
  test::TempDir dir;
  test::WriteFile(dir / "lease", "old");
  for (const int err : {EIO, ENOENT}) {  // a passing error, or a retransmission's ENOENT
    const LostReply lost(err, true);
    const std::string data = "new " + std::to_string(err);
    EXPECT_TRUE(fs::AtomicWriteFile(dir / "lease", data).ok()) << err;
    EXPECT_EQ(test::ReadFile(dir / "lease"), data);
  }
  {
    const LostReply lost(EIO, false);
    EXPECT_EQ(fs::AtomicWriteFile(dir / "lease", "newer").kind(), ErrorKind::kTransient);
  }
  EXPECT_EQ(test::ReadFile(dir / "lease"), "new " + std::to_string(ENOENT));
  auto entries = fs::ListDir(dir.path());
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 1u) << "no temporary file left";
}

// The temp removed by another process (a sweep taking it for a leftover) before the rename: the
// rename's ENOENT is real, though the temp is gone and the old file is there. A write that
// reported success would leave a lease that never moved, a replica held dead that beats on.
TEST(AtomicWriteFile, ATempRemovedBeforeItsRenameIsNoWrite) {
  test::TempDir dir;
  test::WriteFile(dir / "lease", "old");
  fs::SetPathPairCallForTest([](const char* op, const std::string& from, const std::string& to) {
    if (std::string_view(op) != "rename") return ::rename(from.c_str(), to.c_str());
    ::unlink(from.c_str());
    errno = ENOENT;
    return -1;
  });
  const Status s = fs::AtomicWriteFile(dir / "lease", "new");
  fs::SetPathPairCallForTest(nullptr);
  EXPECT_EQ(s.kind(), ErrorKind::kNotFound) << s.ToString();
  EXPECT_EQ(test::ReadFile(dir / "lease"), "old");
}

// Fails the next `op` on a path containing `part` with `err`, once; a "create" is carried out
// first, as a create whose reply was lost and whose retransmission found the file.
class FailsOnce {
 public:
  FailsOnce(const char* op, std::string part, int err) {
    fs::SetPathCallForTest([=, done = false](const char* o, const std::string& path) mutable {
      if (done || std::string_view(o) != op || path.find(part) == std::string::npos) return 0;
      done = true;
      if (std::string_view(o) == "create") ::close(::open(path.c_str(), O_WRONLY | O_CREAT, 0644));
      return err;
    });
  }
  ~FailsOnce() { fs::SetPathCallForTest(nullptr); }
  FailsOnce(const FailsOnce&) = delete;
  FailsOnce& operator=(const FailsOnce&) = delete;
};

// The temp file's create carried out but answered EEXIST: its name is this write's own (random),
// so it is this write's file, not a failure that leaves it behind (a dead letter's reason lost).
TEST(AtomicWriteFile, ATempFileCreateCarriedOutDespiteItsEexistIsItsOwn) {
  test::TempDir dir;
  {
    const FailsOnce lost("create", ".tmp-", EEXIST);
    const Status s = fs::AtomicWriteFile(dir / "x.failed.json", "{\"error\":\"why\"}");
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(test::ReadFile(dir / "x.failed.json"), "{\"error\":\"why\"}");
  auto entries = fs::ListDir(dir.path());
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 1u) << "no temporary file left";
}

// A rename carried out but answered ENOENT, after which the target could not be looked at once
// (ESTALE): that is no "not found" (which a worker takes for its claim taken over by another
// replica); a second look finds it landed.
TEST(RenameEntry, ALandedRenameWhoseTargetCannotBeLookedAtIsNoNotFound) {
  for (const char* op : {"stat", "statx"}) {
    test::TempDir dir;
    Touch(dir / "a~1.claimed");
    {
      const LostReply lost(ENOENT, true);
      const FailsOnce look(op, "a~2.claimed", ESTALE);
      const Status s = fs::RenameEntry(dir / "a~1.claimed", dir / "a~2.claimed");
      EXPECT_TRUE(s.ok()) << op << ": " << s.ToString();
    }
    EXPECT_TRUE(fs::Stat(dir / "a~2.claimed").ok());
  }
}

// The sweeps remove the temp files of lease and probe writes left behind by their names, told by
// AtomicWriteTarget: the name AtomicWriteFile makes is told, and nothing like it.
TEST(AtomicWriteFile, ItsTempFileNamesAreTold) {
  test::TempDir dir;
  std::string temp;
  fs::SetPathPairCallForTest([&](const char*, const std::string& from, const std::string& to) {
    temp = fs::Basename(from);
    return ::rename(from.c_str(), to.c_str());
  });
  const Status written = fs::AtomicWriteFile(dir / "r1.lease", "x");
  fs::SetPathPairCallForTest(nullptr);
  ASSERT_TRUE(written.ok()) << written.ToString();
  EXPECT_EQ(fs::AtomicWriteTarget(temp), "r1.lease") << temp;
  for (const char* other :
       {"r1.lease", "r1.lease.tmp-", "r1.lease.tmp-0123456789a", "r1.lease.tmp-0123456789abc",
        "r1.lease.tmp-0123456789AB", "r1.lease.tmp-0123456789ag", ".tmp-0123456789ab",
        "r1.lease.tmp-0123456789ab.x", "r1.lease-tmp-0123456789ab"}) {
    EXPECT_EQ(fs::AtomicWriteTarget(other), std::nullopt) << other;
  }
}

// A session's create-if-absent link carried out but reported failed is the session created; one
// not carried out is the error.
TEST(LinkNew, ALinkCarriedOutDespiteItsErrorIsSuccess) {
  test::TempDir dir;
  test::WriteFile(dir / "mine", "1");
  {
    const LostReply lost(EIO, true);
    EXPECT_TRUE(fs::LinkNew(dir / "mine", dir / "name").ok());
  }
  EXPECT_EQ(test::ReadFile(dir / "name"), "1");
  test::WriteFile(dir / "other", "2");
  {
    const LostReply lost(EIO, false);
    EXPECT_EQ(fs::LinkNew(dir / "other", dir / "name2").kind(), ErrorKind::kTransient);
  }
  EXPECT_FALSE(fs::Stat(dir / "name2").ok());
}

// The mount holding a path, read from mountinfo's text: the longest mount point that is a whole
// prefix of it, the later of two at one point (mounted over the other), with the kernel's octal
// escapes undone and the optional fields (shared:, master:) skipped.
TEST(MountHolding, TheLongestWholePrefixMountedLastWins) {
  const std::string_view info =
      "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
      "30 22 0:40 / /mnt/nfs rw,relatime shared:9 master:3 - nfs4 srv:/export rw,vers=4.1\n"
      "31 22 0:41 / /mnt/nfs2 rw - tmpfs tmpfs rw\n"
      "32 22 0:42 / /mnt/my\\040vol rw - nfs srv:/v rw\n"
      "33 30 0:43 / /mnt/nfs rw - tmpfs tmpfs rw\n"
      "not a mountinfo line\n";
  const auto at = [&](std::string_view path) {
    const auto mount = fs::MountHolding(info, path);
    return mount ? mount->point + " " + mount->type : std::string("none");
  };
  EXPECT_EQ(at("/"), "/ ext4");
  EXPECT_EQ(at("/mnt"), "/ ext4");
  EXPECT_EQ(at("/mnt/nfs"), "/mnt/nfs tmpfs");  // 33, mounted over 30
  EXPECT_EQ(at("/mnt/nfs/incoming/s1"), "/mnt/nfs tmpfs");
  EXPECT_EQ(at("/mnt/nfs2/x"), "/mnt/nfs2 tmpfs");
  EXPECT_EQ(at("/mnt/nfsx"), "/ ext4");  // a prefix of the name, not of the path
  EXPECT_EQ(at("/mnt/my vol/in"), "/mnt/my vol nfs");
  EXPECT_EQ(at("/mnt/my\\040vol"), "/ ext4");
  EXPECT_EQ(fs::MountHolding("22 1 252:1 / / rw - \n", "/"), std::nullopt);  // no type
  EXPECT_EQ(fs::MountHolding("", "/"), std::nullopt);
  // Without the one over it, the NFS mount holds its tree again.
  EXPECT_EQ(fs::MountHolding(info.substr(0, info.find("33 30")), "/mnt/nfs/in")->type, "nfs4");
  // A mount over a parent hides the longer mount point below it, which mountinfo still lists:
  // the path's own device tells which holds it.
  const std::string_view over_parent =
      "22 1 252:1 / / rw - ext4 /dev/vda1 rw\n"
      "30 22 0:40 / /mnt/nfs rw - nfs4 srv:/export rw\n"
      "40 22 0:50 / /mnt rw - tmpfs tmpfs rw\n";
  EXPECT_EQ(fs::MountHolding(over_parent, "/mnt/nfs/in", makedev(0, 50))->point, "/mnt");
  EXPECT_EQ(fs::MountHolding(over_parent, "/mnt/nfs/in", makedev(0, 40))->type, "nfs4");
  EXPECT_EQ(fs::MountHolding(over_parent, "/mnt/nfs/in")->type, "nfs4");  // no device: longest
  EXPECT_EQ(fs::MountHolding(over_parent, "/mnt/nfs/in", makedev(9, 9))->type, "nfs4");
}

// A path that does not exist yet is on the mount of the nearest directory above it, where it
// would be made: /proc and /sys are there on every Linux.
TEST(MountOf, APathIsOnItsNearestExistingDirectorysMount) {
  const auto proc = fs::MountOf("/proc/self");
  ASSERT_TRUE(proc.ok()) << proc.status().ToString();
  EXPECT_EQ(proc->point, "/proc");
  EXPECT_EQ(proc->type, "proc");
  const auto missing = fs::MountOf("/sys/no-such-dir/below/it");
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_EQ(missing->point, "/sys");
  EXPECT_EQ(missing->type, "sysfs");
  test::TempDir dir;
  const auto relative_to_here = fs::MountOf(dir.path() + "/a/../b/c");
  ASSERT_TRUE(relative_to_here.ok()) << relative_to_here.status().ToString();
  EXPECT_EQ(relative_to_here->type, fs::MountOf(dir.path())->type);
}

}  // namespace
}  // namespace nbu
