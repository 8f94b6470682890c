#include "core/stability.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace nbu::core {
namespace {

using namespace std::chrono_literals;

fs::FileStat St(uint64_t size, int64_t mtime, uint64_t ino = 1) {
  fs::FileStat s;
  s.size = size;
  s.mtime_ns = mtime;
  s.ino = ino;
  return s;
}

class StabilityTest : public ::testing::Test {
 protected:
  bool Scan(const std::string& rel, const fs::FileStat& st) {
    tracker.BeginScan();
    const bool ready = tracker.Observe(rel, st, clock.Now());
    tracker.EndScan();
    return ready;
  }
  SimulatedClock clock{false};
  StabilityTracker tracker{5s};
};

TEST_F(StabilityTest, ReadyOnlyAfterTwoEqualScansAndMinimumAge) {
  EXPECT_FALSE(Scan("a", St(10, 100)));  // first sight
  clock.Advance(2s);
  EXPECT_FALSE(Scan("a", St(10, 100)));  // equal, but only 2 s old
  clock.Advance(3s);
  EXPECT_TRUE(Scan("a", St(10, 100)));  // equal and 5 s old
  clock.Advance(2s);
  EXPECT_FALSE(Scan("a", St(10, 100)));  // already queued: reported once
}

TEST_F(StabilityTest, AnyChangeRestartsTheClock) {
  EXPECT_FALSE(Scan("a", St(10, 100)));
  clock.Advance(10s);
  EXPECT_FALSE(Scan("a", St(20, 100)));  // grew
  clock.Advance(10s);
  EXPECT_FALSE(Scan("a", St(20, 200, 1) /* mtime moved */));
  clock.Advance(10s);
  EXPECT_FALSE(Scan("a", St(20, 200, 2) /* replaced: new inode */));
  clock.Advance(4s);
  EXPECT_FALSE(Scan("a", St(20, 200, 2)));
  clock.Advance(1s);
  EXPECT_TRUE(Scan("a", St(20, 200, 2)));
}

// A ready file that could not be taken (its open or claim failed) is reported ready again at the
// next scan while unchanged, keeping its first sight, and only once per scan, even where NFS
// lists its name twice; changed, it waits its minimum age again.
TEST_F(StabilityTest, AFileThatCouldNotBeTakenIsReportedAgainOncePerScan) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  for (int i = 0; i < 2; ++i) {
    tracker.Retry("a", clock.Now(), /*queued=*/i == 0);
    clock.Advance(1s);
    tracker.BeginScan();
    EXPECT_FALSE(tracker.SkipStat("a", clock.Now())) << "looked at again";
    bool requeued = i == 0;
    EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now(), &requeued));
    EXPECT_EQ(requeued, i == 0) << "queued before only where the caller said so";
    tracker.Retry("a", clock.Now(), true);  // failed again
    EXPECT_FALSE(tracker.Observe("a", St(1, 1), clock.Now())) << "listed twice: tried once";
    const auto summary = tracker.EndScan();
    EXPECT_EQ(summary.not_ready, 0u);
    EXPECT_EQ(summary.next_due, std::nullopt);
    ASSERT_TRUE(summary.oldest_pending.has_value());
    EXPECT_EQ(clock.Now() - *summary.oldest_pending, 6s + std::chrono::seconds(i));
  }
  clock.Advance(1s);
  EXPECT_FALSE(Scan("a", St(2, 2))) << "changed: its clock starts again";
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(2, 2)));
}

// A file whose claim failed is tried again no sooner than its due time: scans before it (change
// hints bring them every few milliseconds) skip it as a queued file, without a stat.
TEST_F(StabilityTest, AFileThatCouldNotBeTakenWaitsForItsDueTime) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  tracker.Retry("a", clock.Now() + 2s, /*queued=*/true);
  for (int i = 0; i < 3; ++i) {
    clock.Advance(10ms);
    tracker.BeginScan();
    EXPECT_TRUE(tracker.SkipStat("a", clock.Now(), /*changed=*/true)) << "looked at before due";
    const auto summary = tracker.EndScan();
    EXPECT_EQ(summary.not_ready, 0u);
  }
  clock.Advance(2s);
  tracker.BeginScan();
  EXPECT_FALSE(tracker.SkipStat("a", clock.Now()));
  bool requeued = false;
  EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now(), &requeued));
  EXPECT_TRUE(requeued);
  tracker.EndScan();
  clock.Advance(5s);
  EXPECT_FALSE(Scan("a", St(1, 1))) << "tried again once, then queued as before";
}

