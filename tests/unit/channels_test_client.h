#pragma once
// Test helpers for the channel tests: the raw-socket HTTP client and SSE reader (support/raw_http.h),
// and a fake router accept() with the router's dedupe semantics ((channel, message_id) seen before =
// Duplicate).
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "channels/accept_fn.h"
#include "support/raw_http.h"

namespace moat::testing {

// accept() as the router does it, for the parts channels rely on: (channel, message_id) dedupe and
// an envelope id. Records every envelope it queued.
class FakeRouter {
 public:
  channels::AcceptFn accept_fn() {
    return [this](router::Envelope e) { return accept(std::move(e)); };
  }
  Result<router::Acceptance> accept(router::Envelope e) {
    std::lock_guard lock(mu_);
    auto key = e.channel + "\n" + e.message_id;
    if (auto it = ids_.find(key); it != ids_.end()) {
      return router::Acceptance{router::Acceptance::Outcome::Duplicate, it->second, e.agent, "", ""};
    }
    e.id = next_id_++;
    ids_[key] = e.id;
    envelopes_.push_back(e);
    cv_.notify_all();
    return router::Acceptance{router::Acceptance::Outcome::Queued, e.id, e.agent, "", ""};
  }
  std::vector<router::Envelope> envelopes() {
    std::lock_guard lock(mu_);
    return envelopes_;
  }
  // Waits for the n-th (1-based) envelope.
  std::optional<router::Envelope> wait_for(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return envelopes_.size() >= n || stopped_; }) || envelopes_.size() < n)
      return std::nullopt;
    return envelopes_[n - 1];
  }
  void stop() {
    std::lock_guard lock(mu_);
    stopped_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int64_t> ids_;
  std::vector<router::Envelope> envelopes_;
  int64_t next_id_ = 1;
  bool stopped_ = false;
};

}  // namespace moat::testing
