#include "store/database.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>
#include <vector>

#include "store/migrations.h"
#include "support/raw_sqlite.h"
#include "support/temp_dir.h"

using namespace moat;
using moat::testing::TempDir;

namespace {

using moat::testing::raw_exec;

// A second connection that bypasses moat's code, as an operator (or attacker) with sqlite3 would.
}  // namespace

TEST(StoreDatabase, OpenCreatesPrivateWalStoreAtLatestSchema) {
  TempDir dir("moat-store-db");
  auto path = dir / "moat.db";
  auto db = Database::open(path);
  ASSERT_TRUE(db) << db.error().message;
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(*db->query_text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(*db->query_int64("PRAGMA synchronous"), 2);  // FULL
  EXPECT_EQ(*db->query_int64("PRAGMA foreign_keys"), 1);
  EXPECT_EQ(*db->query_int64("PRAGMA user_version"), latest_schema_version());
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM sqlite_schema WHERE name IN ('sandboxes', 'audit')"), 2);
}

TEST(StoreDatabase, ReopenIsIdempotent) {
  TempDir dir("moat-store-db");
  auto path = dir / "moat.db";
  {
    auto db = Database::open(path);
    ASSERT_TRUE(db) << db.error().message;
    ASSERT_TRUE(db->exec("INSERT INTO audit VALUES (1, 1, 'k', 'a', 's', '{}', 'p', 'h')"));
  }
  for (int i = 0; i < 3; ++i) {
    auto db = Database::open(path);
    ASSERT_TRUE(db) << db.error().message;
    EXPECT_EQ(*db->query_int64("PRAGMA user_version"), latest_schema_version());
    EXPECT_EQ(*db->query_int64("SELECT count(*) FROM audit"), 1);
  }
}

TEST(StoreDatabase, MigrationsApplyOnceInOrder) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db) << db.error().message;
  // The built-in list (already applied: skipped, so a changed body would never run) plus two new ones.
  int64_t next = latest_schema_version() + 1;
  std::vector<Migration> extra;
  for (const auto& m : builtin_migrations()) extra.push_back({m.version, m.name, "CREATE TABLE IF NOT EXISTS never_run (x)"});
  extra.push_back({next, "c", "CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (1);"});
  extra.push_back({next + 1, "d", "UPDATE counter SET n = n + 1;"});
  ASSERT_TRUE(apply_migrations(*db, extra));
  ASSERT_TRUE(apply_migrations(*db, extra));
  EXPECT_EQ(*db->query_int64("PRAGMA user_version"), next + 1);
  EXPECT_EQ(*db->query_int64("SELECT n FROM counter"), 2);
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM sqlite_schema WHERE name = 'never_run'"), 0);
}

TEST(StoreDatabase, FailedMigrationLeavesPreviousVersion) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db) << db.error().message;
  std::vector<Migration> list(builtin_migrations().begin(), builtin_migrations().end());
  int64_t next = latest_schema_version() + 1;
  list.push_back({next, "broken", "CREATE TABLE half (x); THIS IS NOT SQL;"});
  auto s = apply_migrations(*db, list);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find(fmt::format("schema {} (broken)", next)), std::string::npos) << s.error().message;
  EXPECT_EQ(*db->query_int64("PRAGMA user_version"), latest_schema_version());
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM sqlite_schema WHERE name = 'half'"), 0);
}

TEST(StoreDatabase, OutOfOrderMigrationListIsABug) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  const Migration bad[] = {{1, "a", "SELECT 1"}, {3, "c", "SELECT 1"}};
  auto s = apply_migrations(*db, bad);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().kind, ErrorKind::Internal);
}

TEST(StoreDatabase, RefusesStoreFromNewerMoat) {
  TempDir dir("moat-store-db");
  auto path = dir / "moat.db";
  ASSERT_TRUE(Database::open(path));
  raw_exec(path, "PRAGMA user_version = 99");
  auto db = Database::open(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().kind, ErrorKind::Conflict);
  EXPECT_NE(db.error().message.find(fmt::format(
                "the state directory was written by a newer moat (schema 99, this build knows {})",
                latest_schema_version())),
            std::string::npos)
      << db.error().message;
}

TEST(StoreDatabase, RefusesAFileThatIsNotADatabase) {
  TempDir dir("moat-store-db");
  auto path = dir / "moat.db";
  std::ofstream(path) << std::string(4096, 'x');
  auto db = Database::open(path);
  ASSERT_FALSE(db);
  EXPECT_NE(db.error().message.find("is not a moat store"), std::string::npos) << db.error().message;
}

