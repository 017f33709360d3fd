#pragma once
// The writing end of a Server-Sent Events response. Producers (the router's delivery thread, a
// turn's live events) call send() from any thread and never block on the network: chunks are queued
// and the server's loop thread writes them. A client that stops reading is cut off once its queue
// passes `max_pending` bytes rather than growing memory without bound.
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace moat::net {

class EventStream {
 public:
  explicit EventStream(size_t max_pending = 4 << 20) : max_pending_(max_pending) {}

  // Queues raw SSE text. False when the stream is closed (the client went away): drop it.
  bool send(std::string chunk);
  // Convenience: formats one event (`id:` only when non-empty; `data` must not contain newlines —
  // JSON from nlohmann's dump() never does).
  bool send_event(std::string_view event, std::string_view data, std::string_view id = {});
  bool closed() const;
  void close();

  // Server side: `wake` is called (outside the lock) when chunks are waiting; take() empties the queue.
  void set_wake(std::function<void()> wake);
  std::string take();

 private:
  mutable std::mutex mu_;
  std::string pending_;
  std::function<void()> wake_;
  bool closed_ = false;
  size_t max_pending_;
};

}  // namespace moat::net