// A file whose open failed, listed a second time in the same scan (NFS can repeat a name) and
// changed by then, waits its minimum age again like any changed file: not reported ready at
// the next scan for the failed open's retry.
TEST_F(StabilityTest, AFileThatChangedAfterAFailedOpenWaitsItsMinimumAge) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  tracker.Retry("a", clock.Now(), /*queued=*/false);  // its open failed
  clock.Advance(1s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now()));
  tracker.Retry("a", clock.Now(), /*queued=*/false);  // and again
  EXPECT_FALSE(tracker.Observe("a", St(2, 2), clock.Now())) << "listed again, changed";
  tracker.EndScan();
  clock.Advance(10ms);
  EXPECT_FALSE(Scan("a", St(2, 2))) << "reported ready before its minimum age";
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(2, 2)));
}

// NFS may list a name twice in one scan. If that makes the listing as long as the table while a
// claimed (forgotten) name is missing from it, the forgotten name must still go: a new file
// under it is then tracked from scratch, not taken as queued for good.
TEST_F(StabilityTest, AForgottenNameGoesEvenWhenARepeatedNameEvensTheCount) {
  for (int i = 0; i < 2; ++i) {
    tracker.BeginScan();
    EXPECT_EQ(tracker.Observe("b", St(2, 2), clock.Now()), i == 1);
    EXPECT_EQ(tracker.Observe("a", St(1, 1), clock.Now()), i == 1);
    tracker.EndScan();
    clock.Advance(5s);
  }
  // "a" was claimed: not listed; "b" listed twice, first where the last listing had it.
  tracker.BeginScan();
  tracker.Forget("a");
  EXPECT_TRUE(tracker.SkipStat("b", clock.Now()));
  EXPECT_TRUE(tracker.SkipStat("b", clock.Now()));
  tracker.EndScan();
  // The producer writes "a" again.
  bool ready = false;
  for (int i = 0; i < 2 && !ready; ++i) {
    tracker.BeginScan();
    EXPECT_TRUE(tracker.SkipStat("b", clock.Now()));
    ready = !tracker.SkipStat("a", clock.Now()) && tracker.Observe("a", St(3, 3, 2), clock.Now());
    tracker.EndScan();
    clock.Advance(5s);
  }
  EXPECT_TRUE(ready) << "the new \"a\" was never looked at";
}

TEST_F(StabilityTest, OldMtimeDoesNotMakeAFileReady) {
  // The NFS server's clock may be far behind: a file with an ancient mtime is still measured on
  // our own clock from when we first saw it.
  EXPECT_FALSE(Scan("a", St(10, 1)));
  EXPECT_FALSE(Scan("a", St(10, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(10, 1)));
}

TEST_F(StabilityTest, ZeroMinimumAgeStillNeedsTwoScans) {
  StabilityTracker t(0s);
  t.BeginScan();
  EXPECT_FALSE(t.Observe("a", St(0, 1), clock.Now()));
  t.EndScan();
  t.BeginScan();
  EXPECT_TRUE(t.Observe("a", St(0, 1), clock.Now()));
  t.EndScan();
}

TEST_F(StabilityTest, VanishedFilesAreForgottenAndQueuedOnesKeptWithoutAStat) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  tracker.BeginScan();
  EXPECT_TRUE(tracker.SkipStat("a", clock.Now()));  // queued: kept alive without a stat
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 1u);
  tracker.BeginScan();  // "a" not listed any more: claimed
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 0u);
  // A new file under the same name starts from scratch.
  EXPECT_FALSE(Scan("a", St(1, 1)));
}

TEST_F(StabilityTest, ForgetLetsASameNamedFileBeQueuedAgain) {
  EXPECT_FALSE(Scan("a", St(1, 1)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(1, 1)));
  tracker.Forget("a");
  EXPECT_FALSE(Scan("a", St(2, 2, 9)));
  clock.Advance(5s);
  EXPECT_TRUE(Scan("a", St(2, 2, 9)));
}

TEST_F(StabilityTest, SummaryGivesOldestPendingAndNextDue) {
  tracker.BeginScan();
  const auto empty = tracker.EndScan();
  EXPECT_FALSE(empty.oldest_pending);
  EXPECT_FALSE(empty.next_due);
  Scan("a", St(1, 1));
  const MonoTime t = clock.Now();
  clock.Advance(3s);
  tracker.BeginScan();
  tracker.Observe("a", St(1, 1), clock.Now());
  tracker.Observe("b", St(1, 1), clock.Now());
  const auto first = tracker.EndScan();
  EXPECT_EQ(*first.oldest_pending, t);
  EXPECT_EQ(*first.next_due, t + 5s);  // "a" comes of age first
  clock.Advance(2s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now()));  // queued: no longer due
  EXPECT_FALSE(tracker.Observe("b", St(1, 1), clock.Now()));
  const auto second = tracker.EndScan();
  EXPECT_EQ(*second.oldest_pending, t);
  EXPECT_EQ(*second.next_due, t + 3s + 5s);  // "b"
}

