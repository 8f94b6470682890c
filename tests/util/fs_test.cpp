#include "util/fs.h"

#include "support/process.h"

#include <gtest/gtest.h>

#include <fstream>

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
}

}  // namespace
}  // namespace nbu
