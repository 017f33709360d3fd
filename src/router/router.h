#pragma once
// The router: inbound envelopes are written durably before they are acknowledged (deduplicated by
// (channel, message_id)), matched to an agent, queued per (agent, chat) in order, run under a global
// cap on concurrent turns with round-robin fairness across agents, and answered through a durable
// outbox delivered with a stable idempotency key. Messages that arrive while a chat's turn runs are
// batched into its next turn. Nothing accepted is lost when moatd is killed; nothing is delivered
// twice to a channel that honours the key (invariant 5).
//
// Store tables (migration 4): envelopes, outbox, sender_approvals, pairing_codes.
// Audit kinds: message.in, message.out, message.held, message.dropped, message.failed, sender.approved.
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit_log.h"
#include "base/result.h"
#include "router/channel.h"
#include "router/envelope.h"
#include "router/route_rule.h"
#include "router/turn.h"
#include "store/database.h"

namespace moat::router {

struct RouterOptions {
  size_t max_concurrent_turns = 8;  // global cap
  int max_attempts = 3;             // a turn is tried this often before the chat gets an error reply
  std::chrono::milliseconds retry_base{1000};  // backoff: base, 2*base, 4*base ... capped at 60 s
  size_t max_batch = 50;                        // envelopes per turn at most
  std::chrono::milliseconds delivery_retry_base{500};
};

struct Acceptance {
  enum class Outcome { Queued, Duplicate, Held, Dropped } outcome;
  int64_t envelope_id = 0;
  std::string agent;         // Queued/Held: which agent
  std::string pairing_code;  // Held: the code the owner confirms with `moat approve CODE`
  std::string reason;        // Dropped: why (no rule matched, unknown sender, no trigger)
};
std::string_view outcome_name(Acceptance::Outcome o);

// Where a channel that pulls from a platform has got to (Telegram's update offset; Discord's session
// id, resume URL and sequence): opaque to the router, stored per channel.
struct ChannelCursor {
  std::string channel;
  Json value;
};

struct EnvelopeStatus {  // for `moat messages`
  Envelope envelope;
  std::string state;  // queued | running | answered | failed | held | dropped
  int attempts = 0;
  std::string error;  // last error, for failed
};

class Router {
 public:
  Router(Database& db, AuditLog& audit, RouterOptions opts = {});
  ~Router();  // stop()s

  // Replaces the rules (agents added/changed/removed). Queued envelopes of a removed agent fail.
  // A rule with an invalid trigger regex is logged and left out; check with validate_rules() first.
  void set_rules(std::vector<RouteRule> rules);
  // InvalidInput naming the agent and pattern when a rule's trigger is not a valid ECMAScript regex.
  static Status validate_rules(const std::vector<RouteRule>& rules);
  void set_turn_runner(TurnRunner runner);
  // Channels are registered before start() (their outbox rows wait until then) or while running
  // (`moat channel add`); the router does not own them.
  void add_channel(Channel& channel);
  // Stops routing to `name`: its undelivered replies wait until a channel of that name is added
  // again. The channel object must stay alive until the router stops (a delivery, a turn's live
  // events or a preview may still hold it): moatd keeps removed channels until it exits.
  void remove_channel(std::string_view name);

  // Recovers (running -> queued, undelivered outbox resent), then starts the worker and delivery
  // threads.
  Status start();
  // Waits for running turns to end (their results are still committed), then joins the threads.
  void stop();

  // Durable once it returns Queued/Held/Dropped/Duplicate: the caller may acknowledge the message.
  Result<Acceptance> accept(Envelope e);
  // accept() for a burst (a webhook delivery or a long-poll answer carrying many messages): one
  // result per envelope, in order, all durable when it returns. Cheaper than as many accept() calls
  // from as many threads: one wake-up for the lot instead of one per envelope.
  std::vector<Result<Acceptance>> accept_many(std::vector<Envelope> envelopes);
  // accept_many() for a channel that pulls: `cursor` is committed in the same transaction as the
  // envelopes, so after a crash the channel resumes from a cursor that covers exactly what was stored
  // (what it fetches again is dropped as a duplicate). An error when the commit failed: nothing was
  // stored and the cursor did not move. An invalid envelope is an error of its own and the cursor still
  // moves past it (the platform will not send it better). `envelopes` may be empty (a poll that brought
  // nothing to accept still advances the cursor).
  Result<std::vector<Result<Acceptance>>> accept_with_cursor(std::vector<Envelope> envelopes, ChannelCursor cursor);
  // The cursor last committed for `channel`; nullopt when it never committed one.
  Result<std::optional<Json>> channel_cursor(std::string_view channel);
  // Approves the sender a pairing code was issued for; its held messages are queued in order.
  // NotFound for an unknown or already used code.
  Result<Json> approve(std::string_view code, std::string_view actor);

  Result<std::vector<EnvelopeStatus>> messages(std::string_view state_filter, std::string_view agent, size_t limit);
  // What `channel` has shown so far, for a channel that keeps its own history (the web chat's
  // conversations, the webhook's replies for polling) to take back after a restart: the newest
  // `inbound` envelopes it accepted (not dropped ones) and the newest `replies` delivered to it,
  // merged oldest first, from among the store's newest 200,000 envelopes and outbox rows (so the
  // cost does not grow with the store). Replies not yet delivered are not here: start() delivers them.
  Result<std::vector<ChannelMessage>> channel_history(std::string_view channel, size_t inbound, size_t replies);
  // What `channel` took in (envelopes stored, dropped ones included, repeats not) and delivered out
  // (outbox rows delivered) since `since_ms` (wall clock), counted among the store's newest 200,000
  // envelopes and outbox rows so the cost does not grow with the store.
  struct Traffic {
    uint64_t in = 0, out = 0;
  };
  Result<Traffic> channel_traffic(std::string_view channel, int64_t since_ms);
  // Sends an unsolicited message (e.g. a scheduled task's result) through the outbox.
  Result<int64_t> send(std::string agent, std::string channel, std::string chat, std::string text);

  struct Stats {  // queued/running count envelopes (a running turn may hold several)
    size_t queued = 0, running = 0, undelivered = 0;
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::router
