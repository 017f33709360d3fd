#include "channels/message_ring.h"

#include <algorithm>
#include <chrono>

namespace moat::channels {

namespace {
// Keys outlive their messages by this factor: enough for any realistic redelivery window.
constexpr size_t kKeyMemoryFactor = 10;
}  // namespace

MessageStore::MessageStore(size_t per_chat, size_t max_chats)
    : per_chat_(std::max<size_t>(per_chat, 1)), max_chats_(std::max<size_t>(max_chats, 1)) {}

bool MessageStore::add(StoredMessage m) {
  auto it = chats_.find(m.chat);
  if (it == chats_.end()) {
    if (chats_.size() >= max_chats_) evict_oldest_chat();
    it = chats_.emplace(m.chat, Chat{}).first;
  }
  Chat& c = it->second;
  if (c.keys.contains(m.key)) return false;
  c.keys.insert(m.key);
  c.order.push_back(m.key);
  while (c.order.size() > per_chat_ * kKeyMemoryFactor) {
    c.keys.erase(c.order.front());
    c.order.pop_front();
  }
  m.seq = next_seq_++;
  if (m.at_ms == 0) {
    m.at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch()).count();
  }
  c.last_seq = m.seq;
  c.messages.push_back(std::move(m));
  while (c.messages.size() > per_chat_) c.messages.pop_front();
  return true;
}

bool MessageStore::seen(std::string_view chat, std::string_view key) const {
  auto it = chats_.find(chat);
  return it != chats_.end() && it->second.keys.contains(std::string(key));
}

std::vector<StoredMessage> MessageStore::after(std::string_view chat, std::string_view key) const {
  auto it = chats_.find(chat);
  if (it == chats_.end()) return {};
  const auto& msgs = it->second.messages;
  auto start = msgs.begin();
  if (!key.empty()) {
    auto pos = std::find_if(msgs.begin(), msgs.end(), [&](const StoredMessage& m) { return m.key == key; });
    if (pos != msgs.end()) start = std::next(pos);
  }
  return {start, msgs.end()};
}

uint64_t MessageStore::seq_of(const std::vector<std::string>& chats, std::string_view key) const {
  if (key.empty()) return 0;
  for (const auto& name : chats) {
    auto it = chats_.find(name);
    if (it == chats_.end()) continue;
    for (const auto& m : it->second.messages) {
      if (m.key == key) return m.seq;
    }
  }
  return 0;
}

std::vector<StoredMessage> MessageStore::since(const std::vector<std::string>& chats, uint64_t after_seq) const {
  std::vector<StoredMessage> out;
  for (const auto& name : chats) {
    auto it = chats_.find(name);
    if (it == chats_.end()) continue;
    for (const auto& m : it->second.messages) {
      if (m.seq > after_seq) out.push_back(m);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  return out;
}

void MessageStore::evict_oldest_chat() {
  // Linear, but only when the chat cap is reached: a cap, not a cache policy worth a heap.
  auto oldest = chats_.end();
  for (auto it = chats_.begin(); it != chats_.end(); ++it) {
    if (oldest == chats_.end() || it->second.last_seq < oldest->second.last_seq) oldest = it;
  }
  if (oldest != chats_.end()) chats_.erase(oldest);
}

Json stored_message_to_json(const StoredMessage& m) {
  return Json{{"key", m.key},   {"role", m.role},           {"agent", m.agent},       {"chat", m.chat},
              {"text", m.text}, {"in_reply_to", m.in_reply_to}, {"is_error", m.is_error}, {"at_ms", m.at_ms}};
}

}  // namespace moat::channels
