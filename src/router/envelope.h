#pragma once
// The router's vocabulary: what comes in from a channel (Envelope), what goes out to one (Outbound),
// and what a channel shows live while a turn runs (LiveEvent). Channels and the agent runtime both
// speak these; neither knows the other.
#include <cstdint>
#include <string>
#include <vector>

#include "base/json.h"

namespace moat::router {

struct Attachment {
  std::string name;
  std::string mime;
  std::string url;  // where the platform had it (for the record; never fetched after the channel's download)
  uint64_t size = 0;
  // Where the channel staged it (store/attachment_stage.h: a path relative to the staging area);
  // the turn copies it into the agent's sandbox. Empty when it was not downloaded, and then
  // `unavailable` says why (over the size limit, the download failed), for the agent to tell.
  std::string staged;
  std::string unavailable;
};

// One inbound message, normalised. (channel, message_id) is unique: a repeat is a duplicate.
struct Envelope {
  int64_t id = 0;            // store row id, set when accepted
  std::string channel;       // "terminal", "web", "webhook", "telegram", ...
  std::string chat;          // the channel's conversation id
  std::string sender;        // the channel's sender id
  std::string sender_name;   // for humans; may be empty
  std::string message_id;    // the channel's id for this message
  std::string text;
  std::vector<Attachment> attachments;
  int64_t received_ms = 0;   // set by accept() when zero
  bool mentioned = false;    // the channel says the agent was @mentioned
  bool direct = false;       // a one-to-one chat (no trigger needed)
  std::string agent;         // set by the router when matched (or by a channel that names it)
  // Where the channel should send replies to this message, when it cannot know that itself after a
  // restart (the webhook's callback URL). Stored with the envelope; copied to its replies.
  std::string reply_to;
};

// A reply or message to deliver. `key` is stable across retries and restarts (the outbox row's id,
// "o<id>"): a channel that can tell the far side an idempotency key passes it on; one that stores
// messages itself drops a key it has seen.
struct Outbound {
  int64_t id = 0;
  std::string key;
  std::string channel, chat;
  std::string agent;
  std::string text;
  int64_t in_reply_to = 0;   // envelope id (the last of the batch), 0 when unsolicited
  bool is_error = false;     // an honest failure notice after the last retry
  std::string reply_to;      // the answered envelope's reply_to (the last of the batch); may be empty
  int64_t created_ms = 0;    // when the reply was written (wall clock): the same on every delivery
  // A reply longer than the channel's limit goes out in parts: this is part `part` (0-based) of
  // `parts`, and `key` is the part's own ("o31.2"; the row's key when there is one part).
  size_t part = 0, parts = 1;
  // Set on part 0 when the turn showed a preview on this channel: deliver this part by editing that
  // message (its platform id) into the final text instead of sending a new one.
  std::string edit_platform_id;
};

// A message as a channel showed it, read back from the store after a restart: an inbound envelope
// the channel accepted (role "user", key = its message id) or a reply delivered to the channel
// (role "agent", key = its outbox key, as Outbound::key had it).
struct ChannelMessage {
  std::string role, key, agent, chat, text;
  int64_t envelope_id = 0;  // user: the envelope's id
  int64_t in_reply_to = 0;  // agent: the envelope it answers (0 when unsolicited)
  bool is_error = false;
  int64_t at_ms = 0;  // received (user) or written (agent), wall clock
};

// Live, best effort, never stored: text as the model streams it, tool calls and results as they
// happen. Lost on a crash, which is fine: the durable reply follows through the outbox.
struct LiveEvent {
  std::string channel, chat, agent;
  // "text" | "tool_call" | "tool_result" (from the runner) | "turn_started" | "turn_ended" (from the router)
  std::string kind;
  // text: {"text": delta}; tool_call: {"name","input"}; tool_result: {"name","output","is_error"};
  // turn_started: {"first_id", "last_id", "attempt"};
  // turn_ended: {"outcome": "answered"|"failed"|"retrying", "first_id", "last_id", "replies": how many
  //   outbox messages follow (answered, failed), "error", "attempt", "retry_in_ms" (retrying)}
  Json data;
};

Json envelope_to_json(const Envelope& e);
Json outbound_to_json(const Outbound& o);

}  // namespace moat::router
