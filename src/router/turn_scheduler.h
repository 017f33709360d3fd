#pragma once
// The in-memory side of turn scheduling: one ordered queue per (agent, channel, chat), at most one
// turn per chat at a time, and round-robin across AGENTS (not chats), so an agent with a hundred busy
// chats takes one turn in the rotation like an agent with one. Chats waiting out a retry backoff sit
// in a timer list until due. Not thread-safe: the router guards it with its scheduler mutex. The
// store is the truth; this is rebuilt from it at start.
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "router/envelope.h"

namespace moat::router {

struct QueuedEnvelope {
  Envelope envelope;
  int attempts = 0;  // tries already made (kept in the store)
};

class TurnScheduler {
 public:
  struct Chat {
    std::string agent, channel, chat;
    std::deque<QueuedEnvelope> pending;  // oldest first; the running batch is its first `inflight`
    size_t inflight = 0;
    int64_t not_before_ms = 0;
    bool listed = false;  // in its agent's ready list or in the timer list
  };
  struct Batch {
    Chat* chat = nullptr;
    std::vector<Envelope> envelopes;
    int attempt = 1;  // the try this is (1 on the first)
  };

  // Appends to the chat's queue (by envelope.agent/channel/chat). `not_before_ms` applies when the
  // chat was idle (a recovered backoff).
  void push(QueuedEnvelope q, int64_t not_before_ms = 0);
  // The next chat's batch, by agent round-robin; nullopt when nothing is runnable now.
  std::optional<Batch> take(size_t max_batch, int64_t now_ms);
  // When the earliest waiting chat becomes due (nullopt when none waits).
  std::optional<int64_t> next_due() const;
  // The batch ran and is done (answered or failed for good): drop it and make the chat runnable again.
  void finish(Chat* chat);
  // The batch failed and will be retried: keep it in front with `attempts`, not before `not_before_ms`.
  void retry(Chat* chat, int attempts, int64_t not_before_ms);
  // Removes an agent's envelopes that are not running; returns them.
  std::vector<Envelope> remove_agent(const std::string& agent);
  void clear();

  size_t queued() const { return queued_; }
  size_t running() const { return running_; }

 private:
  struct Agent {
    std::deque<Chat*> ready;
    bool in_ring = false;
  };
  void list(Chat* c, int64_t now_ms);
  void maybe_erase(Chat* c);

  std::unordered_map<std::string, std::unique_ptr<Chat>> chats_;
  std::unordered_map<std::string, Agent> agents_;
  std::deque<std::string> ring_;  // agents with a ready chat, in turn order
  std::multimap<int64_t, Chat*> timers_;
  size_t queued_ = 0, running_ = 0;  // envelopes
};

}  // namespace moat::router
