#pragma once
// A conversation's memory in the store: the messages of one (agent, channel, chat) in
// provider-neutral form (chat_history), and the summary that stands in for the oldest of them once
// they outgrew the context budget (chat_summaries).
#include <optional>

#include "agent/providers/provider.h"
#include "store/database.h"

namespace moat::agent {

Json message_to_json(const Message& m);  // {"role", "content": [blocks]}
Result<Message> message_from_json(const Json& j);
// Estimated tokens: bytes / 4 of the message's JSON, which is close enough to steer compaction.
uint64_t estimate_tokens(const Message& m);

struct StoredMessage {
  int64_t seq = 0;
  Message message;
  uint64_t tokens = 0;
};

struct Conversation {
  std::string summary;     // empty = none
  int64_t through_seq = 0; // messages up to here are in the summary
  std::vector<StoredMessage> messages;  // seq > through_seq, ascending
  uint64_t tokens() const;
};

class ChatHistory {
 public:
  ChatHistory(Database& db, std::string agent, std::string channel, std::string chat);

  Result<Conversation> load();
  // Appends in one transaction; seq continues after the last stored one.
  Status append(const std::vector<Message>& messages);
  Status set_summary(const std::string& summary, int64_t through_seq);

 private:
  Database& db_;
  std::string agent_, channel_, chat_;
};

// Messages as a provider wants them: consecutive messages of one role merged (a turn that ended on
// tool results is followed by the next turn's user message), and nothing before the first user
// message (a summary cut may leave an orphan assistant reply).
std::vector<Message> normalise(std::vector<Message> messages);

// Plain text of a conversation for a summary request or a command agent's stdin.
std::string transcript(const std::vector<Message>& messages);

}  // namespace moat::agent
