#include "audit/audit_log.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "audit/verify.h"
#include "support/raw_sqlite.h"
#include "support/temp_dir.h"

using namespace moat;
using moat::testing::TempDir;

namespace {

using moat::testing::raw_exec;

// 2026-11-27T07:20:00Z
constexpr int64_t kT0 = 1795764000LL * 1'000'000'000LL;

// A clock that ticks one second per reading, from kT0.
AuditLog::Clock ticking_clock() {
  auto t = std::make_shared<int64_t>(kT0);
  return [t] { return std::exchange(*t, *t + 1'000'000'000LL); };
}

struct Fixture {
  TempDir dir{"moat-audit"};
  std::filesystem::path path = dir / "moat.db";
  Database db = std::move(Database::open(path).value());
  AuditLog log{db, ticking_clock()};

  void fill(int n) {
    for (int i = 1; i <= n; ++i) {
      auto r = log.append(i % 2 ? "exec" : "sandbox.start", "cli", "box", Json{{"argv", {"echo", i}}, {"i", i}});
      ASSERT_TRUE(r) << r.error().message;
      ASSERT_EQ(*r, i);
    }
  }
  VerifyReport verify() {
    auto r = verify_chain(db);
    EXPECT_TRUE(r) << r.error().message;
    return r.value_or(VerifyReport{});
  }
};

}  // namespace

TEST(AuditLog, AppendedChainVerifies) {
  Fixture f;
  f.fill(30);
  auto rep = f.verify();
  EXPECT_TRUE(rep.ok) << rep.problem;
  EXPECT_EQ(rep.records, 30);
  EXPECT_EQ(rep.last_seq, 30);
  EXPECT_EQ(rep.first_bad_seq, 0);

  auto first = f.log.read_after(0, 2);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].prev_hash, kGenesisHash);
  EXPECT_EQ((*first)[1].prev_hash, (*first)[0].hash);
  EXPECT_EQ((*first)[0].time_ns, kT0);
  EXPECT_EQ((*first)[0].data, (Json{{"argv", {"echo", 1}}, {"i", 1}}));
  EXPECT_EQ(rep.last_hash, f.log.read_after(29, 1).value()[0].hash);
}

TEST(AuditLog, EmptyLogVerifies) {
  Fixture f;
  auto rep = f.verify();
  EXPECT_TRUE(rep.ok);
  EXPECT_EQ(rep.records, 0);
  EXPECT_EQ(*f.log.last_seq(), 0);
}

TEST(AuditLog, ChainContinuesAcrossReopen) {
  TempDir dir("moat-audit");
  {
    auto db = Database::open(dir / "moat.db");
    ASSERT_TRUE(db);
    AuditLog log(*db);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(log.append("exec", "cli", "box", Json{{"i", i}}));
  }
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  AuditLog log(*db);
  EXPECT_EQ(*log.last_seq(), 5);
  EXPECT_EQ(*log.append("exec", "cli", "box"), 6);
  auto rep = verify_chain(*db);
  ASSERT_TRUE(rep);
  EXPECT_TRUE(rep->ok) << rep->problem;
  EXPECT_EQ(rep->records, 6);
}

TEST(AuditLog, EditedDataIsNamedByRecord) {
  Fixture f;
  f.fill(30);
  raw_exec(f.path, R"(UPDATE audit SET data = '{"argv":["rm","-rf","/"]}' WHERE seq = 17)");
  auto rep = f.verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 17);
  EXPECT_EQ(rep.records, 17);
  // Record 17 was appended 16 seconds after kT0.
  EXPECT_EQ(rep.problem, "record 17 (exec at 2026-11-27T07:20:16Z) was altered: its hash does not match its contents");
}

TEST(AuditLog, EveryEditedFieldIsDetected) {
  for (std::string set : std::vector<std::string>{"time_ns = time_ns + 1", "kind = 'other'", "actor = 'someone'", "subject = 'x'",
                          "prev_hash = '" + std::string(64, 'f') + "'", "hash = '" + std::string(64, 'a') + "'"}) {
    Fixture f;
    f.fill(10);
    raw_exec(f.path, "UPDATE audit SET " + set + " WHERE seq = 4");
    auto rep = f.verify();
    EXPECT_FALSE(rep.ok) << set;
    EXPECT_EQ(rep.first_bad_seq, 4) << set << ": " << rep.problem;
  }
}

