#pragma once
// Which agent answers a message. The daemon builds one RouteRule per agent from its spec; the router
// matches an envelope against them in order and the first match wins.
#include <optional>
#include <string>
#include <vector>

namespace moat::router {

enum class UnknownSenders { Drop, Hold };  // Hold = keep the message, reply with a pairing code

struct RouteRule {
  std::string agent;
  std::vector<std::string> channels;  // empty = every channel
  std::vector<std::string> chats;     // "channel:chat" or "chat" globs ('*'); empty = every chat
  // Where a chat is not direct, the message must mention the agent or match this ECMAScript regex
  // (e.g. "^@?assistant\\b"); empty = every message in a matched chat.
  std::string trigger;
  bool require_trigger_in_groups = true;
  // Senders allowed ("channel:sender" or "sender"; '*' = anyone). Empty = anyone.
  std::vector<std::string> senders;
  UnknownSenders unknown_senders = UnknownSenders::Drop;
};

}  // namespace moat::router
