#pragma once
// What the router needs of a channel adapter: durable delivery of outbox messages, and (best effort)
// live events of a turn in progress. Inbound messages reach the router by Router::accept().
#include <string_view>

#include "base/result.h"
#include "router/envelope.h"

namespace moat::router {

class Channel {
 public:
  virtual ~Channel() = default;
  virtual std::string_view name() const = 0;
  // Called from the router's delivery thread, in outbox order per chat, until it succeeds (with
  // backoff). The same message may come again after a crash: drop a repeat by msg.key.
  // Return an error only for a failure worth retrying; InvalidInput/NotFound mean "never deliverable"
  // and the row is marked failed instead.
  virtual Status deliver(const Outbound& msg) = 0;
  // Called from the turn's thread; must be quick and must not block on the network.
  virtual void live(const LiveEvent& ev) {}
};

}  // namespace moat::router
