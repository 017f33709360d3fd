#pragma once
// The router's SQL, in one place. Every function expects the caller to hold db.lock() (or a
// Transaction) for as long as its sequence must not interleave with other threads.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "router/envelope.h"
#include "router/router.h"
#include "router/turn_scheduler.h"
#include "store/database.h"

namespace moat::router {

class EnvelopeRepo {
 public:
  explicit EnvelopeRepo(Database& db) : db_(db) {}

  // INSERT that ignores a repeat of (channel, message_id): returns the new id, or nullopt for a
  // duplicate. One prepared statement, reused: this runs per envelope inside the group commit.
  Result<std::optional<int64_t>> insert(const Envelope& e, std::string_view state, std::string_view error);
  // The stored id and agent of an earlier (channel, message_id).
  Result<std::pair<int64_t, std::string>> find(std::string_view channel, std::string_view message_id);

  Status set_running(const std::vector<Envelope>& batch, int attempts);
  Status set_answered(const std::vector<Envelope>& batch);
  Status set_retry(const std::vector<Envelope>& batch, int attempts, int64_t not_before_ms, std::string_view error);
  Status set_failed(const std::vector<Envelope>& batch, int attempts, std::string_view error);

  // running -> queued (a turn cut short by a crash runs again), then every queued envelope in id order.
  Result<std::vector<std::pair<QueuedEnvelope, int64_t /*not_before_ms*/>>> recover();
  // Held envelopes of (agent, channel, sender) -> queued, in id order.
  Result<std::vector<QueuedEnvelope>> release_held(std::string_view agent, std::string_view channel,
                                                   std::string_view sender);
  Result<std::vector<EnvelopeStatus>> list(std::string_view state, std::string_view agent, size_t limit);

  // Pairing codes and approvals.
  Result<std::optional<std::string>> open_code(std::string_view agent, std::string_view channel, std::string_view sender);
  Status insert_code(std::string_view code, std::string_view agent, std::string_view channel, std::string_view sender);
  struct CodeRow {
    std::string agent, channel, sender;
    int64_t used_at_ms = 0;
  };
  Result<std::optional<CodeRow>> code(std::string_view code);
  Status use_code(std::string_view code, std::string_view actor, const CodeRow& row);
  // Every approval as "agent\0channel\0sender".
  Result<std::vector<std::string>> approvals();

 private:
  Status set_state(const std::vector<Envelope>& batch, std::string_view sql_tail,
                   const std::function<void(Statement&)>& bind_rest);
  Database& db_;
  std::optional<Statement> insert_;
};

// Outbox rows.
struct OutboxRow {
  Outbound msg;
  int attempts = 0;
  int64_t next_attempt_ms = 0;
  size_t parts_sent = 0;  // of a reply delivered in parts
};
// `reply_to` is the answered envelope's (see Envelope::reply_to); empty for unsolicited messages.
// `edit_platform_id`: the turn's preview message, which the first part's delivery edits.
Result<int64_t> outbox_insert(Database& db, std::string_view channel, std::string_view chat, std::string_view agent,
                              std::string_view text, int64_t in_reply_to, bool is_error,
                              std::string_view reply_to = {}, std::string_view edit_platform_id = {});
// Up to `limit` undelivered rows with id > after_id, in id order.
Result<std::vector<OutboxRow>> outbox_pending(Database& db, int64_t after_id, size_t limit);
// Marks rows delivered, with the platform's id for each (may be empty), inside the caller's
// transaction (which also stages their audit records).
struct OutboxDelivery {
  int64_t id = 0;
  std::string platform_id;
};
Status outbox_delivered(Database& db, const std::vector<OutboxDelivery>& rows);
// Records that the first `parts_sent` parts of a row went out (the last with `platform_id`), in a
// transaction of its own: a crash after it resumes with the next part.
Status outbox_parts_sent(Database& db, int64_t id, size_t parts_sent, std::string_view platform_id);
// The platform's id of a delivered row ("" when the channel has none or it is not delivered).
Result<std::string> outbox_platform_id(Database& db, int64_t id);
Status outbox_retry_later(Database& db, int64_t id, int attempts, int64_t next_attempt_ms);
Status outbox_failed(Database& db, int64_t id, std::string_view why);
Result<int64_t> outbox_undelivered_count(Database& db);
// Reply previews (router/preview.cpp; store table previews).
enum class PreviewState { Open, Final, Interrupted };
std::string_view preview_state_name(PreviewState s);
struct PreviewRow {
  int64_t id = 0;
  std::string channel, chat, agent, platform_id, text;
};
// A new open preview row (before its message is first sent): its id.
Result<int64_t> preview_insert(Database& db, std::string_view channel, std::string_view chat, std::string_view agent);
// What the platform shows now: its message id and text (kept to mark it interrupted after a crash).
Status preview_shown(Database& db, int64_t id, std::string_view platform_id, std::string_view text);
Status preview_set_state(Database& db, int64_t id, PreviewState state);
// Every open preview, oldest first.
Result<std::vector<PreviewRow>> previews_open(Database& db);

// An outbound message's delivery key ("o17"): the same for every delivery attempt of one row.
std::string outbox_key(int64_t id);
// Puts a channel's messages in the order it showed them (each kind given oldest first).
void sort_channel_history(std::vector<ChannelMessage>& messages);
// What `channel` has shown, oldest first (see Router::channel_history).
Result<std::vector<ChannelMessage>> channel_history(Database& db, std::string_view channel, size_t inbound,
                                                    size_t replies);

// g++ 12's std::expected has no transform(): drops the value, keeps the error.
inline Status as_status(const Result<int64_t>& r) {
  if (!r) return std::unexpected(r.error());
  return {};
}

std::string approval_key(std::string_view agent, std::string_view channel, std::string_view sender);

}  // namespace moat::router
