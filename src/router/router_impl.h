#pragma once
// Router's private state, shared by router.cpp (accept, group commit, approve), turn_worker.cpp (the
// turn threads) and delivery.cpp (the outbox thread).
//
// Locks, in the only order they are ever nested:
//   gc_mu (group-commit queue) — never held across I/O;
//   db.lock() — the store; a group commit holds it from BEGIN until its envelopes are in the scheduler
//     (but not during its fsync, see accept_grouped);
//   the audit log's append lock — taken inside db.lock() to stage records in the same transaction;
//   sched_mu — the in-memory queues; never held while calling the store, a runner or a channel.
// rules_mu, approvals_mu, channels_mu and out_mu are leaves.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "net/backoff.h"
#include "router/envelope_repo.h"
#include "router/router.h"
#include "router/rule_matcher.h"
#include "router/turn_scheduler.h"

namespace moat::router {

struct Router::Impl {
  Impl(Database& db, AuditLog& audit, RouterOptions opts) : db(db), audit(audit), opts(opts), repo(db) {}

  Database& db;
  AuditLog& audit;
  RouterOptions opts;
  EnvelopeRepo repo;  // guarded by db.lock()

  // Rules.
  mutable std::shared_mutex rules_mu;
  std::shared_ptr<const RuleMatcher> matcher = std::make_shared<RuleMatcher>();

  // Sender approvals, mirrored from the store so that matching needs no query. Changed only while
  // db.lock() is held too, which is what keeps a held-or-not decision consistent with approve().
  std::mutex approvals_mu;
  std::unordered_set<std::string> approvals;
  bool approved(std::string_view agent, std::string_view channel, std::string_view sender);

  // Group commit: callers of accept() queue here; one of them (the leader) writes a whole batch in
  // one transaction, hands the lead to the next caller, flushes the log to disk while that caller
  // writes the next batch, and then wakes its batch's callers.
  struct Item {
    Envelope env;
    MatchResult match;
    Result<Acceptance> result = Acceptance{Acceptance::Outcome::Dropped};
  };
  struct Pending {  // one caller's envelopes (one for accept(), many for accept_many())
    std::vector<Item> items;
    const ChannelCursor* cursor = nullptr;  // accept_with_cursor(): written in the same transaction
    Status committed;                       // whether the batch this caller was in reached the disk
    // 0 waiting, 1 done, 2 lead the next batch. Waited on with a futex: one wake-up per caller and
    // no mutex, which matters at tens of thousands of callers a second.
    std::atomic<int> state{0};
  };
  std::mutex gc_mu;
  std::deque<Pending*> gc_queue;
  bool gc_leader = false;
  // Writes the items durably with whatever other callers queued meanwhile; fills their results.
  Status accept_grouped(std::vector<Item>& items, const ChannelCursor* cursor = nullptr);
  // accept_many()'s checks and matching, on the caller's thread: items to store, and where each
  // answers in `out` (invalid envelopes are answered there at once).
  std::vector<Item> prepare(std::vector<Envelope>& envelopes, std::vector<Result<Acceptance>>& out,
                            std::vector<size_t>& where);
  // Writes `batch` and its audit records in one transaction (durable at the next db.sync_wal()),
  // queues its envelopes and fills each result.
  void write_batch(std::vector<Pending*>& batch);

  // Turns.
  std::mutex sched_mu;
  std::condition_variable sched_cv;
  TurnScheduler sched;
  TurnRunner runner;
  bool started = false;   // read and written under db.lock(): envelopes go to `sched` only once loaded
  bool stopping = false;  // under sched_mu
  std::vector<std::thread> workers;
  void worker_loop();
  void run_turn(TurnScheduler::Batch b);
  void enqueue(std::vector<QueuedEnvelope> qs);  // db.lock() held; takes sched_mu

  // Outbox delivery.
  std::mutex channels_mu;
  std::unordered_map<std::string, Channel*> channels;
  Channel* channel(const std::string& name);
  std::mutex out_mu;
  std::condition_variable out_cv;
  bool out_dirty = true;
  bool out_stopping = false;
  std::thread delivery;
  void delivery_loop();
  DeliveryResult deliver_parts(Channel& ch, OutboxRow& row);
  void poke_delivery();

  // Reply previews (preview.cpp): one slot per chat whose turn streams text to a channel with
  // previews; the preview thread creates and edits the message at the channel's rate.
  struct PreviewSlot {
    Channel* ch = nullptr;
    std::string channel, chat, agent;
    int64_t row = 0;           // previews row; 0 until the message is first sent
    std::string platform_id;   // empty until the platform made the message
    std::string text;          // streamed so far in this attempt of the turn
    std::string shown;         // the text the platform shows
    int64_t next_ms = 0;       // no send before (the channel's rate, a 429's retry_after)
    bool in_flight = false;    // the preview thread is calling the channel
    bool closed = false;       // the turn is committing: no more sends
  };
  struct ClosedPreview {
    int64_t row = 0;
    std::string platform_id;
  };
  struct Orphan {  // an open preview left by a crash, to mark "(interrupted)"
    PreviewRow row;
    int tries = 0;
    int64_t next_ms = 0;
  };
  std::mutex prev_mu;  // a leaf, like out_mu
  std::condition_variable prev_cv;
  std::unordered_map<std::string, PreviewSlot> previews;  // channel '\0' chat
  std::deque<Orphan> orphans;
  bool prev_stopping = false;
  std::thread preview_thread;
  void preview_loop();
  // From a turn's live sink, for a channel with previews: "turn_started" begins (or restarts) the
  // chat's preview text, "text" adds to it.
  void preview_event(Channel& ch, const std::string& channel, const std::string& chat, const std::string& agent,
                     const std::string& kind, const Json& data);
  // The turn is committing its outcome: no more preview sends for the chat; waits for one in flight.
  // What the chat's preview is (nullopt: it showed none).
  std::optional<ClosedPreview> close_preview(const std::string& channel, const std::string& chat);
  // After the commit: the chat's preview is done with (dropped = true) or shows the next attempt.
  void end_preview(const std::string& channel, const std::string& chat, bool dropped);
  // Start: open previews in the store are orphans of a crash.
  Status load_orphans();
};

// The honest error reply a chat gets when its turn failed for good.
std::string failure_reply(const Error& e, int attempts);

// Failed turns and failed deliveries wait base, 2*base, 4*base ... up to a minute. No jitter: the
// wait is stored with the row (not_before_ms / next_attempt_ms), and one chat's retries are already
// spread by when its messages came. How many attempts a turn gets is RouterOptions::max_attempts;
// a delivery is retried until it succeeds or the channel refuses it for good.
inline net::Backoff retry_backoff(std::chrono::milliseconds base) {
  return net::Backoff{.initial = base, .factor = 2.0, .cap = std::chrono::minutes(1)};
}

}  // namespace moat::router
