#pragma once
// moat's SQLite store: one file in the state directory, WAL mode, synchronous=FULL so that whatever
// moatd acknowledged is on disk (invariant 5).
//
// Threading. One Database from open() (one connection, opened SQLITE_OPEN_FULLMUTEX) is shared by moatd's
// threads. SQLite's own mutex makes each call safe, but a transaction belongs to the connection, not
// to a thread: a statement run by thread B while thread A is between BEGIN and COMMIT would silently
// become part of A's transaction. So the rule is simple:
//   * every use of the connection happens while holding db.lock();
//   * exec(), prepare() and Statement::step()/reset() take that lock themselves, so a single
//     statement is always safe on its own;
//   * a Transaction holds the lock from BEGIN until commit/rollback;
//   * a sequence of statements that must not interleave with other threads (read-then-write,
//     changes() after an UPDATE) holds `auto l = db.lock();` around the whole sequence.
// The lock is a std::recursive_mutex, so a repository method that holds it may begin a Transaction
// or call another method that locks again. Long read-only scans (audit verify/export) should use
// open_reader() to get their own connection and leave the shared one free.
#include <sqlite3.h>

#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"

namespace moat {

namespace store_detail {
class WalCheckpointer;
// The connection and its lock live on the heap so that a Database can move while Statements
// (which share ownership) stay valid; the connection closes when the last of them goes.
struct Connection {
  sqlite3* db = nullptr;
  std::recursive_mutex mu;
  std::filesystem::path path;
  // sync_wal()'s state: one flush at a time, shared by every caller that arrived before it began.
  struct WalFlush {
    std::mutex mu;
    std::condition_variable done;
    UniqueFd fd;  // our descriptor of the write-ahead log; used by the running flush only
    uint64_t started = 0, finished = 0, failed = 0;  // flush numbers
    bool running = false;
    Error error;  // why flush `failed` failed
  } wal_flush;
  std::unique_ptr<WalCheckpointer> checkpointer;  // a writer's only (see wal_checkpointer.h)
  ~Connection();
};
}  // namespace store_detail

// Turns a SQLite failure into an Error that names the operation and quotes SQLite's message. A full
// disk (SQLITE_FULL, or an I/O error with ENOSPC/EDQUOT) becomes ResourceLimit saying so; other disk
// I/O errors are ResourceLimit too, since a failing state-directory disk is what the operator must fix.
Error sqlite_error(sqlite3* db, int rc, std::string_view operation);

class Statement {
 public:
  Statement(Statement&&) noexcept;
  Statement& operator=(Statement&&) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite. Text is copied. A bind failure (bad index, too big) is
  // remembered and returned by the next step(), so binds can be chained without checks.
  template <std::integral T>
  Statement& bind(int idx, T value) { return bind_int64(idx, static_cast<int64_t>(value)); }
  Statement& bind(int idx, double value);
  Statement& bind(int idx, std::string_view value);
  Statement& bind(int idx, const char* value) { return bind(idx, std::string_view(value)); }
  Statement& bind(int idx, std::nullptr_t);

  // true = a row is available; false = done.
  Result<bool> step();
  // Ready to step again from the start; bindings are kept (rebind what changes).
  void reset();

  // Columns are 0-based. column_text's view is valid until the next step()/reset().
  int64_t column_int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  double column_double(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string_view column_text(int col) const;
  bool column_is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

  sqlite3_stmt* handle() const { return stmt_; }

 private:
  friend class Database;
  Statement(std::shared_ptr<store_detail::Connection> conn, sqlite3_stmt* stmt);
  Statement& bind_int64(int idx, int64_t value);
  Statement& note_bind(int rc, int idx);
  std::string describe() const;  // the statement's SQL, shortened, for error messages

  std::shared_ptr<store_detail::Connection> conn_;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_rc_ = SQLITE_OK;
  int bind_idx_ = 0;
};

class Database {
 public:
  using Lock = std::unique_lock<std::recursive_mutex>;

  // Opens (creating with mode 0600 if absent) the store at `path`, configures WAL, synchronous=FULL,
  // foreign keys and a 5 s busy timeout, applies pending migrations (see migrations.h) and hands
  // checkpointing to a thread of its own (see wal_checkpointer.h).
  static Result<Database> open(const std::filesystem::path& path);
  // A second, read-only connection to an existing store (no migrations), for long scans that must
  // not hold the shared connection's lock; statements run between exec("BEGIN") and exec("COMMIT")
  // see one snapshot. A reader belongs to one thread at a time (it is opened without SQLite's mutex).
  static Result<Database> open_reader(const std::filesystem::path& path);
  Result<Database> open_reader() const { return open_reader(path()); }

  Database(Database&&) noexcept = default;
  Database& operator=(Database&&) noexcept = default;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database() = default;

  [[nodiscard]] Lock lock() { return Lock(conn_->mu); }

  // Runs one or more statements that return no rows.
  Status exec(std::string_view sql);
  Result<Statement> prepare(std::string_view sql);
  // A single integer from a query such as "PRAGMA user_version" or "SELECT count(*) ...".
  Result<int64_t> query_int64(std::string_view sql);
  // A single text value (e.g. "PRAGMA journal_mode").
  Result<std::string> query_text(std::string_view sql);

  // Rows changed by the last INSERT/UPDATE/DELETE on this connection (hold lock() across both).
  // Makes every transaction committed so far durable (fdatasync of the write-ahead log). Needed only
  // after a Transaction begun with Durability::OnSync; everything else commits with synchronous=FULL.
  // Takes no database lock: other transactions are written while the disk flushes, which is what lets
  // a group commit write the next batch during this one's flush. Callers share flushes: one runs at a
  // time, and whoever arrives meanwhile waits for the next, which covers all of them.
  Status sync_wal();

  int64_t changes() const { return sqlite3_changes64(conn_->db); }
  int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(conn_->db); }
  const std::filesystem::path& path() const { return conn_->path; }
  sqlite3* handle() const { return conn_->db; }

 private:
  explicit Database(std::shared_ptr<store_detail::Connection> conn) : conn_(std::move(conn)) {}
  static Result<Database> open_connection(const std::filesystem::path& path, int flags);
  Status flush_wal(UniqueFd& fd);  // one fdatasync of the log, reopening `fd` if the log was replaced
  std::shared_ptr<store_detail::Connection> conn_;
};

enum class Durability {
  OnCommit,  // commit() returns once the transaction is on disk (synchronous=FULL)
  // commit() returns once the transaction is in the write-ahead log (synchronous=NORMAL for this
  // transaction only); it is durable when a later Database::sync_wal() returns, and nothing it wrote
  // may be acknowledged before then. A crash before that loses it together with every later
  // transaction: the log is replayed in order, up to the first frame that is not on disk.
  OnSync,
};

// BEGIN IMMEDIATE ... COMMIT, holding the database lock throughout; rolls back when dropped
// uncommitted. Not nestable: do not begin a Transaction while one is open on the same Database.
class Transaction {
 public:
  static Result<Transaction> begin(Database& db, Durability durability = Durability::OnCommit);
  Transaction(Transaction&&) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  Status commit();

 private:
  Transaction(Database& db, Database::Lock lock, Durability d) : db_(&db), lock_(std::move(lock)), durability_(d) {}
  Status restore_full_sync();  // back to synchronous=FULL after an OnSync transaction ends
  Database* db_;
  Database::Lock lock_;
  Durability durability_;
  bool open_ = true;
};

}  // namespace moat
