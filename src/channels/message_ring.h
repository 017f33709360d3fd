#pragma once
// Messages a channel keeps itself (the web chat's history, the webhook's replies for polling):
// per chat, the last `capacity` messages in arrival order, keyed by the outbox key. The router may
// deliver the same message again (retries, recovery after a crash), so a key already seen is
// dropped; keys are remembered a while longer than the messages themselves so a late repeat of an
// evicted message does not come back. Not thread-safe: the owning channel holds its own lock.
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "base/json.h"

namespace moat::channels {

struct StoredMessage {
  uint64_t seq = 0;       // store-wide arrival order, set by add()
  std::string key;        // outbox key ("o17"), or "u:<client id>" for the web user's own messages
  std::string role;       // "agent" | "user"
  std::string agent, chat, text;
  int64_t in_reply_to = 0;
  bool is_error = false;
  int64_t at_ms = 0;      // when stored (wall clock, ms)
};

class MessageStore {
 public:
  explicit MessageStore(size_t per_chat = 200, size_t max_chats = 10000);

  // False (and nothing stored) when the chat already saw this key.
  bool add(StoredMessage m);
  bool seen(std::string_view chat, std::string_view key) const;
  // The chat's messages after `key`, oldest first; all retained ones when `key` is empty or no longer
  // known (a client that missed more than the ring holds gets what there is).
  std::vector<StoredMessage> after(std::string_view chat, std::string_view key) const;
  // The arrival number of a key in any of `chats`, 0 if unknown.
  uint64_t seq_of(const std::vector<std::string>& chats, std::string_view key) const;
  // Messages of several chats with seq > `after_seq`, in arrival order.
  std::vector<StoredMessage> since(const std::vector<std::string>& chats, uint64_t after_seq) const;

 private:
  struct Chat {
    std::deque<StoredMessage> messages;
    std::unordered_set<std::string> keys;  // every key in `order`
    std::deque<std::string> order;         // remembered keys, oldest first (bounded)
    uint64_t last_seq = 0;
  };
  void evict_oldest_chat();

  size_t per_chat_, max_chats_;
  uint64_t next_seq_ = 1;
  std::map<std::string, Chat, std::less<>> chats_;
};

Json stored_message_to_json(const StoredMessage& m);

}  // namespace moat::channels
