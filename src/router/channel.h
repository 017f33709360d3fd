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

// A reply in progress, shown as one platform message that is created once and then edited in place
// at a bounded rate (Channel::preview_interval). The router keeps the preview's state in the store
// (table previews): its platform id is written as soon as the message exists, the turn's final reply
// is delivered by editing that message (Outbound::edit_platform_id), and a preview left open by a
// crash is edited to its last text plus "(interrupted)" when moatd starts again.
struct Preview {
  int64_t id = 0;            // the previews row
  std::string key;           // "p<id>": stable across edits and restarts
  std::string channel, chat, agent;
  std::string text;          // the whole text so far, already cut to the channel's message limit
  std::string platform_id;   // empty: create the message; else edit this one
};

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
  // Called from the turn's thread; must be quick and must not block on the network. A channel that
  // shows a typing indicator starts it on "turn_started" and stops it on "turn_ended".
  virtual void live(const LiveEvent& ev) {}
  // How often a reply in progress may be edited on this platform; zero (the default): this channel
  // shows no previews, and the router never calls preview().
  virtual std::chrono::milliseconds preview_interval() const { return {}; }
  // Creates (p.platform_id empty) or edits the preview message to p.text, from the router's preview
  // thread. Returns the message's platform id. An edit the platform calls "unchanged" is a success.
  // Failures are not retried as such: the next edit carries the newer text.
  virtual DeliveryResult preview(const Preview& p) {
    return delivery_failed(Error{ErrorKind::Unavailable, fmt::format("channel {} shows no previews", name())});
  }
};

}  // namespace moat::router
