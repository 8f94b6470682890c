#include "core/session_store.h"

#include "support/process.h"
#include "util/fs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace nbu::core {
namespace {

using nbu::test::TempDir;

// A processing root that is gone (a volume unmounted) says nothing of the session, and is not
// made again by a save: start-up makes it.
TEST(SessionStoreTest, RoundTripAndMissingFile) {
  TempDir dir;
  SessionStore store(dir.path() + "/p");
  auto gone = store.Load();
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().kind(), ErrorKind::kTransient);
  EXPECT_NE(gone.status().message().find("is the volume mounted?"), std::string::npos)
      << gone.status().ToString();
  EXPECT_EQ(store.Save({"s1", "2026-11-28T00:00:00.000Z", true, ""}, 0).kind(),
            ErrorKind::kNotFound);
  EXPECT_FALSE(fs::Stat(dir.path() + "/p").ok());
  ASSERT_TRUE(fs::MkdirAll(dir.path() + "/p").ok());
  auto none = store.Load();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store.Save({"s1", "2026-11-28T00:00:00.000Z", true, ""}, 0).ok());
  auto got = store.Load();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->name, "s1");
  EXPECT_TRUE((*got)->active);
}

TEST(SessionStoreTest, EveryTruncationIsAnErrorOrValidNeverACrash) {
  TempDir dir;
  const std::string path = dir.path() + "/_session/1.json";  // the generation Save publishes
  SessionStore store(dir.path());
  ASSERT_TRUE(store.Save({"session-name", "2026-11-28T00:00:00.000Z", true, ""}, 0).ok());
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

// Two replicas (two stores on one directory) read the same generation and both publish the next:
// only the first publish lands; the other is refused and then reads the winner's state.
TEST(SessionStoreTest, ASecondPublishOfOneGenerationFailsAndItsWriterSeesTheWinner) {
  TempDir dir;
  SessionStore one(dir.path());
  SessionStore two(dir.path());
  uint64_t g1 = 99;
  uint64_t g2 = 99;
  ASSERT_TRUE(one.Load(&g1).ok());
  ASSERT_TRUE(two.Load(&g2).ok());
  ASSERT_EQ(g1, 0u);
  ASSERT_EQ(g2, 0u);
  ASSERT_TRUE(one.Save({"a", "2026-11-28T00:00:00.000Z", true, ""}, g1).ok());
  EXPECT_EQ(two.Save({"b", "2026-11-28T00:00:01.000Z", true, ""}, g2).kind(), ErrorKind::kConflict);
  auto seen = two.Load(&g2);
  ASSERT_TRUE(seen.ok() && seen->has_value());
  EXPECT_EQ((*seen)->name, "a");
  EXPECT_TRUE((*seen)->active);
  EXPECT_EQ(g2, 1u);
  // A stop decided on a state that is no longer the newest is refused too, not written over it.
  ASSERT_TRUE(
      two.Save({"a", "2026-11-28T00:00:00.000Z", false, "2026-11-28T00:00:02.000Z"}, g2).ok());
  EXPECT_EQ(one.Save({"c", "2026-11-28T00:00:03.000Z", true, ""}, g1).kind(), ErrorKind::kConflict);
  seen = one.Load(&g1);
  ASSERT_TRUE(seen.ok() && seen->has_value());
  EXPECT_EQ((*seen)->name, "a");
  EXPECT_FALSE((*seen)->active);
  EXPECT_EQ(g1, 2u);
}

// A writer that stalled while others published two or more generations links a name the
// cleanup had removed: the link succeeds, but readers take the newer generations. It is told of
// the conflict, so that its caller decides again on the newest state, instead of a change lost.
TEST(SessionStoreTest, AWriterThatStalledAcrossTwoPublishesIsToldOfTheConflict) {
  TempDir dir;
  SessionStore fast(dir.path());
  SessionStore stalled(dir.path());
  uint64_t g = 0;
  ASSERT_TRUE(fast.Save({"a", "", true, ""}, 0).ok());
  ASSERT_TRUE(stalled.Load(&g).ok());
  ASSERT_EQ(g, 1u);
  for (uint64_t next = 1; next < 4; ++next) {
    ASSERT_TRUE(fast.Save({"a", "", next % 2 == 0, ""}, next).ok());
  }
  ASSERT_FALSE(fs::Stat(dir.path() + "/_session/2.json").ok()) << "removed by the cleanup";
  EXPECT_EQ(stalled.Save({"b", "", true, ""}, g).kind(), ErrorKind::kConflict);
  auto seen = stalled.Load(&g);
  ASSERT_TRUE(seen.ok() && seen->has_value());
  EXPECT_EQ((*seen)->name, "a");
  EXPECT_EQ(g, 4u);
}

// But a publish that another replica made on ours, between our link and that look, is not a
// conflict: ours landed, and was decided on. Told as one, our caller would decide again on the
// newer state and could undo the other's change.
TEST(SessionStoreTest, APublishMadeOnOursRightAfterItIsNoConflict) {
  TempDir dir;
  SessionStore other(dir.path());
  bool publish_on_ours = false;
  SessionStore mine(dir.path(), [&](const std::string& path) {
    if (publish_on_ours) {  // the first listing after our link: another replica decides on it
      publish_on_ours = false;
      uint64_t g = 0;
      auto seen = other.Load(&g);
      EXPECT_TRUE(seen.ok() && seen->has_value() && (*seen)->name == "mine");
      EXPECT_TRUE(other.Save({"mine", "", false, ""}, g).ok());
    }
    return fs::ListDir(path);
  });
  ASSERT_TRUE(mine.Save({"first", "", false, ""}, 0).ok());
  publish_on_ours = true;
  EXPECT_TRUE(mine.Save({"mine", "", true, ""}, 1).ok());
  EXPECT_FALSE(publish_on_ours) << "the other replica did not publish";
  uint64_t g = 0;
  auto seen = mine.Load(&g);
  ASSERT_TRUE(seen.ok() && seen->has_value());
  EXPECT_EQ(g, 3u);
  EXPECT_FALSE((*seen)->active) << "the other's stop stands";
}

// Every publish removes the generations before the previous one, so a reader lists a handful of
// names however long the volume has been in use, and no temporary file is left behind: not its
// own, nor one that a writer which crashed before its unlink left. A temp file of a generation
// that may still be linked (by a writer that is about to lose) stays.
TEST(SessionStoreTest, OldGenerationsAreRemoved) {
  TempDir dir;
  SessionStore store(dir.path());
  const std::string sessions = dir.path() + "/_session";
  ASSERT_TRUE(fs::MkdirAll(sessions).ok());
  ASSERT_TRUE(fs::WriteNewFile(sessions + "/3.json.tmp-0123456789ab", "{}").ok());
  for (uint64_t g = 0; g < 20; ++g) {
    if (g == 18) {
      ASSERT_TRUE(fs::WriteNewFile(sessions + "/20.json.tmp-456789abcdef", "{}").ok());
    }
    ASSERT_TRUE(store.Save({"s" + std::to_string(g), "", g % 2 == 0, ""}, g).ok());
  }
  auto entries = fs::ListDir(sessions);
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> names;
  for (const auto& e : *entries) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"19.json", "20.json", "20.json.tmp-456789abcdef"}));
  uint64_t g = 0;
  auto got = store.Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->name, "s19");
  EXPECT_EQ(g, 20u);
}

