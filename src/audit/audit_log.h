#pragma once
// The audit log: append-only, hash-chained records in the store's `audit` table (schema in
// store/migrations.cpp, hash defined in audit/event.h).
//
// Appends are serialized by the log's own mutex and committed (synchronous=FULL) before append()
// returns, so an acknowledged event is on disk. The last seq and hash are read from the table once,
// on first use, and kept in memory; use one AuditLog per store. If another writer appends behind our
// back, our next insert collides on seq and fails with Conflict, and the log re-reads the tail before
// the following append.
//
// Live subscribers are called after the commit, outside the database lock, in seq order, one event
// at a time, on the appending thread. A callback must be quick and must not call append() on the
// same log (that is refused with an error rather than deadlocking); it may subscribe/unsubscribe.
// After unsubscribe(id) returns (outside a callback), that callback is not running and will not run.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
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

  // The seq of the newest record (0 when the log is empty).
  Result<int64_t> last_seq();
  // Up to `limit` records with seq > after_seq, oldest first: what a live tail replays before it
  // subscribes. A record whose data no longer parses carries it as a JSON string.
  Result<std::vector<AuditEvent>> read_after(int64_t after_seq, int64_t limit);

  SubscriberId subscribe(Subscriber callback);
  void unsubscribe(SubscriberId id);

 private:
  Status load_tail();  // append_mu_ held
  Result<int64_t> append_locked(std::vector<AuditEntry>& entries, std::unique_lock<std::mutex>& append_lock);

  Database& db_;
  Clock clock_;

  std::mutex append_mu_;  // serializes appends; guards the fields below
  bool loaded_ = false;
  int64_t last_seq_ = 0;
  std::string last_hash_;
  std::optional<Statement> insert_;
  RecordHasher hasher_;

  std::mutex deliver_mu_;  // keeps deliveries in seq order across appending threads
  std::mutex subs_mu_;
  SubscriberId next_id_ = 1;
  std::map<SubscriberId, std::shared_ptr<Subscriber>> subs_;
};

}  // namespace moat
