#pragma once
// The API verbs of the channels: what each is doing, for `moat channel ls|status`.
//   channel.ls     {}      -> [ChannelStatus JSON], every channel moatd runs (built-in ones first)
//   channel.status {name}  -> ChannelStatus JSON; NotFound for a channel moatd does not run
//   channel.add {name, settings: {key: "value"}} -> ChannelStatus JSON of the channel, started at once;
//                  settings are the keys of [channels.NAME] (docs/config.md), checked by the same parser
//   channel.rm {name} -> {name, removed: true}; only channels added with channel.add (moat.toml's are
//                  the file's: the error says so); its undelivered replies wait until it is back
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

// Adding and removing channels at run time: the daemon checks, stores and starts (or stops) them.
struct ChannelAdmin {
  std::function<Result<channels::ChannelStatus>(const std::string& name, const Json& settings, const std::string& actor)> add;
  std::function<Status(const std::string& name, const std::string& actor)> remove;
};

// The router and whatever `statuses` and `admin` capture must outlive the server.
void register_channel_verbs(api::Server& server, router::Router& router, ChannelStatusesFn statuses,
                            ChannelAdmin admin);

}  // namespace moat