TEST(StoreDatabase, MissingDirectoryIsUnavailable) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "no" / "such" / "moat.db");
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(db.error().message.find("moat.db"), std::string::npos);
}

TEST(StoreDatabase, StatementsBindStepAndReadColumns) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (i INTEGER, d REAL, s TEXT, n TEXT)"));
  auto ins = db->prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4)");
  ASSERT_TRUE(ins) << ins.error().message;
  for (int i = 0; i < 3; ++i) {
    ins->reset();
    ins->bind(1, i).bind(2, i * 1.5).bind(3, std::string("row\0") + std::to_string(i)).bind(4, nullptr);
    auto r = ins->step();
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_FALSE(*r);
  }
  auto sel = db->prepare("SELECT i, d, s, n FROM t ORDER BY i");
  ASSERT_TRUE(sel);
  int n = 0;
  while (true) {
    auto r = sel->step();
    ASSERT_TRUE(r);
    if (!*r) break;
    EXPECT_EQ(sel->column_int64(0), n);
    EXPECT_DOUBLE_EQ(sel->column_double(1), n * 1.5);
    EXPECT_EQ(sel->column_text(2), "row" + std::to_string(n));
    EXPECT_TRUE(sel->column_is_null(3));
    EXPECT_FALSE(sel->column_is_null(0));
    ++n;
  }
  EXPECT_EQ(n, 3);

  auto bad_bind = db->prepare("SELECT ?1");
  ASSERT_TRUE(bad_bind);
  bad_bind->bind(5, 1);
  auto r = bad_bind->step();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("binding parameter 5"), std::string::npos) << r.error().message;
}

TEST(StoreDatabase, ErrorsNameTheOperationAndSqlitesMessage) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  auto st = db->prepare("SELECT * FROM no_such_table");
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("preparing 'SELECT * FROM no_such_table'"), std::string::npos);
  EXPECT_NE(st.error().message.find("no such table"), std::string::npos) << st.error().message;

  auto full = sqlite_error(nullptr, SQLITE_FULL, "appending to the audit log");
  EXPECT_EQ(full.kind, ErrorKind::ResourceLimit);
  EXPECT_NE(full.message.find("the state directory's disk is full"), std::string::npos) << full.message;
  EXPECT_EQ(sqlite_error(nullptr, SQLITE_IOERR_WRITE, "x").kind, ErrorKind::ResourceLimit);
  EXPECT_EQ(sqlite_error(nullptr, SQLITE_CONSTRAINT_UNIQUE, "x").kind, ErrorKind::Conflict);
}

TEST(StoreDatabase, TransactionCommitsOrRollsBack) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (x)"));
  {
    auto tx = Transaction::begin(*db);
    ASSERT_TRUE(tx) << tx.error().message;
    ASSERT_TRUE(db->exec("INSERT INTO t VALUES (1)"));
    // dropped without commit
  }
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM t"), 0);
  {
    auto tx = Transaction::begin(*db);
    ASSERT_TRUE(tx);
    auto nested = Transaction::begin(*db);
    EXPECT_FALSE(nested);
    ASSERT_TRUE(db->exec("INSERT INTO t VALUES (2)"));
    ASSERT_TRUE(tx->commit());
    EXPECT_FALSE(tx->commit());
  }
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM t"), 1);
  // A separate reader sees committed data.
  auto reader = db->open_reader();
  ASSERT_TRUE(reader) << reader.error().message;
  EXPECT_EQ(*reader->query_int64("SELECT x FROM t"), 2);
  EXPECT_FALSE(reader->exec("INSERT INTO t VALUES (3)"));
}

TEST(StoreDatabase, TransactionsFromManyThreadsDoNotInterleave) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (0);"));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto tx = Transaction::begin(*db);
        if (!tx) { ++failures; continue; }
        auto n = db->query_int64("SELECT n FROM counter");  // read-modify-write: lost updates if interleaved
        if (!n || !db->exec(fmt::format("UPDATE counter SET n = {}", *n + 1)) || !tx->commit()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*db->query_int64("SELECT n FROM counter"), 200);
}

TEST(StoreDatabase, DatabaseAndStatementsMove) {
  TempDir dir("moat-store-db");
  auto opened = Database::open(dir / "moat.db");
  ASSERT_TRUE(opened);
  Database db = std::move(*opened);
  auto st = db.prepare("SELECT 42");
  ASSERT_TRUE(st);
  Statement moved = std::move(*st);
  Database db2 = std::move(db);
  ASSERT_TRUE(moved.step().value());
  EXPECT_EQ(moved.column_int64(0), 42);
}

