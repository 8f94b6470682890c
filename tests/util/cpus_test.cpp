#include "util/cpus.h"

#include <gtest/gtest.h>

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

TEST(CpusTest, UsableCpusIsBetweenOneAndTheMachinesCount) {
  const unsigned n = UsableCpus();
  EXPECT_GE(n, 1U);
  if (std::thread::hardware_concurrency() != 0) {
    EXPECT_LE(n, std::thread::hardware_concurrency());
  }
}

}  // namespace
}  // namespace nbu