TEST_F(StabilityTest, NamesListedInAnotherOrderOrForgottenMidScanKeepTheirState) {
  // "a" and "c" queued, "b" pending; then the listing changes order, loses "c", gains "d".
  tracker.BeginScan();
  for (const char* n : {"a", "b", "c"}) tracker.Observe(n, St(1, 1), clock.Now());
  tracker.EndScan();
  clock.Advance(5s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now()));
  EXPECT_FALSE(tracker.Observe("b", St(2, 2), clock.Now()));  // changed: clock restarts
  EXPECT_TRUE(tracker.Observe("c", St(1, 1), clock.Now()));
  tracker.EndScan();
  tracker.BeginScan();
  EXPECT_FALSE(tracker.Observe("d", St(1, 1), clock.Now()));
  EXPECT_FALSE(tracker.SkipStat("x", clock.Now()));
  EXPECT_TRUE(tracker.SkipStat("b", clock.Now()));  // pending, not due
  EXPECT_TRUE(tracker.SkipStat("a", clock.Now()));  // queued
  tracker.Forget("a");                              // its claim failed mid-scan
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 2u);  // "b", "d"
  tracker.BeginScan();
  EXPECT_FALSE(tracker.SkipStat("a", clock.Now()));
  EXPECT_FALSE(tracker.Observe("a", St(1, 1), clock.Now()));  // tracked afresh
  tracker.EndScan();
}

// The fast path of a large backlog's scan: names listed in the same order as last time are
// skipped from the last listing, without a table lookup; another order still gets every answer
// right, through the table.
TEST_F(StabilityTest, AnUnchangedListingIsSkippedInListingOrder) {
  constexpr int kNames = 1000;
  std::vector<std::string> names;
  for (int i = 0; i < kNames; ++i) names.push_back("f" + std::to_string(i));
  tracker.BeginScan();
  for (const auto& n : names) EXPECT_FALSE(tracker.Observe(n, St(1, 1), clock.Now()));
  tracker.EndScan();
  auto skip_all = [&] {
    const uint64_t before = tracker.skipped_in_listing_order();
    tracker.BeginScan();
    for (const auto& n : names) EXPECT_TRUE(tracker.SkipStat(n, clock.Now()));  // not yet due
    tracker.EndScan();
    return tracker.skipped_in_listing_order() - before;
  };
  EXPECT_EQ(skip_all(), uint64_t{kNames});
  EXPECT_EQ(skip_all(), uint64_t{kNames});
  std::reverse(names.begin(), names.end());
  EXPECT_LT(skip_all(), uint64_t{kNames / 10});  // through the table
  EXPECT_EQ(skip_all(), uint64_t{kNames});       // the new order, learnt
  EXPECT_EQ(tracker.size(), size_t{kNames});
}

TEST_F(StabilityTest, AnEmptyListingAfterAScanStoppedHalfWayForgetsEveryFile) {
  tracker.BeginScan();
  for (const char* n : {"a", "b", "c"}) tracker.Observe(n, St(1, 1), clock.Now());
  tracker.EndScan();
  tracker.BeginScan();
  EXPECT_TRUE(tracker.SkipStat("a", clock.Now()));  // and the scan stops here
  tracker.BeginScan();                              // nothing is listed now
  const auto summary = tracker.EndScan();
  EXPECT_EQ(tracker.size(), 0u);
  EXPECT_FALSE(summary.oldest_pending);
  EXPECT_FALSE(summary.next_due);
}