TEST(AuditLog, DeletedRecordIsMissing) {
  Fixture f;
  f.fill(10);
  raw_exec(f.path, "DELETE FROM audit WHERE seq = 5");
  auto rep = f.verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 5);
  EXPECT_EQ(rep.problem, "record 5 is missing");

  raw_exec(f.path, "DELETE FROM audit WHERE seq IN (1, 2)");
  rep = f.verify();
  EXPECT_EQ(rep.first_bad_seq, 1);
  EXPECT_EQ(rep.problem, "records 1 to 2 are missing");
}

TEST(AuditLog, ReorderedRecordsAreDetected) {
  Fixture f;
  f.fill(12);
  // Swap records 10 and 11 by renumbering them.
  raw_exec(f.path, "UPDATE audit SET seq = -10 WHERE seq = 10; UPDATE audit SET seq = 10 WHERE seq = 11; "
                   "UPDATE audit SET seq = 11 WHERE seq = -10;");
  auto rep = f.verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 10) << rep.problem;
}

TEST(AuditLog, ForgedRecordWithRecomputedHashBreaksTheLink) {
  Fixture f;
  f.fill(20);
  // The attacker rewrites record 18 to point elsewhere and recomputes its own hash correctly; the
  // record is self-consistent, but it no longer follows record 17.
  auto rows = f.log.read_after(17, 1).value();
  auto& r = rows[0];
  std::string forged_prev(64, 'b');
  std::string data = canonical_json(r.data);
  std::string h = record_hash(r.seq, r.time_ns, r.kind, r.actor, r.subject, data, forged_prev);
  raw_exec(f.path, fmt::format("UPDATE audit SET prev_hash = '{}', hash = '{}' WHERE seq = 18", forged_prev, h));
  auto rep = f.verify();
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 18);
  EXPECT_EQ(rep.problem, "record 18 does not follow record 17: prev_hash mismatch");
}

TEST(AuditLog, HashFieldBoundariesCannotShift) {
  std::string a = record_hash(1, 2, "ab", "c", "s", "{}", kGenesisHash);
  std::string b = record_hash(1, 2, "a", "bc", "s", "{}", kGenesisHash);
  std::string c = record_hash(12, 2, "a", "c", "s", "{}", kGenesisHash);
  std::string d = record_hash(1, 22, "a", "c", "s", "{}", kGenesisHash);
  EXPECT_NE(a, b);
  EXPECT_NE(c, d);
  EXPECT_EQ(a.size(), 64u);
  // Canonical data: key order of construction does not matter.
  EXPECT_EQ(canonical_json(Json::parse(R"({"b":1,"a":[1,2]})")), R"({"a":[1,2],"b":1})");
  // Invalid UTF-8 does not throw.
  EXPECT_NO_THROW(canonical_json(Json{{"x", std::string("\xff\xfe")}}));
}

TEST(AuditLog, SubscribersSeeCommittedEventsInOrder) {
  Fixture f;
  std::vector<int64_t> seen;
  std::string last_hash;
  auto id = f.log.subscribe([&](const AuditEvent& ev) {
    seen.push_back(ev.seq);
    last_hash = ev.hash;
    // The event is already durable: a separate connection can read it.
    auto reader = f.db.open_reader();
    EXPECT_EQ(reader->query_int64(fmt::format("SELECT count(*) FROM audit WHERE seq = {}", ev.seq)).value(), 1);
    auto nested = f.log.append("nested", "cli", "box");
    EXPECT_FALSE(nested);  // refused rather than deadlocking
  });
  f.fill(3);
  ASSERT_TRUE(f.log.append_batch({{"a", "cli", "box", {}}, {"b", "cli", "box", {}}}));
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(last_hash, f.log.read_after(4, 1).value()[0].hash);
  f.log.unsubscribe(id);
  f.fill(0);
  ASSERT_TRUE(f.log.append("after", "cli", "box"));
  EXPECT_EQ(seen.size(), 5u);
}

