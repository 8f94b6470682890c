#include "core/session_store.h"

#include "support/process.h"
#include "util/fs.h"

#include <gtest/gtest.h>

namespace nbu::core {
namespace {

using nbu::test::TempDir;

TEST(SessionStoreTest, RoundTripAndMissingFile) {
  TempDir dir;
  SessionStore store(dir.path() + "/p/_session.json");
  auto none = store.Load();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store.Save({"s1", "2026-11-28T00:00:00.000Z", true, ""}).ok());
  auto got = store.Load();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->name, "s1");
  EXPECT_TRUE((*got)->active);
}

TEST(SessionStoreTest, EveryTruncationIsAnErrorOrValidNeverACrash) {
  TempDir dir;
  const std::string path = dir.path() + "/_session.json";
  SessionStore store(path);
  ASSERT_TRUE(store.Save({"session-name", "2026-11-28T00:00:00.000Z", true, ""}).ok());
  const std::string full = *fs::ReadSmallFile(path);
  for (size_t len = 0; len < full.size(); ++len) {
    ASSERT_TRUE(fs::AtomicWriteFile(path, full.substr(0, len)).ok());
    auto r = store.Load();
    if (r.ok()) {
      // Only a complete object parses; then it must carry the name.
      ASSERT_TRUE(r->has_value());
      EXPECT_EQ((*r)->name, "session-name") << len;
    } else {
      EXPECT_EQ(r.status().kind(), ErrorKind::kPermanent) << len;
    }
  }
  ASSERT_TRUE(fs::AtomicWriteFile(path, "\xff\xfe garbage").ok());
  EXPECT_FALSE(store.Load().ok());
}

}  // namespace
}  // namespace nbu::core

namespace nbu::core {
namespace {

TEST(SessionStoreTest, RejectsNamesThatWouldLeaveIncoming) {
  nbu::test::TempDir dir;
  const std::string path = dir.path() + "/_session.json";
  for (const char* body : {R"({"name":"../etc","active":true})", R"({"name":"","active":true})",
                           R"({"name":7,"active":true})", R"({"name":"ok","active":"yes"})"}) {
    ASSERT_TRUE(fs::AtomicWriteFile(path, body).ok());
    auto r = SessionStore(path).Load();
    if (r.ok()) {
      EXPECT_FALSE((*r)->active) << body;  // a non-boolean "active" is not active
    } else {
      EXPECT_EQ(r.status().kind(), ErrorKind::kPermanent) << body;
    }
  }
}

}  // namespace
}  // namespace nbu::core
