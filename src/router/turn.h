#pragma once
// The contract between the router and whatever runs an agent's turn (the agent runtime, wired by the
// daemon). The router hands over a batch of envelopes of one (agent, chat) in order; the runner
// returns the messages to send. The router commits them to the outbox in the same transaction that
// marks the envelopes answered, so a turn is answered exactly once even when moatd dies mid-turn
// (the turn then runs again from the same envelopes).
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "router/envelope.h"

namespace moat::router {

struct Turn {
  std::string agent;
  std::string channel, chat;
  std::vector<Envelope> envelopes;  // oldest first; more than one when messages arrived while busy
  int attempt = 1;                  // 1 on the first try
};

struct TurnResult {
  // To the turn's own chat, in order (the reply and anything the agent sent with send_message).
  std::vector<std::string> replies;
  // To other chats, where the agent may (send_message with a chat): channel, chat, text.
  struct Elsewhere {
    std::string channel, chat, text;
  };
  std::vector<Elsewhere> elsewhere;
};

// Live output of a running turn, forwarded to the channel's live().
using LiveSink = std::function<void(const std::string& kind, const Json& data)>;

// Runs one turn. An error is retried with backoff; after the last attempt the chat gets an honest
// error reply and the envelopes are kept as failed. ErrorKind::InvalidInput is not retried (a
// configuration problem the owner must fix; the reply says what).
using TurnRunner = std::function<Result<TurnResult>(const Turn&, const LiveSink&)>;

}  // namespace moat::router
