#pragma once
// Shared by the router tests: a real store in a temp dir, a channel that records what it is given,
// and small helpers to build envelopes and wait for conditions.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit_log.h"
#include "router/router.h"
#include "store/database.h"
#include "support/temp_dir.h"

namespace moat::router::test {

struct Store {
  moat::testing::TempDir dir{"moat-router"};
  std::optional<Database> db;
  std::optional<AuditLog> audit;
  Store() { open(); }
  void open() {
    auto d = Database::open(dir / "moat.db");
    if (!d) throw std::runtime_error(d.error().message);
    db.emplace(std::move(*d));
    audit.emplace(*db);
  }
  void close() {
    audit.reset();
    db.reset();
  }
  int64_t count(const std::string& sql) {
    auto n = db->query_int64(sql);
    if (!n) throw std::runtime_error(n.error().message);
    return *n;
  }
};

class RecordingChannel : public Channel {
 public:
  explicit RecordingChannel(std::string name = "web") : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  DeliveryResult deliver(const Outbound& msg) override {
    Delivered d;
    if (hook) {
      if (auto s = hook(msg); !s) return delivery_failed(s.error());
    }
    if (platform) {
      auto r = platform(msg);
      if (!r) return r;
      d = *r;
    }
    std::lock_guard g(mu);
    got.push_back(msg);
    return d;
  }
  void live(const LiveEvent& ev) override {
    std::lock_guard g(mu);
    lives.push_back(ev);
  }
  std::vector<Outbound> delivered() {
    std::lock_guard g(mu);
    return got;
  }
  size_t size() {
    std::lock_guard g(mu);
    return got.size();
  }
  std::function<Status(const Outbound&)> hook;  // set before start()
  // A platform's answer (its message id, or a failure with retry_after); set before start().
  std::function<DeliveryResult(const Outbound&)> platform;
  std::mutex mu;
  std::vector<Outbound> got;
  std::vector<LiveEvent> lives;

 private:
  std::string name_;
};

inline Envelope msg(std::string chat, std::string id, std::string text, std::string sender = "alice",
                    std::string channel = "web", bool direct = true) {
  Envelope e;
  e.channel = std::move(channel);
  e.chat = std::move(chat);
  e.sender = std::move(sender);
  e.message_id = std::move(id);
  e.text = std::move(text);
  e.direct = direct;
  return e;
}

inline RouteRule catch_all(std::string agent = "a") {
  RouteRule r;
  r.agent = std::move(agent);
  return r;
}

// Polls `pred` until it holds or `timeout` passes; returns whether it held.
inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

}  // namespace moat::router::test