TEST_F(StabilityTest, AFileForgottenAfterItWasSkippedIsLookedAtNextScan) {
  tracker.BeginScan();
  tracker.Observe("a", St(1, 1), clock.Now());
  tracker.Observe("b", St(1, 1), clock.Now());
  tracker.EndScan();
  clock.Advance(5s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.Observe("a", St(1, 1), clock.Now()));  // queued
  EXPECT_TRUE(tracker.Observe("b", St(1, 1), clock.Now()));
  tracker.EndScan();
  tracker.BeginScan();  // an unchanged listing, in step
  EXPECT_TRUE(tracker.SkipStat("a", clock.Now()));
  tracker.Forget("a");  // its claim settled while the scan went on
  EXPECT_TRUE(tracker.SkipStat("b", clock.Now()));
  tracker.EndScan();
  tracker.BeginScan();
  EXPECT_FALSE(tracker.SkipStat("a", clock.Now()));           // a new file under the name...
  EXPECT_FALSE(tracker.Observe("a", St(1, 1), clock.Now()));  // ...tracked from scratch
  EXPECT_TRUE(tracker.SkipStat("b", clock.Now()));
  tracker.EndScan();
}

// A scan that could not see everything at some name (a directory it could not open or list in
// full, an entry it could not stat) keeps what it did not list under that name as it was: a
// queued file stays queued (not reported ready a second time), a pending one keeps its first
// sight. Names elsewhere that the scan did not list are gone as ever, and the next scan that
// lists the directory in full drops those that did go.
TEST_F(StabilityTest, EntriesUnderANameThisScanCouldNotSeeKeepTheirState) {
  const MonoTime t0 = clock.Now();
  Scan("d/queued", St(1, 1));
  clock.Advance(5s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.Observe("d/queued", St(1, 1), clock.Now()));
  for (const char* n : {"d/e/pending", "dz", "x/gone", "f"}) {
    EXPECT_FALSE(tracker.Observe(n, St(1, 1), clock.Now()));
  }
  tracker.EndScan();
  clock.Advance(1s);
  tracker.BeginScan();
  EXPECT_FALSE(tracker.Observe("top", St(1, 1), clock.Now()));
  for (const char* n : {"d/queued", "d/e/pending", "dz", "x/gone", "f"}) {
    EXPECT_TRUE(tracker.SkipStat(n, clock.Now())) << n;
  }
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 6u);
  clock.Advance(2s);
  // "d" cannot be listed, "f" cannot be stat-ed; "dz" and "x/gone" are not listed: gone.
  tracker.BeginScan();
  tracker.KeepUnseen("d");
  EXPECT_TRUE(tracker.SkipStat("top", clock.Now()));
  tracker.KeepUnseen("f");
  const auto incomplete = tracker.EndScan();
  EXPECT_EQ(tracker.size(), 4u);  // "top", "d/queued", "d/e/pending", "f"
  EXPECT_EQ(incomplete.oldest_pending, t0) << "\"d/queued\" is still not claimed";
  EXPECT_EQ(incomplete.next_due, t0 + 6s + 5s)
      << "\"top\"'s: those not listed come of age when a scan lists them";
  clock.Advance(2s);
  tracker.BeginScan();
  EXPECT_TRUE(tracker.SkipStat("top", clock.Now()));
  EXPECT_TRUE(tracker.SkipStat("d/queued", clock.Now())) << "still queued";
  EXPECT_FALSE(tracker.SkipStat("d/e/pending", clock.Now())) << "due: first seen 5 s ago";
  EXPECT_TRUE(tracker.Observe("d/e/pending", St(1, 1), clock.Now()));
  EXPECT_FALSE(tracker.SkipStat("dz", clock.Now()));  // tracked from scratch
  EXPECT_FALSE(tracker.Observe("dz", St(1, 1), clock.Now()));
  tracker.EndScan();  // a complete listing: "f" did go
  EXPECT_EQ(tracker.size(), 4u);
  // A session directory that cannot be listed ("") keeps every entry.
  tracker.BeginScan();
  tracker.KeepUnseen("");
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 4u);
  tracker.BeginScan();  // a scan stopped half-way: what it kept does not carry over
  tracker.KeepUnseen("");
  tracker.BeginScan();
  tracker.EndScan();
  EXPECT_EQ(tracker.size(), 0u);
}

