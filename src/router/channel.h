#pragma once
// What the router needs of a channel adapter: durable delivery of outbox messages, and (best effort)
// live events of a turn in progress. Inbound messages reach the router by Router::accept().
#include <chrono>
#include <expected>
#include <string>
#include <string_view>

#include "base/result.h"
#include "router/envelope.h"
#include "router/split.h"

namespace moat::router {

// What a delivery gave: the platform's id for the message it made (empty for a channel without one),
// kept with the outbox row so a later delivery can edit it and a crash can look for it.
struct Delivered {
  std::string platform_id;
};
// Why a delivery failed, and how long the platform said to wait before the next try (0: the router's
// own backoff). The channel follows the platform's rate limits; the router only schedules the retry.
struct DeliveryFailure {
  Error error;
  std::chrono::milliseconds retry_after{0};
};
using DeliveryResult = std::expected<Delivered, DeliveryFailure>;

inline std::unexpected<DeliveryFailure> delivery_failed(Error error, std::chrono::milliseconds retry_after = {}) {
  return std::unexpected(DeliveryFailure{std::move(error), retry_after});
}
// A channel's Status as a delivery without a platform id.
inline DeliveryResult delivered_if(const Status& s) {
  if (!s) return delivery_failed(s.error());
  return Delivered{};
}

class Channel {
 public:
  virtual ~Channel() = default;
  virtual std::string_view name() const = 0;
  // Called from the router's delivery thread, in outbox order per chat, until it succeeds (with
  // backoff). The same message may come again after a crash: drop a repeat by msg.key.
  // Return an error only for a failure worth retrying; InvalidInput/NotFound mean "never deliverable"
  // and the row is marked failed instead. A retry_after on the failure replaces the router's backoff.
  virtual DeliveryResult deliver(const Outbound& msg) = 0;
  // How long a message may be on this channel's platform; a longer reply is delivered in parts, each
  // under its own key (router/split.h). No limit by default.
  virtual MessageLimit message_limit() const { return {}; }
  // Called from the turn's thread; must be quick and must not block on the network.
  virtual void live(const LiveEvent& ev) {}
};

}  // namespace moat::router
