#include "store/wal_checkpointer.h"

#include <chrono>
#include <utility>

#include "base/log.h"

namespace moat::store_detail {

WalCheckpointer::WalCheckpointer(sqlite3* writer, std::filesystem::path path)
    : writer_(writer), path_(std::move(path)) {
  thread_ = std::thread([this] { run(); });
  sqlite3_wal_hook(writer_, &WalCheckpointer::on_commit, this);  // also turns the automatic checkpoint off
}

WalCheckpointer::~WalCheckpointer() {
  sqlite3_wal_autocheckpoint(writer_, kPassivePages);  // replaces our hook
  {
    std::lock_guard g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (own_) sqlite3_close_v2(own_);
}

// Called by SQLite after each commit of the writer, with the write lock released: wakes the thread,
// so the commit returns at once, unless the log is so far behind that the writer must wait.
int WalCheckpointer::on_commit(void* self, sqlite3*, const char*, int log_pages) {
  if (log_pages < kPassivePages) return SQLITE_OK;
  auto* c = static_cast<WalCheckpointer*>(self);
  std::unique_lock l(c->mu_);
  c->log_pages_ = log_pages;
  c->cv_.notify_all();
  if (log_pages < kWriterWaitsPages || std::chrono::steady_clock::now() < c->reader_pins_until_) return SQLITE_OK;
  // A restart checkpoint needs a moment with no writer, which a writer that never pauses (it takes
  // the lock again between the checkpoint's polls) would never give it: wait here for its next try.
  uint64_t seen = c->restart_tries_;
  ++c->writers_waiting_;
  c->cv_.wait_for(l, std::chrono::seconds(10), [&] { return c->restart_tries_ != seen || c->stopping_; });
  --c->writers_waiting_;
  return SQLITE_OK;
}

void WalCheckpointer::run() {
  std::unique_lock l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return log_pages_ > 0 || stopping_; });
    if (stopping_) return;
    int pages = std::exchange(log_pages_, 0);
    l.unlock();
    Outcome out = checkpoint(pages);
    l.lock();
    if (out.restart_tried) {
      ++restart_tries_;
      if (out.ok) {
        reader_pins_until_ = {};
      } else if (writers_waiting_ > 0) {
        // It failed with the writer held back, so a reader (an audit export, say) pins the log:
        // waiting would only stall writes. Let them go on, and look again in a minute.
        reader_pins_until_ = std::chrono::steady_clock::now() + std::chrono::minutes(1);
        log::warn("store: a reader keeps the log of {} from restarting; it grows until the reader is done",
                  path_.string());
      }
      cv_.notify_all();
    }
    // After a failure, wait a moment rather than retrying at every commit.
    if (!out.ok) cv_.wait_for(l, std::chrono::seconds(1), [&] { return stopping_; });
  }
}

WalCheckpointer::Outcome WalCheckpointer::checkpoint(int log_pages) {
  if (!own_) {
    int rc = sqlite3_open_v2(path_.c_str(), &own_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                             nullptr);
    if (rc != SQLITE_OK) {
      log::warn("store: cannot open {} to checkpoint its log: {}; retrying", path_.string(),
                own_ ? sqlite3_errmsg(own_) : sqlite3_errstr(rc));
      sqlite3_close_v2(own_);
      own_ = nullptr;
      return {};
    }
    // A restart checkpoint holds writers back while it waits for a writer to finish or for readers to
    // leave the log; it gives up well inside a writer's own 5 s busy timeout, so that a restart that
    // cannot finish (a reader pins the log) delays writes but never fails one.
    sqlite3_busy_timeout(own_, 1000);
    // A connection learns that the store is in WAL mode only by reading it; until then a checkpoint
    // does nothing.
    if (sqlite3_exec(own_, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr) != SQLITE_OK) {
      log::warn("store: cannot read {} to checkpoint its log: {}; retrying", path_.string(), sqlite3_errmsg(own_));
      sqlite3_close_v2(own_);
      own_ = nullptr;
      return {};
    }
  }
  Outcome out;
  int copied = 0, rc = SQLITE_OK;
  if (log_pages < kRestartPages)
    rc = sqlite3_wal_checkpoint_v2(own_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
  if (rc == SQLITE_OK && log_pages >= kRestartPages) {
    out.restart_tried = true;
    rc = sqlite3_wal_checkpoint_v2(own_, nullptr, SQLITE_CHECKPOINT_RESTART, &log_pages, &copied);
  }
  out.ok = rc == SQLITE_OK;
  // BUSY: a writer or reader held on past the busy timeout; tried again at a later commit.
  if (rc != SQLITE_OK && rc != SQLITE_BUSY)
    log::warn("store: checkpointing the log of {} failed: {}", path_.string(), sqlite3_errmsg(own_));
  return out;
}

}  // namespace moat::store_detail
