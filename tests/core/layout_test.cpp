#include "core/layout.h"

#include <gtest/gtest.h>

namespace nbu::core {
namespace {

ClaimPath Claim(std::string reldir, std::string base) {
  return ClaimPath{"20261128",          "demo",    std::move(reldir),
                   std::move(base),     "pod-a.1", "0123456789abcdef",
                   ClaimState::kClaimed};
}

TEST(LayoutTest, RoundTripsEveryState) {
  for (const auto& c :
       {Claim("", "x.csv"), Claim("a/b", "y z.bin"), Claim("", "x").WithState(ClaimState::kDone)}) {
    auto parsed = ParseClaimPath(c.Path());
    ASSERT_TRUE(parsed) << c.Path();
    EXPECT_EQ(parsed->Path(), c.Path());
    EXPECT_EQ(parsed->BlobName(), c.BlobName());
    EXPECT_EQ(parsed->owner, "pod-a.1");
    EXPECT_EQ(parsed->state, c.state);
  }
  EXPECT_EQ(Claim("a/b", "y z.bin").BlobName(), "20261128/demo/a/b/y z.bin");
  EXPECT_EQ(Claim("", "x.csv").BlobName(), "20261128/demo/x.csv");
  EXPECT_EQ(Claim("", "x.csv").Path(), "20261128/demo/x.csv~pod-a.1~0123456789abcdef.claimed");
}

// The run count is written only when it is not 1, so every fresh claim keeps the plain name and
// names written before the count existed parse as one run.
TEST(LayoutTest, RunCountRoundTripsAndIsOmittedForOneRun) {
  const ClaimPath c = Claim("a", "x~pod-a.1~0123456789abcdef~7");
  EXPECT_EQ(c.runs, 1);
  EXPECT_EQ(c.EntryName(), "x~pod-a.1~0123456789abcdef~7~pod-a.1~0123456789abcdef.claimed");
  for (int runs : {0, 2, 10, 999, kMaxClaimRuns}) {
    for (const ClaimPath& v : {c.WithRuns(runs), c.WithRuns(runs).WithState(ClaimState::kDone)}) {
      EXPECT_EQ(v.EntryName(), c.base + "~pod-a.1~0123456789abcdef~" + std::to_string(runs) + "." +
                                   (v.state == ClaimState::kDone ? "done" : "claimed"));
      auto parsed = ParseClaimPath(v.Path());
      ASSERT_TRUE(parsed) << v.Path();
      EXPECT_EQ(parsed->runs, runs);
      EXPECT_EQ(parsed->base, c.base);
      EXPECT_EQ(parsed->owner, "pod-a.1");
      EXPECT_EQ(parsed->nonce, "0123456789abcdef");
      EXPECT_EQ(parsed->state, v.state);
      EXPECT_EQ(parsed->Path(), v.Path());
    }
  }
  auto one = ParseClaimPath(c.WithRuns(1).Path());
  ASSERT_TRUE(one);
  EXPECT_EQ(one->runs, 1);
  EXPECT_EQ(one->base, c.base);
  EXPECT_EQ(c.WithRuns(-1).runs, 0);
  EXPECT_EQ(c.WithRuns(kMaxClaimRuns + 1).runs, kMaxClaimRuns);
  // A run count is kept across owner and state changes.
  EXPECT_EQ(c.WithRuns(3).WithOwner("b").WithState(ClaimState::kDone).runs, 3);
}

TEST(LayoutTest, ProducerNamesThatLookLikeStateAreSafe) {
  // A producer may write names that look exactly like our markers; the suffix we append is
  // parsed from the right, so the producer's name comes back unchanged.
  for (const std::string base :
       {"x.completed", "x.processing", "x.claimed", "x.done", "x~pod~0123456789abcdef.claimed",
        "x~pod~0123456789abcdef~2.claimed", "x~2", "x~0", "x~y", "~", "a.failed", "a.failed.json",
        ".hidden-looking", "üñí ćødé #%;+&'\""}) {
    const ClaimPath c = Claim("d", base);
    auto parsed = ParseClaimPath(c.Path());
    ASSERT_TRUE(parsed) << base;
    EXPECT_EQ(parsed->base, base);
    EXPECT_EQ(parsed->BlobName(), "20261128/demo/d/" + base);
    const FailedPath f = FailedPathFor(c);
    auto pf = ParseFailedPath(f.DataPath());
    ASSERT_TRUE(pf) << base;
    EXPECT_EQ(pf->base, base);
    EXPECT_FALSE(pf->is_reason);
    auto pr = ParseFailedPath(f.ReasonPath());
    ASSERT_TRUE(pr) << base;
    EXPECT_TRUE(pr->is_reason);
    EXPECT_EQ(pr->base, base);
  }
}

// Every component of a relative path fits in one directory entry.
bool EntriesFit(const std::string& rel) {
  size_t start = 0;
  while (true) {
    const size_t slash = rel.find('/', start);
    const size_t end = slash == std::string::npos ? rel.size() : slash;
    if (end - start > kMaxEntryName) return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

// A producer's name may take all 255 bytes of an entry; the suffixes then go one level down.
TEST(LayoutTest, LongNamesAreHeldInADirectoryOfTheirOwn) {
  const std::string longest(251, 'n');
  for (const std::string& reldir : {std::string(), std::string("a/b")}) {
    const ClaimPath c = Claim(reldir, longest + ".txt");
    EXPECT_TRUE(c.InBaseDir());
    const std::string dir = "20261128/demo/" + (reldir.empty() ? "" : reldir + "/");
    EXPECT_EQ(c.Path(), dir + c.base + "/~pod-a.1~0123456789abcdef.claimed");
    EXPECT_EQ(c.BlobName(), dir + c.base);
    for (const ClaimPath& v :
         {c, c.WithRuns(kMaxClaimRuns), c.WithState(ClaimState::kDone),
          c.WithOwner(std::string(kMaxReplicaId, 'r')).WithRuns(kMaxClaimRuns)}) {
      EXPECT_TRUE(EntriesFit(v.Path())) << v.Path();
      auto parsed = ParseClaimPath(v.Path());
      ASSERT_TRUE(parsed) << v.Path();
      EXPECT_EQ(parsed->Path(), v.Path());
      EXPECT_EQ(parsed->base, c.base);
      EXPECT_EQ(parsed->reldir, reldir);
      EXPECT_EQ(parsed->runs, v.runs);
      EXPECT_EQ(parsed->BlobName(), c.BlobName());
    }
    const FailedPath f = FailedPathFor(c);
    EXPECT_EQ(f.DataPath(), dir + c.base + "/~0123456789abcdef.failed");
    for (const std::string& rel : {f.DataPath(), f.ReasonPath()}) {
      auto pf = ParseFailedPath(rel);
      ASSERT_TRUE(pf) << rel;
      EXPECT_EQ(pf->base, c.base);
      EXPECT_EQ(pf->reldir, reldir);
      EXPECT_EQ(pf->DataPath(), f.DataPath());
    }
    EXPECT_TRUE(EntriesFit(f.ReasonPath() + ".tmp-0123456789ab"));
    EXPECT_EQ(StagingPath(c), dir + c.base + "/~0123456789abcdef");
  }

  // A name that fits with its suffixes stays in one entry, until a run count would not fit;
  // from then on it stays held, so later renames do not move it back.
  const std::string suffix = "~pod-a.1~0123456789abcdef.claimed";
  const ClaimPath edge = Claim("", std::string(kMaxEntryName - suffix.size(), 'e'));
  EXPECT_FALSE(edge.InBaseDir());
  EXPECT_EQ(edge.EntryName().size(), kMaxEntryName);
  const ClaimPath counted = edge.WithRuns(2);
  EXPECT_TRUE(counted.InBaseDir());
  EXPECT_TRUE(EntriesFit(counted.Path()));
  EXPECT_TRUE(counted.WithRuns(1).WithState(ClaimState::kDone).InBaseDir());
  auto parsed = ParseClaimPath(edge.Path());
  ASSERT_TRUE(parsed);
  EXPECT_FALSE(parsed->InBaseDir());
  EXPECT_EQ(parsed->Path(), edge.Path());
  // A short name in a producer's directory is not mistaken for a held one.
  auto nested = ParseClaimPath("20261128/demo/a/x~pod~0123456789abcdef.claimed");
  ASSERT_TRUE(nested);
  EXPECT_EQ(nested->reldir, "a");
  EXPECT_EQ(nested->base, "x");
}

TEST(LayoutTest, RejectsWhatWeNeverCreate) {
  for (const std::string rel :
       {"", "20261128", "20261128/demo", "20261128/demo/x.csv",
        "2026112/demo/x~a~0123456789abcdef.done", "20261128/demo/x~a~0123456789ABCDEF.done",
        "20261128/demo/x~a~0123456789abcde.done", "20261128/demo/x~a~0123456789abcdef.other",
        "20261128/demo/~a~0123456789abcdef.done", "20261128/demo/x~~0123456789abcdef.done",
        "20261128/demo/~a~0123456789abcdef~2.claimed", "20261128/demo/a/~~0123456789abcdef.done",
        "20261128/demo/x~a/b~0123456789abcdef.done", "20261128/bad name/x~a~0123456789abcdef.done",
        "20261128/demo//x~a~0123456789abcdef.done", "20261128/demo/../x~a~0123456789abcdef.done",
        "_replicas/a.lease",
        // run counts we never write: 1 (implicit), leading zeros, signs, too long, no nonce
        "20261128/demo/x~a~0123456789abcdef~1.claimed",
        "20261128/demo/x~a~0123456789abcdef~02.claimed",
        "20261128/demo/x~a~0123456789abcdef~-2.claimed",
        "20261128/demo/x~a~0123456789abcdef~+2.claimed",
        "20261128/demo/x~a~0123456789abcdef~10000.claimed",
        "20261128/demo/x~a~0123456789abcdef~.claimed", "20261128/demo/x~a~2.claimed",
        "20261128/demo/x~a~0123456789abcdef~2~3.claimed"}) {
    EXPECT_FALSE(ParseClaimPath(rel)) << rel;
  }
}

TEST(LayoutTest, NamesAndIds) {
  EXPECT_TRUE(IsValidSessionName("demo-1.a_b"));
  EXPECT_TRUE(IsValidSessionName(std::string(128, 'a')));
  EXPECT_FALSE(IsValidSessionName(std::string(129, 'a')));
  EXPECT_FALSE(IsValidSessionName(""));
  EXPECT_FALSE(IsValidSessionName("."));
  EXPECT_FALSE(IsValidSessionName(".."));
  EXPECT_FALSE(IsValidSessionName("a/b"));
  EXPECT_FALSE(IsValidSessionName("a b"));
  // The longest replica id whose claims still fit in one entry, at any run count.
  EXPECT_EQ(kMaxReplicaId, 224u);
  EXPECT_TRUE(IsValidReplicaId(std::string(kMaxReplicaId, 'r')));
  EXPECT_FALSE(IsValidReplicaId(std::string(kMaxReplicaId + 1, 'r')));
  EXPECT_TRUE(IsNonce(NewNonce()));
  EXPECT_NE(NewNonce(), NewNonce());
  EXPECT_TRUE(IsHiddenName(".nfs000000001234"));
  EXPECT_TRUE(IsHiddenName(".file.XXXXXX"));
  EXPECT_FALSE(IsHiddenName("file"));
  EXPECT_TRUE(IsNfsSillyName(".nfs0000000000b1a2c300000004"));  // Linux: 16 + 8 hex digits
  EXPECT_TRUE(IsNfsSillyName(".nfs.0000abcd.0004"));            // FreeBSD
  EXPECT_FALSE(IsNfsSillyName(".nfs"));
  EXPECT_FALSE(IsNfsSillyName(".nfsconfig"));
  EXPECT_FALSE(IsNfsSillyName(".zattrs"));
  EXPECT_TRUE(IsSnapshotDirName(".snapshot"));
  EXPECT_TRUE(IsSnapshotDirName(".zfs"));
  EXPECT_FALSE(IsSnapshotDirName(".snapshot-old"));
  EXPECT_EQ(StagingPath(Claim("a", "b")), "20261128/demo/a/b~0123456789abcdef");
}

}  // namespace
}  // namespace nbu::core
