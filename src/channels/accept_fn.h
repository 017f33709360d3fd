#pragma once
// How a channel hands an inbound message to the router. Channels take this callback instead of a
// Router& so they can be built and tested without the router's store, and so the daemon decides
// what accepting means (it passes `[&router](Envelope e) { return router.accept(std::move(e)); }`).
#include <functional>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "base/result.h"
#include "router/envelope.h"
#include "router/router.h"

namespace moat::channels {

using AcceptFn = std::function<Result<router::Acceptance>(router::Envelope)>;

// For a channel that pulls from a platform: Router::accept_with_cursor (the envelopes and the channel's
// cursor in one transaction) and Router::channel_cursor; and the bot token, read from the vault's
// channel secret whenever the channel (re)connects. (telegram_channel.h declares the same aliases.)
using AcceptBatchFn = std::function<Result<std::vector<Result<router::Acceptance>>>(std::vector<router::Envelope>,
                                                                                  router::ChannelCursor)>;
using CursorFn = std::function<Result<std::optional<Json>>()>;
using TokenFn = std::function<Result<std::string>()>;

// "queued" | "duplicate" | "held" | "dropped": the wire names channels report to their callers.
// (Kept here rather than calling router::outcome_name so the channels link without the router.)
std::string_view acceptance_outcome(router::Acceptance::Outcome o);

}  // namespace moat::channels