TEST(AuditLog, ConcurrentAppendsFormOneChain) {
  TempDir dir("moat-audit");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  AuditLog log(*db);
  std::atomic<int64_t> delivered_in_order{0}, last_delivered{0};
  log.subscribe([&](const AuditEvent& ev) {
    if (ev.seq == last_delivered + 1) ++delivered_in_order;
    last_delivered = ev.seq;
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) ASSERT_TRUE(log.append("exec", fmt::format("agent{}", t), "box", Json{{"i", i}}));
    });
  for (auto& t : threads) t.join();
  auto rep = verify_chain(*db);
  ASSERT_TRUE(rep);
  EXPECT_TRUE(rep->ok) << rep->problem;
  EXPECT_EQ(rep->records, 100);
  EXPECT_EQ(delivered_in_order.load(), 100);
}

TEST(AuditLog, LargeBatchedChainVerifiesQuickly) {
  TempDir dir("moat-audit");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  AuditLog log(*db);
  constexpr int kTotal = 200'000, kBatch = 10'000;
  auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b < kTotal / kBatch; ++b) {
    std::vector<AuditEntry> batch;
    batch.reserve(kBatch);
    for (int i = 0; i < kBatch; ++i)
      batch.push_back({"exec", "agent", "box", Json{{"argv", {"true"}}, {"exit", 0}, {"n", b * kBatch + i}}});
    auto r = log.append_batch(std::move(batch));
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(*r, (b + 1) * kBatch);
  }
  auto t1 = std::chrono::steady_clock::now();
  auto rep = verify_chain(*db);
  auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_TRUE(rep->ok) << rep->problem;
  EXPECT_EQ(rep->records, kTotal);
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::printf("append_batch: %d events in %lld ms; verify: %lld ms\n", kTotal, (long long)ms(t1 - t0),
              (long long)ms(t2 - t1));

  // Large chains are checked in ranges in parallel; problems anywhere, and at range boundaries, are
  // still reported at the lowest broken seq.
  raw_exec(dir / "moat.db", "UPDATE audit SET data = '{}' WHERE seq = 150000");
  rep = verify_chain(*db);
  ASSERT_TRUE(rep);
  EXPECT_FALSE(rep->ok);
  EXPECT_EQ(rep->first_bad_seq, 150000) << rep->problem;
  EXPECT_EQ(rep->records, 150000);
  raw_exec(dir / "moat.db", "DELETE FROM audit WHERE seq = 100000");
  rep = verify_chain(*db);
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->first_bad_seq, 100000);
  EXPECT_EQ(rep->problem, "record 100000 is missing");
}

TEST(AuditLog, StagedRecordsAreDurableExactlyWithTheirTransaction) {
  Fixture f;
  ASSERT_TRUE(f.db.exec("CREATE TABLE work (x)"));
  f.fill(2);
  std::vector<int64_t> seen;
  f.log.subscribe([&](const AuditEvent& ev) { seen.push_back(ev.seq); });
  {
    // Rolled back: neither the change nor its records exist, and the chain goes on from seq 2.
    auto tx = Transaction::begin(f.db);
    ASSERT_TRUE(tx);
    ASSERT_TRUE(f.db.exec("INSERT INTO work VALUES (1)"));
    auto staged = f.log.stage(*tx, {{"work.done", "cli", "w1", {}}, {"work.done", "cli", "w2", {}}});
    ASSERT_TRUE(staged) << staged.error().message;
  }
  EXPECT_EQ(*f.db.query_int64("SELECT count(*) FROM audit"), 2);
  EXPECT_TRUE(seen.empty());
  ASSERT_EQ(f.log.append("exec", "cli", "box").value(), 3);
  {
    auto tx = Transaction::begin(f.db);
    ASSERT_TRUE(tx);
    ASSERT_TRUE(f.db.exec("INSERT INTO work VALUES (2)"));
    auto staged = f.log.stage(*tx, {{"work.done", "cli", "w3", {}}});
    ASSERT_TRUE(staged);
    ASSERT_TRUE(tx->commit());
    EXPECT_EQ(f.log.publish(std::move(*staged)), 4);
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(*f.db.query_int64("SELECT count(*) FROM work"), 1);
  ASSERT_EQ(f.log.append("exec", "cli", "box").value(), 5);
  auto rep = f.verify();
  EXPECT_TRUE(rep.ok) << rep.problem;
  EXPECT_EQ(rep.records, 5);
}