// A store remembers the highest generation it saw, so a stale listing never sends it back. If
// that generation is gone for good (the directory cleared by hand, a volume restored), the store
// starts over from what is there instead of failing every read until it restarts.
TEST(SessionStoreTest, AGenerationKnownHereAndGoneIsForgotten) {
  TempDir dir;
  SessionStore store(dir.path());
  ASSERT_TRUE(store.Save({"s1", "", true, ""}, 0).ok());
  ASSERT_TRUE(store.Save({"s1", "", false, ""}, 1).ok());
  ASSERT_TRUE(fs::RemoveTree(dir.path() + "/_session").ok());
  uint64_t g = 7;
  auto got = store.Load(&g);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(g, 0u);
  ASSERT_TRUE(store.Save({"s2", "", true, ""}, g).ok());
  got = store.Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->name, "s2");
  EXPECT_EQ(g, 1u);
}

// What an NFS client may serve for a while after the directory changed: the listing as it was.
// A local filesystem never lags, so the tests below freeze one to reach the look-ahead by name
// and the high-water mark, which exist for that lag.
SessionStore::DirLister FrozenListing(const std::string& root) {
  auto at_freeze = fs::ListDir(root + "/_session");
  EXPECT_TRUE(at_freeze.ok()) << at_freeze.status().ToString();
  return [at_freeze](const std::string&) { return at_freeze; };
}

SessionState Named(const std::string& name) { return {name, "2026-11-28T00:00:00.000Z", true, ""}; }

