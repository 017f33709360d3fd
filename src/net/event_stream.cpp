#include "net/event_stream.h"

#include <utility>

#include <fmt/format.h>

namespace moat::net {

bool EventStream::send(std::string chunk) {
  std::function<void()> wake;
  {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    if (pending_.size() + chunk.size() > max_pending_) {
      closed_ = true;  // a stuck reader; the server notices on its next wake and hangs up
      wake = wake_;
    } else {
      bool was_empty = pending_.empty();
      pending_ += chunk;
      if (was_empty) wake = wake_;
    }
  }
  if (wake) wake();
  return !closed();
}

bool EventStream::send_event(std::string_view event, std::string_view data, std::string_view id) {
  std::string s;
  if (!id.empty()) s += fmt::format("id: {}\n", id);
  if (!event.empty()) s += fmt::format("event: {}\n", event);
  s += fmt::format("data: {}\n\n", data);
  return send(std::move(s));
}

bool EventStream::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

void EventStream::close() {
  std::function<void()> wake;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    wake = wake_;
  }
  if (wake) wake();
}

void EventStream::set_wake(std::function<void()> wake) {
  bool now;
  {
    std::lock_guard lock(mu_);
    wake_ = wake;
    now = !pending_.empty() || closed_;
  }
  if (now && wake) wake();
}

std::string EventStream::take() {
  std::lock_guard lock(mu_);
  return std::exchange(pending_, {});
}

}  // namespace moat::net
