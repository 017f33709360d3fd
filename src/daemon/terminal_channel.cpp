#include "daemon/terminal_channel.h"

namespace moat {

namespace {
constexpr size_t kRememberedKeys = 4096;
}

TerminalChannel::Subscription::~Subscription() { ch_.unsubscribe(this); }

std::optional<TerminalChannel::Item> TerminalChannel::Subscription::next(std::chrono::milliseconds timeout) {
  std::unique_lock l(mu_);
  if (!cv_.wait_for(l, timeout, [&] { return !items_.empty(); })) return std::nullopt;
  Item it = std::move(items_.front());
  items_.pop_front();
  return it;
}

std::unique_ptr<TerminalChannel::Subscription> TerminalChannel::subscribe(const std::string& chat) {
  auto s = std::make_unique<Subscription>(*this, chat);
  std::lock_guard l(mu_);
  subs_.emplace(chat, s.get());
  return s;
}

void TerminalChannel::unsubscribe(Subscription* s) {
  std::lock_guard l(mu_);
  for (auto [b, e] = subs_.equal_range(s->chat_); b != e; ++b) {
    if (b->second == s) {
      subs_.erase(b);
      break;
    }
  }
}

void TerminalChannel::push(const std::string& chat, const Item& item) {
  for (auto [b, e] = subs_.equal_range(chat); b != e; ++b) {
    std::lock_guard sl(b->second->mu_);
    b->second->items_.push_back(item);
    b->second->cv_.notify_all();
  }
}

router::DeliveryResult TerminalChannel::deliver(const router::Outbound& msg) {
  std::lock_guard l(mu_);
  if (!delivered_keys_.insert(msg.key).second) return router::Delivered{};
  key_order_.push_back(msg.key);
  if (key_order_.size() > kRememberedKeys) {
    delivered_keys_.erase(key_order_.front());
    key_order_.pop_front();
  }
  // Nobody attached is fine: the reply stays in the store (outbox and history) and the terminal is
  // interactive; there is no one to hand it to later.
  push(msg.chat, msg);
  return router::Delivered{};
}

void TerminalChannel::live(const router::LiveEvent& ev) {
  std::lock_guard l(mu_);
  push(ev.chat, ev);
}

}  // namespace moat
