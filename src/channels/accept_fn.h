#pragma once
// How a channel hands an inbound message to the router. Channels take this callback instead of a
// Router& so they can be built and tested without the router's store, and so the daemon decides
// what accepting means (it passes `[&router](Envelope e) { return router.accept(std::move(e)); }`).
#include <functional>
#include <string_view>

#include "base/result.h"
#include "router/envelope.h"
#include "router/router.h"

namespace moat::channels {

using AcceptFn = std::function<Result<router::Acceptance>(router::Envelope)>;

// "queued" | "duplicate" | "held" | "dropped": the wire names channels report to their callers.
// (Kept here rather than calling router::outcome_name so the channels link without the router.)
std::string_view acceptance_outcome(router::Acceptance::Outcome o);

}  // namespace moat::channels
