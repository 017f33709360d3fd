#include "store/database.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "base/unique_fd.h"
#include "store/migrations.h"
#include "store/wal_checkpointer.h"

namespace moat {

namespace store_detail {
Connection::~Connection() {
  checkpointer.reset();  // its thread uses the store; the close below checkpoints what is left
  // close_v2 defers the close until every statement is finalized, so order of destruction is free.
  if (db) sqlite3_close_v2(db);
}
}  // namespace store_detail

namespace {

std::string shorten_sql(std::string_view sql) {
  std::string out;
  for (char c : sql) {
    if (c == '\n' || c == '\t') c = ' ';
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(c);
    if (out.size() >= 60) {
      out += "...";
      break;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

Error sqlite_error(sqlite3* db, int rc, std::string_view operation) {
  const char* msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int primary = rc & 0xff;
  int sys = db ? sqlite3_system_errno(db) : 0;
  if (primary == SQLITE_FULL || (primary == SQLITE_IOERR && (sys == ENOSPC || sys == EDQUOT))) {
    return Error{ErrorKind::ResourceLimit,
                 fmt::format("{} failed: the state directory's disk is full ({}); free some space and retry",
                             operation, msg)};
  }
  if (primary == SQLITE_IOERR) {
    return Error{ErrorKind::ResourceLimit,
                 fmt::format("{} failed: disk I/O error in the state directory ({}{}); check that its disk is not "
                             "full or failing",
                             operation, msg, sys ? fmt::format(": {}", strerror(sys)) : std::string())};
  }
  ErrorKind kind = ErrorKind::Internal;
  switch (primary) {
    case SQLITE_CONSTRAINT: kind = ErrorKind::Conflict; break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY: kind = ErrorKind::Unavailable; break;
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH: kind = ErrorKind::InvalidInput; break;
    default: break;
  }
  return Error{kind, fmt::format("{} failed: {}", operation, msg)};
}

// ---------------------------------------------------------------- Statement

Statement::Statement(std::shared_ptr<store_detail::Connection> conn, sqlite3_stmt* stmt)
    : conn_(std::move(conn)), stmt_(stmt) {}

Statement::Statement(Statement&& o) noexcept
    : conn_(std::move(o.conn_)), stmt_(std::exchange(o.stmt_, nullptr)), bind_rc_(o.bind_rc_), bind_idx_(o.bind_idx_) {}

Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    if (stmt_) sqlite3_finalize(stmt_);
    conn_ = std::move(o.conn_);
    stmt_ = std::exchange(o.stmt_, nullptr);
    bind_rc_ = o.bind_rc_;
    bind_idx_ = o.bind_idx_;
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Statement& Statement::note_bind(int rc, int idx) {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) {
    bind_rc_ = rc;
    bind_idx_ = idx;
  }
  return *this;
}

Statement& Statement::bind_int64(int idx, int64_t value) { return note_bind(sqlite3_bind_int64(stmt_, idx, value), idx); }
Statement& Statement::bind(int idx, double value) { return note_bind(sqlite3_bind_double(stmt_, idx, value), idx); }
Statement& Statement::bind(int idx, std::nullptr_t) { return note_bind(sqlite3_bind_null(stmt_, idx), idx); }
Statement& Statement::bind(int idx, std::string_view value) {
  return note_bind(sqlite3_bind_text64(stmt_, idx, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8), idx);
}

std::string Statement::describe() const { return shorten_sql(sqlite3_sql(stmt_) ? sqlite3_sql(stmt_) : ""); }

Result<bool> Statement::step() {
  if (bind_rc_ != SQLITE_OK) {
    return fail(bind_rc_ == SQLITE_TOOBIG ? ErrorKind::InvalidInput : ErrorKind::Internal,
                "binding parameter {} of '{}' failed: {}", bind_idx_, describe(), sqlite3_errstr(bind_rc_));
  }
  std::lock_guard g(conn_->mu);
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return std::unexpected(sqlite_error(conn_->db, rc, fmt::format("'{}'", describe())));
}

void Statement::reset() {
  std::lock_guard g(conn_->mu);
  sqlite3_reset(stmt_);
  bind_rc_ = SQLITE_OK;
  bind_idx_ = 0;
}

std::string_view Statement::column_text(int col) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (!p) return {};
  return std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

// ---------------------------------------------------------------- Database

Result<Database> Database::open_connection(const std::filesystem::path& path, int flags) {
  auto conn = std::make_shared<store_detail::Connection>();
  conn->path = path;
  int rc = sqlite3_open_v2(path.c_str(), &conn->db, flags | SQLITE_OPEN_NOFOLLOW, nullptr);
  if (rc != SQLITE_OK) {
    auto e = sqlite_error(conn->db, rc, fmt::format("opening the store {}", path.string()));
    return std::unexpected(e);
  }
  sqlite3_extended_result_codes(conn->db, 1);
  sqlite3_busy_timeout(conn->db, 5000);
  return Database(std::move(conn));
}

Result<Database> Database::open(const std::filesystem::path& path) {
  // Create the file ourselves so it starts life 0600 (SQLite would use 0644 less umask); SQLite gives
  // the -wal and -shm files the same mode as the database file.
  {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) {
      int err = errno;
      return fail(err == ENOSPC || err == EDQUOT ? ErrorKind::ResourceLimit : ErrorKind::Unavailable,
                  "cannot open the store {}: {}", path.string(), strerror(err));
    }
  }
  auto db = open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX);
  if (!db) return db;

  auto mode = db->query_text("PRAGMA journal_mode=WAL");
  if (!mode) {
    if (mode.error().message.find("not a database") != std::string::npos)
      return fail(ErrorKind::InvalidInput, "{} is not a moat store (SQLite says: file is not a database)",
                  path.string());
    return wrap(mode.error(), fmt::format("configuring the store {}", path.string()));
  }
  if (*mode != "wal") {
    return fail(ErrorKind::Unavailable,
                "the store {} cannot use write-ahead logging (journal mode stayed '{}'); put the state directory "
                "on a local file system",
                path.string(), *mode);
  }
  if (auto s = db->exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"); !s)
    return wrap(s.error(), fmt::format("configuring the store {}", path.string()));
  if (auto s = apply_migrations(*db, builtin_migrations()); !s) return std::unexpected(s.error());
  db->conn_->checkpointer = std::make_unique<store_detail::WalCheckpointer>(db->conn_->db, path);
  return db;
}

Result<Database> Database::open_reader(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    return fail(ErrorKind::NotFound, "no store at {}; has moatd been started with this state directory?",
                path.string());
  // Read-write without CREATE plus query_only, rather than SQLITE_OPEN_READONLY: a read-only
  // connection cannot create the WAL index (-shm) when no writer has the store open.
  // NOMUTEX: a reader belongs to one thread (see database.h), which spares a SQLite mutex round
  // trip on every column read of a million-record scan. Memory-mapped reads avoid a pread copy per page.
  auto db = open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
  if (!db) return db;
  if (auto s = db->exec("PRAGMA query_only=1; PRAGMA mmap_size=1073741824;"); !s) return std::unexpected(s.error());
  return db;
}

Status Database::sync_wal() {
  auto& f = conn_->wal_flush;
  std::unique_lock l(f.mu);
  // A flush already running may have begun before our commit: we need one that begins after now.
  const uint64_t need = f.started + 1;
  while (f.finished < need) {
    if (f.running) {
      f.done.wait(l);
      continue;
    }
    const uint64_t id = ++f.started;
    f.running = true;
    l.unlock();
    Status s = flush_wal(f.fd);
    l.lock();
    f.running = false;
    f.finished = id;
    if (!s) {
      f.failed = id;
      f.error = s.error();
    }
    f.done.notify_all();
  }
  // Flush `need` covered us; a later one failing says the log may have lost what we wrote too.
  if (f.failed >= need) return std::unexpected(f.error);
  return {};
}

Status Database::flush_wal(UniqueFd& fd) {
  std::filesystem::path wal = conn_->path;
  wal += "-wal";
  // Reopen if the log was never opened or is no longer the file at that name: flushing a stale inode
  // would report success for writes that went elsewhere.
  struct stat now {}, held {};
  bool same = fd && ::stat(wal.c_str(), &now) == 0 && ::fstat(fd.get(), &held) == 0 && now.st_dev == held.st_dev &&
              now.st_ino == held.st_ino;
  if (!same) {
    fd = UniqueFd(::open(wal.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd)
      return fail(ErrorKind::ResourceLimit, "cannot open the store's write-ahead log {} to flush it: {}", wal.string(),
                  strerror(errno));
  }
  if (::fdatasync(fd.get()) != 0)
    return fail(ErrorKind::ResourceLimit,
                "flushing the store's write-ahead log {} to disk failed: {}; check that its disk is not full or failing",
                wal.string(), strerror(errno));
  return {};
}

Status Database::exec(std::string_view sql) {
  std::string text(sql);
  auto l = lock();
  int rc = sqlite3_exec(conn_->db, text.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return std::unexpected(sqlite_error(conn_->db, rc, fmt::format("'{}'", shorten_sql(sql))));
  return {};
}

Result<Statement> Database::prepare(std::string_view sql) {
  auto l = lock();
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(conn_->db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                              nullptr);
  if (rc != SQLITE_OK) {
    if (stmt) sqlite3_finalize(stmt);
    return std::unexpected(sqlite_error(conn_->db, rc, fmt::format("preparing '{}'", shorten_sql(sql))));
  }
  if (!stmt) return fail(ErrorKind::Internal, "preparing '{}': no statement in the text", shorten_sql(sql));
  return Statement(conn_, stmt);
}

Result<int64_t> Database::query_int64(std::string_view sql) {
  auto l = lock();
  auto st = prepare(sql);
  if (!st) return std::unexpected(st.error());
  auto row = st->step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return fail(ErrorKind::Internal, "'{}' returned no row", shorten_sql(sql));
  return st->column_int64(0);
}

Result<std::string> Database::query_text(std::string_view sql) {
  auto l = lock();
  auto st = prepare(sql);
  if (!st) return std::unexpected(st.error());
  auto row = st->step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return fail(ErrorKind::Internal, "'{}' returned no row", shorten_sql(sql));
  return std::string(st->column_text(0));
}

// ---------------------------------------------------------------- Transaction

Result<Transaction> Transaction::begin(Database& db, Durability durability) {
  auto lock = db.lock();
  if (sqlite3_get_autocommit(db.handle()) == 0)
    return fail(ErrorKind::Internal, "a transaction is already open on the store {} (transactions do not nest)",
                db.path().string());
  if (durability == Durability::OnSync) {
    if (auto s = db.exec("PRAGMA synchronous=NORMAL"); !s) return std::unexpected(s.error());
  }
  Transaction tx(db, std::move(lock), durability);  // from here on, the destructor restores FULL
  if (auto s = db.exec("BEGIN IMMEDIATE"); !s) return std::unexpected(s.error());
  return tx;
}

Transaction::Transaction(Transaction&& o) noexcept
    : db_(o.db_), lock_(std::move(o.lock_)), durability_(o.durability_), open_(std::exchange(o.open_, false)) {
  o.durability_ = Durability::OnCommit;  // the moved-from shell restores nothing
}

Status Transaction::restore_full_sync() {
  if (durability_ != Durability::OnSync) return {};
  durability_ = Durability::OnCommit;
  return db_->exec("PRAGMA synchronous=FULL");
}

Status Transaction::commit() {
  if (!open_) return fail(ErrorKind::Internal, "commit of a transaction that is no longer open");
  if (auto s = db_->exec("COMMIT"); !s) return s;  // still open: the destructor rolls back
  open_ = false;
  // Every other writer relies on FULL; failing to restore it must not pass silently.
  Status restored = restore_full_sync();
  lock_ = {};
  if (!restored) return wrap(restored.error(), "restoring synchronous=FULL after a group commit");
  return {};
}

Transaction::~Transaction() {
  if (open_ && sqlite3_get_autocommit(db_->handle()) == 0) (void)db_->exec("ROLLBACK");
  if (auto s = restore_full_sync(); !s)
    log::error("store: cannot restore synchronous=FULL on {}: {}", db_->path().string(), s.error().message);
}

}  // namespace moat
