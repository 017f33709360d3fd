#pragma once
// Checkpoints the store's write-ahead log on a thread and a connection of its own. SQLite's automatic
// checkpoint runs inside whichever commit pushes the log past 1,000 pages: that commit then copies
// thousands of pages into the database file and fsyncs it, which is the slowest commit by far and
// the tail of every durable write (a router group commit, an audit append). Here the writer's commit
// only wakes this thread. A passive checkpoint does not hold writers back; if sustained writing still
// grows the log past kRestartPages, a restart checkpoint (which makes writers wait while it finishes)
// brings it back. A writer faster than this thread can copy (the disk's full speed) would still
// outrun it (and starve the restart, which must find a moment with no writer), so past
// kWriterWaitsPages the writer's commit waits for the next restart: back pressure, which keeps the
// log's size on disk bounded. Only a reader holding an old snapshot can still pin the log; then
// writers stop waiting for a minute at a time rather than stall behind it.
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <thread>

namespace moat::store_detail {

class WalCheckpointer {
 public:
  static constexpr int kPassivePages = 1000;  // SQLite's own automatic checkpoint threshold
  static constexpr int kRestartPages = 16384;  // 64 MiB of log with 4 KiB pages
  static constexpr int kWriterWaitsPages = 2 * kRestartPages;

  // Takes over checkpointing from `writer` (replacing its automatic checkpoint with a hook that
  // wakes this thread) for the store at `path`.
  WalCheckpointer(sqlite3* writer, std::filesystem::path path);
  // Stops the thread and gives `writer` its automatic checkpoint back; `writer` must outlive this.
  ~WalCheckpointer();
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

 private:
  struct Outcome {
    bool ok = false;             // false on an error (logged unless it was a busy timeout)
    bool restart_tried = false;  // a restart checkpoint was tried
  };
  static int on_commit(void* self, sqlite3*, const char*, int log_pages);
  void run();
  Outcome checkpoint(int log_pages);

  sqlite3* writer_;
  std::filesystem::path path_;
  sqlite3* own_ = nullptr;  // this thread's connection, opened on first use
  std::mutex mu_;
  std::condition_variable cv_;
  int log_pages_ = 0;          // as the last commit left it; 0 when no checkpoint is wanted
  uint64_t restart_tries_ = 0;  // what a waiting writer watches
  int writers_waiting_ = 0;
  std::chrono::steady_clock::time_point reader_pins_until_{};  // writers do not wait before then
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace moat::store_detail
