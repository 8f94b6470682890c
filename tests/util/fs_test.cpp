#include "util/fs.h"

#include "support/process.h"

#include <gtest/gtest.h>

#include <fstream>

namespace nbu {
namespace {

void Touch(const std::string& path) { std::ofstream(path) << "x"; }

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

}  // namespace
}  // namespace nbu
