#include "store/sandbox_repo.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "config/limits.h"
#include "store/migrations.h"
#include "support/raw_sqlite.h"
#include "support/temp_dir.h"

using namespace moat;
using moat::testing::TempDir;

namespace {

SandboxRecord make(std::string name, int64_t uid_base = 0) {
  SandboxRecord r;
  r.name = name;
  r.id = "id-" + name;
  r.image = "default";
  r.image_digest = "sha256:aaaa";
  r.runtime = "runc";
  r.state = "created";
  r.uid_base = uid_base;
  r.disk_bytes = 10LL << 30;
  r.memory_bytes = 2LL << 30;
  r.pids_limit = 1024;
  r.cpus = 1.5;
  r.io_read_bps = 100LL << 20;
  r.io_write_bps = 50LL << 20;
  r.io_read_iops = 2000;
  r.io_write_iops = 1000;
  r.options_json = R"({"hardening":{"seccomp":true}})";
  r.created_at_ms = 1700000000000;
  return r;
}

struct Store {
  TempDir dir{"moat-store-repo"};
  Database db = std::move(Database::open(dir / "moat.db").value());
  SandboxRepo repo{db};
};

}  // namespace

TEST(StoreSandboxRepo, InsertGetListUpdateRemove) {
  Store s;
  auto a = s.repo.insert(make("alpha"));
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->uid_base, kIdRegionFirst);
  ASSERT_TRUE(s.repo.insert(make("beta")));

  auto got = s.repo.get("alpha");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, *a);

  auto all = s.repo.list();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "alpha");
  EXPECT_EQ((*all)[1].name, "beta");

  ASSERT_TRUE(s.repo.mark_started("alpha", 1234));
  got = s.repo.get("alpha");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, "running");
  EXPECT_EQ(got->started_at_ms, 1234);
  EXPECT_EQ(got->last_used_at_ms, 1234);
  ASSERT_TRUE(s.repo.touch("alpha", 5678));
  ASSERT_TRUE(s.repo.update_state("alpha", "stopped"));
  got = s.repo.get("alpha");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, "stopped");
  EXPECT_EQ(got->last_used_at_ms, 5678);
  EXPECT_DOUBLE_EQ(got->cpus, 1.5);
  EXPECT_EQ(got->options_json, R"({"hardening":{"seccomp":true}})");

  ASSERT_TRUE(s.repo.remove("alpha"));
  auto gone = s.repo.get("alpha");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, ErrorKind::NotFound);
  EXPECT_EQ(gone.error().message, "no sandbox named 'alpha'; see 'moat sandbox ls'");
}

TEST(StoreSandboxRepo, UnknownNamesAreNotFoundEverywhere) {
  Store s;
  for (auto st : {s.repo.update_state("ghost", "stopped"), s.repo.touch("ghost", 1), s.repo.mark_started("ghost", 1),
                  s.repo.remove("ghost")}) {
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind, ErrorKind::NotFound);
    EXPECT_NE(st.error().message.find("no sandbox named 'ghost'"), std::string::npos) << st.error().message;
  }
}

TEST(StoreSandboxRepo, DuplicateNameIsAConflictNamingTheSandbox) {
  Store s;
  ASSERT_TRUE(s.repo.insert(make("dup")));
  auto again = make("dup");
  again.id = "other-id";
  auto r = s.repo.insert(again);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::Conflict);
  EXPECT_NE(r.error().message.find("a sandbox named 'dup' already exists"), std::string::npos) << r.error().message;
  EXPECT_EQ(s.repo.list()->size(), 1u);
}

TEST(StoreSandboxRepo, BadStatesAndUidBasesAreRefused) {
  Store s;
  auto bad = make("x");
  bad.state = "exploded";
  auto r = s.repo.insert(bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  ASSERT_TRUE(s.repo.insert(make("x")));
  auto st = s.repo.update_state("x", "exploded");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::InvalidInput);

  for (int64_t base : {int64_t{1000}, kUidBaseFirst + 1, kUidBaseLast + kUidRangeSize}) {
    auto m = s.repo.insert(make("misaligned", base));
    ASSERT_FALSE(m) << base;
    EXPECT_EQ(m.error().kind, ErrorKind::InvalidInput);
  }
  // A legacy base (from before moat's own id region) is still a valid record; one that would run into
  // the region is not.
  EXPECT_TRUE(s.repo.insert(make("legacy", kUidBaseFirst)));
  EXPECT_FALSE(s.repo.insert(make("straddles", kUidBaseFirst + 16380 * kUidRangeSize)));
  // An explicit base already in use collides on the table's UNIQUE constraint.
  auto taken = s.repo.insert(make("y", kIdRegionFirst));
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().kind, ErrorKind::Conflict);
}

