#pragma once
// The terminal channel: `moat chat AGENT` over the control API. Each chat.send request subscribes to
// its chat, hands the message to the router, and relays the turn's live events and the durable
// replies back as progress frames until the reply arrives.
//
// Chats are "<agent>/<user>"; the sender is the local user (the API socket is root's alone).
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <variant>

#include "router/channel.h"

namespace moat {

class TerminalChannel : public router::Channel {
 public:
  using Item = std::variant<router::LiveEvent, router::Outbound>;

  // Events of one chat from the moment of subscribing; unsubscribes when destroyed.
  class Subscription {
   public:
    Subscription(TerminalChannel& ch, std::string chat) : ch_(ch), chat_(std::move(chat)) {}
    ~Subscription();
    // Next item, or nothing after `timeout`.
    std::optional<Item> next(std::chrono::milliseconds timeout);

   private:
    friend class TerminalChannel;
    TerminalChannel& ch_;
    std::string chat_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Item> items_;
  };

  std::string_view name() const override { return "terminal"; }
  router::DeliveryResult deliver(const router::Outbound& msg) override;
  void live(const router::LiveEvent& ev) override;

  std::unique_ptr<Subscription> subscribe(const std::string& chat);

 private:
  void push(const std::string& chat, const Item& item);
  void unsubscribe(Subscription* s);

  std::mutex mu_;
  std::multimap<std::string, Subscription*> subs_;
  std::set<std::string> delivered_keys_;  // a repeat after a crash is dropped
  std::deque<std::string> key_order_;
};

}  // namespace moat
