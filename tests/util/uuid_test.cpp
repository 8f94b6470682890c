#include "util/uuid.h"

#include <gtest/gtest.h>

namespace nbu {
namespace {

TEST(UuidV7Test, FormatVersionVariantAndTimestamp) {
  const auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(0x0190A1B2C3D4));
  const std::string id = NewUuidV7(t);
  EXPECT_TRUE(IsUuidV7(id)) << id;
  EXPECT_EQ(id.substr(0, 13), "0190a1b2-c3d4");
  EXPECT_NE(NewUuidV7(t), id);
}

TEST(UuidV7Test, SortsByTime) {
  const auto t1 = std::chrono::system_clock::time_point(std::chrono::milliseconds(1000));
  const auto t2 = std::chrono::system_clock::time_point(std::chrono::milliseconds(2000));
  EXPECT_LT(NewUuidV7(t1), NewUuidV7(t2));
}

TEST(UuidV7Test, RejectsOtherForms) {
  EXPECT_FALSE(IsUuidV7("0190a1b2-c3d4-4abc-8def-0123456789ab"));  // version 4
  EXPECT_FALSE(IsUuidV7("0190a1b2-c3d4-7abc-cdef-0123456789ab"));  // wrong variant
  EXPECT_FALSE(IsUuidV7("0190A1B2-C3D4-7ABC-8DEF-0123456789AB"));  // upper case
  EXPECT_FALSE(IsUuidV7("not-a-uuid"));
}

}  // namespace
}  // namespace nbu