TEST(StoreSandboxRepo, UidRangesAreReusedAndNeverOverlap) {
  Store s;
  std::vector<int64_t> bases;
  for (int i = 0; i < 5; ++i) {
    auto r = s.repo.insert(make(fmt::format("s{}", i)));
    ASSERT_TRUE(r) << r.error().message;
    bases.push_back(r->uid_base);
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(bases[i], kIdRegionFirst + i * kUidRangeSize);

  ASSERT_TRUE(s.repo.remove("s1"));
  ASSERT_TRUE(s.repo.remove("s3"));
  EXPECT_EQ(*s.repo.allocate_uid_base(), kIdRegionFirst + 1 * kUidRangeSize);
  EXPECT_EQ(s.repo.insert(make("n1"))->uid_base, kIdRegionFirst + 1 * kUidRangeSize);
  EXPECT_EQ(s.repo.insert(make("n2"))->uid_base, kIdRegionFirst + 3 * kUidRangeSize);
  EXPECT_EQ(s.repo.insert(make("n3"))->uid_base, kIdRegionFirst + 5 * kUidRangeSize);
  // An explicit, aligned base far ahead leaves the gap below it usable.
  ASSERT_TRUE(s.repo.insert(make("far", kIdRegionFirst + 9 * kUidRangeSize)));
  EXPECT_EQ(s.repo.insert(make("n4"))->uid_base, kIdRegionFirst + 6 * kUidRangeSize);

  auto all = s.repo.list();
  ASSERT_TRUE(all);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (auto& r : *all) ranges.push_back({r.uid_base, r.uid_base + kUidRangeSize});
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) EXPECT_LE(ranges[i - 1].second, ranges[i].first);
  for (auto& [lo, hi] : ranges) EXPECT_LE(hi - 1, 0xFFFFFFFELL);
}

TEST(StoreSandboxRepo, CountsSandboxesUsingAnImage) {
  Store s;
  auto a = make("a"), b = make("b"), c = make("c");
  c.image_digest = "sha256:bbbb";
  for (auto& r : {a, b, c}) ASSERT_TRUE(s.repo.insert(r));
  EXPECT_EQ(*s.repo.count_using_image("sha256:aaaa"), 2);
  EXPECT_EQ(*s.repo.count_using_image("sha256:bbbb"), 1);
  EXPECT_EQ(*s.repo.count_using_image("sha256:none"), 0);
}

TEST(StoreSandboxRepo, RecordsSurviveReopen) {
  TempDir dir("moat-store-repo");
  SandboxRecord stored;
  {
    auto db = Database::open(dir / "moat.db");
    ASSERT_TRUE(db);
    SandboxRepo repo(*db);
    stored = repo.insert(make("keep")).value();
  }
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  SandboxRepo repo(*db);
  auto got = repo.get("keep");
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, stored);
}

TEST(StoreSandboxRepo, ConcurrentInsertsGetDistinctRanges) {
  Store s;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) ASSERT_TRUE(s.repo.insert(make(fmt::format("t{}-{}", t, i))));
    });
  for (auto& t : threads) t.join();
  std::set<int64_t> bases;
  auto all = s.repo.list();
  ASSERT_TRUE(all);
  for (auto& r : *all) bases.insert(r.uid_base);
  EXPECT_EQ(bases.size(), 40u);
}

TEST(StoreSandboxRepo, SandboxesMadeBeforeTheIoLimitGetTheDefaults) {
  TempDir dir("moat-store-repo");
  auto path = dir / "moat.db";
  // A store as the previous schema left it, with one sandbox in it.
  std::string old_schema;
  for (const auto& m : builtin_migrations())
    if (m.version < 7) old_schema += std::string(m.sql) + ";\n";
  moat::testing::raw_exec(path, old_schema + "PRAGMA user_version = 6;");
  moat::testing::raw_exec(path,
                          "INSERT INTO sandboxes (name, id, image, image_digest, runtime, state, uid_base, disk_bytes, "
                          "memory_bytes, pids_limit, cpus, created_at_ms) VALUES ('old', 'id-old', 'default', 'sha256:aaaa', "
                          "'runc', 'stopped', 1073741824, 1073741824, 1073741824, 1024, 1, 1)");
  auto db = Database::open(path);
  ASSERT_TRUE(db) << db.error().message;
  auto rec = SandboxRepo(*db).get("old");
  ASSERT_TRUE(rec) << rec.error().message;
  EXPECT_EQ(IoThrottle<uint64_t>({uint64_t(rec->io_read_bps), uint64_t(rec->io_write_bps), uint64_t(rec->io_read_iops),
                                  uint64_t(rec->io_write_iops)}),
            kDefaultIoThrottle)
      << "the migration's literals must be the built-in defaults";
}
