#pragma once
// Makes signed checkpoints of the audit chain (audit/checkpoint.h) as it grows: when `every_records`
// records were appended since the last checkpoint, when `interval` passed and the chain moved, and at
// stop() (moatd's clean stop). Each checkpoint is appended to the sink file first (one JSON line,
// O_APPEND, fsync'ed: the copy an outsider keeps), then kept in the store's audit_checkpoints table
// (what `moat audit export` includes; stored even when the sink failed). A head that did not move since the last checkpoint is
// not signed again.
//
// The sink is opened for each checkpoint (O_WRONLY|O_APPEND|O_CREAT, 0600 when created, no symlink
// followed), so a log rotator may move it at any time. moatd only ever appends to it; keeping it
// append-only against everyone else (chattr +a, a file on another host, a log shipper that tails it)
// is the operator's part: see docs/security.md, "Signed audit checkpoints".
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "audit/audit_log.h"
#include "audit/checkpoint.h"
#include "base/result.h"
#include "store/database.h"

namespace moat {

struct CheckpointerOptions {
  int64_t every_records = 1000;
  std::chrono::milliseconds interval{60'000};
  std::filesystem::path sink_file;  // empty: checkpoints are kept in the store only
};

class Checkpointer {
 public:
  using Clock = std::function<int64_t()>;  // nanoseconds since the Unix epoch

  // `log` must be the store's one AuditLog; `clock` defaults to the system clock.
  Checkpointer(Database& db, AuditLog& log, CheckpointKey key, CheckpointerOptions options, Clock clock = {});
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Checks the sink can be appended to (creating it when absent) and starts the thread. An error
  // names the sink and what to do.
  Status start();
  // Signs the chain's head now if it moved since the last checkpoint, ships and stores it. nullopt
  // when there was nothing new to sign. A sink that cannot be written is an error after the
  // checkpoint was stored (the next checkpoint, which covers this one, tries the sink again).
  Result<std::optional<Checkpoint>> checkpoint_now();
  // Stops the thread and makes the last checkpoint. Idempotent.
  Status stop();

  const std::string& public_key() const { return key_.public_key_hex(); }
  const std::filesystem::path& sink() const { return options_.sink_file; }

 private:
  void run();
  Status ship(const Checkpoint& cp);

  Database& db_;
  AuditLog& log_;
  CheckpointKey key_;
  CheckpointerOptions options_;
  Clock clock_;

  std::mutex sign_mu_;  // one checkpoint at a time
  std::atomic<int64_t> signed_seq_{0};   // the seq of the newest checkpoint
  std::atomic<int64_t> latest_seq_{0};   // the log's last seq, as the tail watcher saw it

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
};

}  // namespace moat
