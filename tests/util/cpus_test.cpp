#include "util/cpus.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace nbu {
namespace {

TEST(CpusTest, CgroupV2QuotaRoundsUp) {
  EXPECT_EQ(CpusFromCgroupV2Max("200000 100000"), 2U);  // limits: cpu: "2"
  EXPECT_EQ(CpusFromCgroupV2Max("150000 100000\n"), 2U);
  EXPECT_EQ(CpusFromCgroupV2Max("50000 100000"), 1U);  // 500m
  EXPECT_EQ(CpusFromCgroupV2Max("800000 100000"), 8U);
}

TEST(CpusTest, NoCgroupV2QuotaOrNoiseIsZero) {
  EXPECT_EQ(CpusFromCgroupV2Max("max 100000"), 0U);
  EXPECT_EQ(CpusFromCgroupV2Max(""), 0U);  // no such file
  EXPECT_EQ(CpusFromCgroupV2Max("200000"), 0U);
  EXPECT_EQ(CpusFromCgroupV2Max("200000 0"), 0U);
  EXPECT_EQ(CpusFromCgroupV2Max("-200000 100000"), 0U);
  EXPECT_EQ(CpusFromCgroupV2Max("2e5 100000"), 0U);
}

TEST(CpusTest, CgroupV1Quota) {
  EXPECT_EQ(CpusFromCgroupV1("300000", "100000"), 3U);
  EXPECT_EQ(CpusFromCgroupV1("250000\n", "100000\n"), 3U);
  EXPECT_EQ(CpusFromCgroupV1("-1", "100000"), 0U);  // no quota
  EXPECT_EQ(CpusFromCgroupV1("", ""), 0U);
}

// A cgroup tree of files written by the test.
class FakeCgroup {
 public:
  FakeCgroup()
      : root_(testing::TempDir() + "cgroup-" + std::to_string(::getpid()) + "-" +
              std::to_string(next_++)) {
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ + "/cpu");
  }
  ~FakeCgroup() { std::filesystem::remove_all(root_); }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(root_ + "/" + name) << text;
  }
  const std::string& root() const { return root_; }

 private:
  static inline int next_ = 0;
  std::string root_;
};

TEST(CpusTest, UsableCpusIsTheAffinityCountWithoutAQuota) {
  const FakeCgroup none;  // no cpu.max, no v1 files
  const unsigned n = UsableCpus(none.root());
  EXPECT_GE(n, 1U);
  if (std::thread::hardware_concurrency() != 0) {
    EXPECT_LE(n, std::thread::hardware_concurrency());
  }
  const FakeCgroup unlimited;
  unlimited.Write("cpu.max", "max 100000\n");
  EXPECT_EQ(UsableCpus(unlimited.root()), n);
  const FakeCgroup generous;  // a quota above the CPUs there are changes nothing
  generous.Write("cpu.max", "102400000 100000\n");
  EXPECT_EQ(UsableCpus(generous.root()), n);
}

TEST(CpusTest, UsableCpusIsCappedByTheQuota) {
  const FakeCgroup v2;
  v2.Write("cpu.max", "50000 100000\n");  // 500m
  EXPECT_EQ(UsableCpus(v2.root()), 1U);
  const FakeCgroup v1;
  v1.Write("cpu/cpu.cfs_quota_us", "100000\n");
  v1.Write("cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(UsableCpus(v1.root()), 1U);
}

}  // namespace
}  // namespace nbu
