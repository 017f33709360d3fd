#pragma once
// The audit log: append-only, hash-chained records in the store's `audit` table (schema in
// store/migrations.cpp, hash defined in audit/event.h).
//
// Appends are serialized by the log's own mutex and committed (synchronous=FULL) before append()
// returns, so an acknowledged event is on disk. A component that changes the store can instead stage
// its records inside its own transaction (stage(), then publish() after the commit), so the change
// and its record are durable together or not at all. Lock order: db.lock(), then the log's mutex. The last seq and hash are read from the table once,
// on first use, and kept in memory; use one AuditLog per store. If another writer appends behind our
// back, our next insert collides on seq and fails with Conflict, and the log re-reads the tail before
// the following append.
//
// Live subscribers are called after the commit, outside the database lock, in seq order, one event
// at a time, on the appending thread. A callback must be quick, must not use the store (its caller
// may hold db.lock() and another appender may wait on the delivery for it) and must not call
// append() on the same log (that is refused with an error rather than deadlocking); it may
// subscribe/unsubscribe.
// After unsubscribe(id) returns (outside a callback), that callback is not running and will not run.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "audit/event.h"
#include "base/result.h"
#include "store/database.h"

namespace moat {

class AuditLog {
 public:
  using Clock = std::function<int64_t()>;  // nanoseconds since the Unix epoch
  using Subscriber = std::function<void(const AuditEvent&)>;
  using SubscriberId = uint64_t;

  // `clock` defaults to the system clock; tests pass their own.
  explicit AuditLog(Database& db, Clock clock = {});
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one event; returns its seq once it is durable.
  Result<int64_t> append(std::string kind, std::string actor, std::string subject, Json data = Json::object());
  Result<int64_t> append(AuditEntry entry);
  // Appends many events in one transaction (all or none); returns the last seq (the current last seq
  // when `entries` is empty).
  Result<int64_t> append_batch(std::vector<AuditEntry> entries);

  // Records inserted into a caller's open transaction. Holds the log's append lock until published
  // or dropped, so keep it only until the transaction has committed or failed. Dropped unpublished
  // (the transaction failed), it leaves the log as it was: the next append re-reads the tail.
  class Staged {
   public:
    Staged(Staged&&) noexcept = default;
    Staged& operator=(Staged&&) = delete;
    ~Staged();

   private:
    friend class AuditLog;
    Staged(AuditLog& log, std::unique_lock<std::mutex> lock) : log_(&log), lock_(std::move(lock)) {}
    AuditLog* log_;
    std::unique_lock<std::mutex> lock_;  // the log's append_mu_
    bool published_ = false;
    int64_t last_seq_ = 0;
    std::string last_hash_;
    std::vector<AuditEvent> events_;  // for subscribers; empty when there were none
  };
  // Inserts `entries` into `tx`, which must be open on this log's database.
  Result<Staged> stage(Transaction& tx, std::vector<AuditEntry> entries);
  // After the staging transaction committed: the records become the log's tail and go to subscribers.
  // Returns the last seq.
  int64_t publish(Staged staged);

  // The seq of the newest record (0 when the log is empty).
  Result<int64_t> last_seq();
  // The newest record's seq and hash as this log last wrote (or read) them: seq 0 and the genesis
  // hash when the log is empty. What a checkpoint signs.
  Result<std::pair<int64_t, std::string>> head();
  // Called with the new last seq after each publish, on the appending thread with the log's append
  // lock held: it must be quick and must not touch the log or the store (the checkpointer only
  // counts and wakes its thread). One watcher; set it before appends begin, clear it with {}.
  void set_tail_watcher(std::function<void(int64_t last_seq)> watcher);
  // Up to `limit` records with seq > after_seq, oldest first: what a live tail replays before it
  // subscribes. A record whose data no longer parses carries it as a JSON string.
  Result<std::vector<AuditEvent>> read_after(int64_t after_seq, int64_t limit);

  SubscriberId subscribe(Subscriber callback);
  void unsubscribe(SubscriberId id);

 private:
  Status load_tail();  // db.lock() and append_mu_ held

  Database& db_;
  Clock clock_;

  std::mutex append_mu_;  // serializes appends; guards the fields below
  bool loaded_ = false;
  int64_t last_seq_ = 0;
  std::string last_hash_;
  std::optional<Statement> insert_;
  RecordHasher hasher_;
  std::function<void(int64_t)> tail_watcher_;

  std::mutex deliver_mu_;  // keeps deliveries in seq order across appending threads
  std::mutex subs_mu_;
  SubscriberId next_id_ = 1;
  std::map<SubscriberId, std::shared_ptr<Subscriber>> subs_;
};

}  // namespace moat
