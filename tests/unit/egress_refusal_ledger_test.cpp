// The refusal ledger: refusals cost the flooding agent, never the host or other agents.
#include <gtest/gtest.h>

#include "egress/refusal_ledger.h"

using namespace moat;
using namespace moat::egress;
using namespace std::chrono_literals;

namespace {

Json refusal(const std::string& host, const std::string& rule = "default deny") {
  return Json{{"mode", "http"}, {"host", host}, {"port", 80}, {"decision", "deny"}, {"rule", rule}, {"reason", "no"}};
}

TEST(RefusalLedger, RepeatsWithinAnIntervalAreOneRecordWithACount) {
  RefusalLedger ledger({});
  auto t = std::chrono::steady_clock::now();
  size_t now_records = 0;
  for (int i = 0; i < 1000; ++i) now_records += ledger.note("a", refusal("192.0.2.1"), t, 1).size();
  now_records += ledger.note("a", refusal("192.0.2.2"), t, 1).size();
  now_records += ledger.note("b", refusal("192.0.2.1"), t, 1).size();
  EXPECT_EQ(now_records, 3u);  // the first of each kind, per agent
  auto rolled = ledger.roll(1);
  ASSERT_EQ(rolled.size(), 1u);  // only a's 192.0.2.1 repeated
  EXPECT_EQ(rolled[0].actor, "a");
  EXPECT_EQ(rolled[0].data["repeats"], 999);
  EXPECT_EQ(rolled[0].data["host"], "192.0.2.1");
  // A new interval starts afresh: the next one is recorded at once again.
  EXPECT_EQ(ledger.note("a", refusal("192.0.2.1"), t, 1).size(), 1u);
  EXPECT_TRUE(ledger.roll(1).empty());
}

TEST(RefusalLedger, VaryingNamesCannotDodgeCoalescing) {
  RefusalLedger ledger({.kinds_per_agent = 8});
  auto t = std::chrono::steady_clock::now();
  size_t records = 0;
  for (int i = 0; i < 10000; ++i) records += ledger.note("a", refusal(fmt::format("h{}.example", i)), t, 1).size();
  EXPECT_EQ(records, 9u);  // 8 kinds, then one pooled kind
  EXPECT_EQ(ledger.roll(1).size(), 1u);
}

TEST(RefusalLedger, TheDailyCapIsOneRecordAndWhatFollowsIsCounted) {
  RefusalLedger ledger({.rows_per_day = 5, .kinds_per_agent = 100000});
  auto t = std::chrono::steady_clock::now();
  std::vector<AuditEntry> all;
  for (int i = 0; i < 100; ++i)
    for (auto& e : ledger.note("a", refusal(fmt::format("h{}.example", i)), t, 7)) all.push_back(e);
  ASSERT_EQ(all.size(), 6u);  // five refusals and the cap record
  EXPECT_EQ(all.back().data["rule"], "refusal cap");
  EXPECT_TRUE(ledger.roll(7).empty());  // same day: still counting
  // Another agent is not affected by a's cap.
  EXPECT_EQ(ledger.note("b", refusal("x.example"), t, 7).size(), 1u);
  // The day ends: one record says how many went unrecorded.
  auto rolled = ledger.roll(8);
  ASSERT_EQ(rolled.size(), 1u);
  EXPECT_EQ(rolled[0].data["unrecorded"], 95);
  EXPECT_EQ(ledger.note("a", refusal("y.example"), t, 8).size(), 1u);  // a new day's first
}

TEST(RefusalLedger, OverTheRateTheAnswerWaitsAndTheWaitGrowsWithTheDebt) {
  RefusalLedger ledger({.per_second = 100, .burst = 10, .max_wait = std::chrono::seconds(1)});
  auto t = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ledger.admit("a", t).count(), 0) << i;
  auto first = ledger.admit("a", t);
  auto second = ledger.admit("a", t);
  EXPECT_NEAR(std::chrono::duration<double>(first).count(), 0.01, 1e-6);
  EXPECT_NEAR(std::chrono::duration<double>(second).count(), 0.02, 1e-6);
  // Another agent has its own bucket.
  EXPECT_EQ(ledger.admit("b", t).count(), 0);
  // After a second the bucket is full again (and no fuller than the burst).
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ledger.admit("a", t + 1s).count(), 0) << i;
  EXPECT_GT(ledger.admit("a", t + 1s).count(), 0);
  // Debt is bounded: past max_wait (1 s: 100 refusals at 100/s) nothing more is queued, and the answer
  // says so; a flood that stops is answered normally again within max_wait.
  for (int i = 0; i < 500; ++i) (void)ledger.admit("a", t + 1s);
  EXPECT_GT(ledger.admit("a", t + 1s), std::chrono::seconds(1));
  EXPECT_EQ(ledger.admit("a", t + 2s + 20ms).count(), 0);
}

TEST(RefusalLedger, AFinalRollReportsEverythingCounted) {
  RefusalLedger ledger({.rows_per_day = 1});
  auto t = std::chrono::steady_clock::now();
  ledger.note("a", refusal("a.example"), t, 3);
  ledger.note("a", refusal("b.example"), t, 3);
  auto rolled = ledger.roll(3, true);
  ASSERT_EQ(rolled.size(), 1u);
  EXPECT_EQ(rolled[0].data["unrecorded"], 1);
}

}  // namespace
