#pragma once
// The API verbs of the channels: what each is doing, for `moat channel ls|status`.
//   channel.ls     {}      -> [ChannelStatus JSON], every channel moatd runs (built-in ones first)
//   channel.status {name}  -> ChannelStatus JSON; NotFound for a channel moatd does not run
// ChannelStatus JSON (channels/channel_status.h): {name, kind, state, connected, identity, last_error,
// last_error_at_ms, connected_since_ms, lag_ms, in_today, out_today}; in/out count since 00:00 UTC,
// from the store (so they survive restarts).
#include <functional>
#include <vector>

#include "api/server.h"
#include "channels/channel_status.h"
#include "router/router.h"

namespace moat {

using ChannelStatusesFn = std::function<std::vector<channels::ChannelStatus>()>;

// The router and whatever `statuses` captures must outlive the server.
void register_channel_verbs(api::Server& server, router::Router& router, ChannelStatusesFn statuses);

}  // namespace moat