// A replica whose listing still shows generation 1 reads what was published since: each newer
// generation is looked up by name, and one missing name is stepped over, since a publish removes
// the generations before the previous one (listed 1; present 3 and 4).
TEST(SessionStoreTest, AStaleListingDoesNotHideNewerGenerations) {
  TempDir dir;
  SessionStore writer(dir.path());
  ASSERT_TRUE(writer.Save(Named("g1"), 0).ok());
  const SessionStore::DirLister stale = FrozenListing(dir.path());  // lists 1.json only
  ASSERT_TRUE(writer.Save(Named("g2"), 1).ok());
  ASSERT_TRUE(writer.Save(Named("g3"), 2).ok());  // removes 1.json: present 2 and 3
  ASSERT_FALSE(fs::Stat(dir.path() + "/_session/1.json").ok());

  SessionStore reader(dir.path(), stale);
  uint64_t g = 0;
  auto got = reader.Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->name, "g3");
  EXPECT_EQ(g, 3u);

  ASSERT_TRUE(writer.Save(Named("g4"), 3).ok());  // removes 2.json: present 3 and 4
  ASSERT_FALSE(fs::Stat(dir.path() + "/_session/2.json").ok());
  got = SessionStore(dir.path(), stale).Load(&g);  // a replica that starts now: 2 is the gap
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->name, "g4");
  EXPECT_EQ(g, 4u);
  got = reader.Load(&g);  // and the one that read 3 before
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->name, "g4");
  EXPECT_EQ(g, 4u);
}

// A writer that lost a race knows the generation it lost to exists, whatever its listing says,
// and reads from there on. Here its listing stays at generation 1 while the winner publishes 2
// and goes on to 5 (present 4 and 5): looking ahead from 1 would step over one missing name (2)
// but not two (2 and 3), so only the generation remembered from the lost race (2) leads to 5.
TEST(SessionStoreTest, AWriterThatLostARaceReadsTheWinnerDespiteAStaleListing) {
  TempDir dir;
  SessionStore winner(dir.path());
  ASSERT_TRUE(winner.Save(Named("first"), 0).ok());
  SessionStore loser(dir.path(), FrozenListing(dir.path()));  // lists 1.json only, from now on
  uint64_t g = 0;
  auto got = loser.Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  ASSERT_EQ(g, 1u);
  ASSERT_TRUE(winner.Save(Named("won"), 1).ok());
  EXPECT_EQ(loser.Save(Named("lost"), g).kind(), ErrorKind::kConflict);
  for (uint64_t w = 2; w < 5; ++w) {
    ASSERT_TRUE(winner.Save(Named("won-" + std::to_string(w + 1)), w).ok());
  }
  ASSERT_FALSE(fs::Stat(dir.path() + "/_session/3.json").ok());  // present: 4 and 5
  got = loser.Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->name, "won-5");
  EXPECT_EQ(g, 5u);
}

// A volume written by the version before generations held one _session.json: it is the current
// state (generation 0) until the first change, which is decided on it, so an upgrade neither
// loses an active session nor lets a second one start beside it.
TEST(SessionStoreTest, TheSessionFileOfTheFormerVersionIsTheCurrentState) {
  TempDir dir;
  const std::string old_file = dir.path() + "/_session.json";
  ASSERT_TRUE(fs::AtomicWriteFile(old_file, R"({
  "active": true,
  "name": "before-upgrade",
  "started_at": "2026-11-28T00:00:00.000Z"
})")
                  .ok());
  SessionStore store(dir.path());
  uint64_t g = 99;
  auto got = store.Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->name, "before-upgrade");
  EXPECT_TRUE((*got)->active);
  EXPECT_EQ((*got)->started_at, "2026-11-28T00:00:00.000Z");
  EXPECT_EQ(g, 0u);
  SessionState stopped = **got;
  stopped.active = false;
  stopped.stopped_at = "2026-11-28T00:00:05.000Z";
  ASSERT_TRUE(store.Save(stopped, g).ok());
  got = SessionStore(dir.path()).Load(&g);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->name, "before-upgrade");
  EXPECT_FALSE((*got)->active);
  EXPECT_EQ(g, 1u);
  ASSERT_TRUE(store.Save({"next", "", true, ""}, g).ok());
  EXPECT_FALSE(fs::Stat(old_file).ok());  // superseded, removed with the old generations
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
    auto r = SessionStore(dir.path()).Load();
    if (r.ok()) {
      EXPECT_FALSE((*r)->active) << body;  // a non-boolean "active" is not active
    } else {
      EXPECT_EQ(r.status().kind(), ErrorKind::kPermanent) << body;
    }
  }
}

}  // namespace
}  // namespace nbu::core
