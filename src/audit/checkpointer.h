#pragma once
// Makes signed checkpoints of the audit chain (audit/checkpoint.h) as it grows: when `every_records`
// records were appended since the last checkpoint, when `interval` passed and the chain moved, and at
// stop() (moatd's clean stop). Each checkpoint is shipped to the sink first (audit/checkpoint_sink.h:
// a file or a syslog server, the copy an outsider keeps), then kept in the store's audit_checkpoints
// table (what `moat audit export` includes; stored even when the sink failed). A head that did not
// move since the last checkpoint is not signed again.
//
// A sink that fails does not hold anything up: checkpoints are made on this class's own thread, every
// connect and write is bounded by `sink_timeout`, and the store keeps each checkpoint whatever the
// sink did. After a failure the sink is tried again with the one backoff (net/backoff.h: sink_retry
// doubling up to sink_retry_cap), by the next checkpoint, which covers every record the unshipped
// one did, or, when the chain did not move, by shipping the unshipped newest checkpoint again.
//
// moatd only ever appends to the sink; keeping it append-only against everyone else (chattr +a, a
// file on another host, a syslog server) is the operator's part: see docs/security.md, "Signed
// audit checkpoints".
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
#include "audit/checkpoint_sink.h"
#include "base/result.h"
#include "store/database.h"

namespace moat {

struct CheckpointerOptions {
  int64_t every_records = 1000;
  std::chrono::milliseconds interval{60'000};
  AuditSink sink;                   // Kind::None: checkpoints are kept in the store only
  std::chrono::milliseconds sink_timeout{5'000};       // each connect or write to the sink
  std::chrono::milliseconds sink_retry{1'000};         // the first wait after the sink failed
  std::chrono::milliseconds sink_retry_cap{60'000};    // the longest
};

class Checkpointer {
 public:
  using Clock = std::function<int64_t()>;  // nanoseconds since the Unix epoch

  // `log` must be the store's one AuditLog; `clock` defaults to the system clock.
  Checkpointer(Database& db, AuditLog& log, CheckpointKey key, CheckpointerOptions options, Clock clock = {});
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Checks the sink can be shipped to (a file is created when absent; a syslog server must accept a
  // connection) and starts the thread. An error names the sink and what to do.
  Status start();
  // Signs the chain's head now if it moved since the last checkpoint, ships and stores it. nullopt
  // when there was nothing new to sign. A sink that cannot be shipped to (or is waiting out its
  // backoff) is an error after the checkpoint was stored (see above for the retry).
  Result<std::optional<Checkpoint>> checkpoint_now();
  // Stops the thread and makes the last checkpoint. Idempotent.
  Status stop();

  const std::string& public_key() const { return key_.public_key_hex(); }
  const AuditSink& sink() const { return options_.sink; }

 private:
  using Steady = std::chrono::steady_clock;
  void run();
  // Ships through the sink unless it is waiting out its backoff (`now` ignores that: the last
  // checkpoint at stop). Keeps the newest unshipped checkpoint in pending_. Called with sign_mu_ held.
  Status ship(const Checkpoint& cp, bool now = false);
  // Ships pending_ again when its retry is due. Takes sign_mu_.
  void retry_pending();
  // checkpoint_now(); `final` at stop: the sink is tried whatever its backoff, the last chance.
  Result<std::optional<Checkpoint>> make_checkpoint(bool final);

  Database& db_;
  AuditLog& log_;
  CheckpointKey key_;
  CheckpointerOptions options_;
  Clock clock_;

  std::unique_ptr<CheckpointSink> sink_;  // null: no sink

  std::mutex sign_mu_;  // one checkpoint at a time; guards the sink and the three below
  int sink_failures_ = 0;                // consecutive
  Steady::time_point sink_retry_at_{};   // no shipment before this while sink_failures_ > 0
  std::optional<Checkpoint> pending_;    // the newest checkpoint the sink did not get
  std::atomic<int64_t> retry_at_ns_{0};  // sink_retry_at_ for run()'s wait while pending_; 0: none
  std::atomic<int64_t> signed_seq_{0};   // the seq of the newest checkpoint
  std::atomic<int64_t> latest_seq_{0};   // the log's last seq, as the tail watcher saw it

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
};

}  // namespace moat