TEST(StoreDatabase, OnSyncTransactionLeavesTheConnectionAtFullSync) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (x)"));
  EXPECT_EQ(*db->query_int64("PRAGMA synchronous"), 2);  // FULL
  {
    auto tx = Transaction::begin(*db, Durability::OnSync);
    ASSERT_TRUE(tx) << tx.error().message;
    EXPECT_EQ(*db->query_int64("PRAGMA synchronous"), 1);  // NORMAL, for this transaction only
    ASSERT_TRUE(db->exec("INSERT INTO t VALUES (1)"));
    ASSERT_TRUE(tx->commit());
  }
  // Every other writer relies on FULL: committed, rolled back or moved, the connection is back at it.
  EXPECT_EQ(*db->query_int64("PRAGMA synchronous"), 2);
  {
    auto tx = Transaction::begin(*db, Durability::OnSync);
    ASSERT_TRUE(tx);
    auto moved = std::move(*tx);
    ASSERT_TRUE(db->exec("INSERT INTO t VALUES (2)"));
  }
  EXPECT_EQ(*db->query_int64("PRAGMA synchronous"), 2);
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM t"), 1);
  ASSERT_TRUE(db->sync_wal());
  // Flushing follows the log to whatever file now carries its name.
  std::filesystem::path wal = dir / "moat.db-wal";
  ASSERT_TRUE(std::filesystem::exists(wal));
  std::filesystem::rename(wal, dir / "elsewhere");
  EXPECT_FALSE(db->sync_wal());  // the log is gone: refused, never reported as flushed
  std::filesystem::rename(dir / "elsewhere", wal);
  EXPECT_TRUE(db->sync_wal());
}

TEST(StoreDatabase, TheLogIsCheckpointedWithoutTheWriterDoingIt) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (x BLOB)"));
  // SQLite reports 0 here once a hook other than its own automatic checkpoint is installed: the
  // writer's commits do not checkpoint.
  EXPECT_EQ(*db->query_int64("PRAGMA wal_autocheckpoint"), 0);
  auto main_size = [&] { return std::filesystem::file_size(dir / "moat.db"); };
  auto before = main_size();
  // About 1,500 pages of log in 100 commits: past the 1,000-page checkpoint threshold.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(db->exec("INSERT INTO t VALUES (zeroblob(60000))"));
  // The pages reach the database file through the checkpointer thread; nobody here asks for it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (main_size() < before + 4'000'000 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_GE(main_size(), before + 4'000'000);
}

TEST(StoreDatabase, SustainedWritingKeepsTheLogBounded) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (x BLOB)"));
  std::uintmax_t peak = 0;
  // 250 MiB back to back, as fast as the disk takes it: a passive checkpoint never catches up with a
  // writer that never pauses, and even the checkpointer's restart at 64 MiB of log falls behind; the
  // writer waiting at 128 MiB is what keeps the log from growing with everything written.
  for (int i = 0; i < 250; ++i) {
    ASSERT_TRUE(db->exec("INSERT INTO t VALUES (zeroblob(1048576))"));
    std::error_code ec;
    peak = std::max(peak, std::filesystem::file_size(dir / "moat.db-wal", ec));
  }
  EXPECT_LT(peak, 140u << 20) << "the log grew to " << (peak >> 20) << " MiB";
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM t"), 250);
}

TEST(StoreDatabase, AReaderPinningTheLogStallsWritersOnceNotForEveryCommit) {
  TempDir dir("moat-store-db");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (1);"));
  // A long scan (an audit export) holds an old snapshot: no checkpoint can restart the log under it.
  auto reader = db->open_reader();
  ASSERT_TRUE(reader);
  ASSERT_TRUE(reader->exec("BEGIN"));
  ASSERT_EQ(*reader->query_int64("SELECT count(*) FROM t"), 1);
  double slowest = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    auto t = std::chrono::steady_clock::now();
    ASSERT_TRUE(db->exec("INSERT INTO t VALUES (zeroblob(1048576))"));
    slowest = std::max(slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The writer waits for one restart try (the reader outlasts its busy timeout), then writes on; no
  // write fails while a restart that cannot finish holds writers back.
  EXPECT_LT(slowest, 9.0);
  EXPECT_LT(total, 30.0);
  ASSERT_TRUE(reader->exec("COMMIT"));
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM t"), 201);
}