// The tracker against a plain map model of its contract, over random listings in which names
// come and go, keep or change their order, change their stat, are forgotten between or during
// scans, cannot be stat-ed, and scans are stopped or their listing fails half-way.
TEST_F(StabilityTest, AgreesWithAPlainMapOverRandomListings) {
  struct Model {
    struct E {
      fs::FileStat stat;
      MonoTime first_seen;
      uint64_t gen = 0;
      bool queued = false;
    };
    std::map<std::string, E> m;
    uint64_t gen = 0;
    Duration min_age = 5s;
    std::set<std::string> kept;  // KeepUnseen() this scan ("": everything)
    bool Observe(const std::string& rel, const fs::FileStat& st, MonoTime now) {
      auto [it, inserted] = m.try_emplace(rel);
      E& e = it->second;
      e.gen = gen;
      if (inserted || !(e.stat == st)) {
        e = E{st, now, gen, false};
        return false;
      }
      if (e.queued || now - e.first_seen < min_age) return false;
      return e.queued = true;
    }
    bool SkipStat(const std::string& rel, MonoTime now) {
      auto it = m.find(rel);
      if (it == m.end() || (!it->second.queued && now - it->second.first_seen >= min_age))
        return false;
      it->second.gen = gen;
      return true;
    }
    StabilityTracker::Summary EndScan() {
      StabilityTracker::Summary out;
      std::erase_if(m, [&](const auto& kv) {
        return kv.second.gen != gen && !kept.contains("") && !kept.contains(kv.first);
      });
      for (const auto& [rel, e] : m) {
        if (!out.oldest_pending || e.first_seen < *out.oldest_pending)
          out.oldest_pending = e.first_seen;
        if (e.gen == gen && !e.queued && (!out.next_due || e.first_seen + min_age < *out.next_due))
          out.next_due = e.first_seen + min_age;
      }
      kept.clear();
      return out;
    }
  } model;

  std::mt19937 rng(20261129);
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  std::vector<std::string> listing;
  std::map<std::string, fs::FileStat> stats;
  for (int i = 0; i < 40; ++i) listing.push_back("f" + std::to_string(i));
  for (int scan = 0; scan < 400; ++scan) {
    // Half the scans are calm: the same listing, stats and table as the scan before (the steady
    // state of a waiting backlog, which the tracker keeps without rebuilding its listing).
    const bool calm = chance(50);
    if (!calm) {
      // The next listing: mostly the same order; some names leave, arrive or swap places.
      std::erase_if(listing, [&](const std::string&) { return chance(3); });
      for (int i = 0; i < 3; ++i) {
        if (chance(40)) {
          const auto at = listing.begin() + static_cast<long>(rng() % (listing.size() + 1));
          listing.insert(at, "n" + std::to_string(rng() % 200));
        }
      }
      std::sort(listing.begin(), listing.end());
      listing.erase(std::unique(listing.begin(), listing.end()), listing.end());
      std::shuffle(listing.begin(), listing.end(), rng);           // as a rehashed directory may
      if (!chance(20)) std::sort(listing.begin(), listing.end());  // usually a stable order
      for (const auto& rel : listing) {
        if (chance(2)) stats[rel] = St(rng() % 3, static_cast<int64_t>(rng() % 3));
      }
      if (chance(10)) {
        const std::string rel = listing.empty() ? "none" : listing[rng() % listing.size()];
        tracker.Forget(rel);
        model.m.erase(rel);
      }
    }
    tracker.BeginScan();
    ++model.gen;
    model.kept.clear();  // a stopped scan's do not carry over
    const bool stopped = !calm && chance(5);
    // A listing that fails part-way: EndScan keeps what it did not list.
    const bool failed = !stopped && !calm && chance(5);
    const size_t end = stopped || failed ? listing.size() / 2 : listing.size();
    if (failed) {
      tracker.KeepUnseen("");
      model.kept.insert("");
    }
    for (size_t i = 0; i < end; ++i) {
      const std::string& rel = listing[i];
      const bool skip = tracker.SkipStat(rel, clock.Now());
      ASSERT_EQ(skip, model.SkipStat(rel, clock.Now())) << "scan " << scan << " " << rel;
      if (skip) continue;
      if (!calm && chance(3)) {  // its stat fails: kept as it is
        tracker.KeepUnseen(rel);
        model.kept.insert(rel);
        continue;
      }
      const bool ready = tracker.Observe(rel, stats[rel], clock.Now());
      ASSERT_EQ(ready, model.Observe(rel, stats[rel], clock.Now()))
          << "scan " << scan << " " << rel;
      if (ready && !calm && chance(30)) {  // claimed (or its claim failed) while the scan goes on
        tracker.Forget(rel);
        model.m.erase(rel);
      }
    }
    if (!stopped) {
      const auto got = tracker.EndScan();
      const auto want = model.EndScan();
      ASSERT_EQ(got.oldest_pending, want.oldest_pending) << "scan " << scan;
      ASSERT_EQ(got.next_due, want.next_due) << "scan " << scan;
      ASSERT_EQ(tracker.size(), model.m.size()) << "scan " << scan;
    }
    clock.Advance(std::chrono::seconds(rng() % 4));
  }
}

}  // namespace
}  // namespace nbu::core
