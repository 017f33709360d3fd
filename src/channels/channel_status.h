#pragma once
// What `moat channel ls|status` shows of a channel: whether it is connected to its platform, the last
// error in words, how far behind it is, and its traffic today. Every channel reports one; the built-in
// ones (terminal, web, webhook) have no platform connection and are always "serving".
#include <cstdint>
#include <string>
#include <string_view>

#include "base/json.h"

namespace moat::channels {

enum class ChannelState {
  Serving,     // built in (terminal, web chat, webhook): nothing to connect to
  Starting,    // not yet through to its platform (asking who the bot is)
  Connected,   // polling (or connected) and taking messages
  Retrying,    // the last call failed (network, 5xx, 429); trying again with backoff
  Conflict,    // the platform says another client holds the connection (Telegram's 409)
  Failed,      // the platform refused the credentials, or the config is wrong: the owner must act
  Stopped,
};
std::string_view channel_state_name(ChannelState s);  // "serving", "starting", "connected", ...

struct ChannelStatus {
  std::string name;    // "telegram"
  std::string kind;    // "telegram", "built-in"
  ChannelState state = ChannelState::Serving;
  std::string identity;  // who the channel is on its platform ("@moat_bot"), when known
  std::string last_error;  // the latest failure in words, with what to do (kept after recovery: see state)
  int64_t last_error_ms = 0;
  int64_t connected_since_ms = 0;  // since the last failure-free call; 0 while not connected
  // How far behind the platform the channel is: for the latest update it stored, the time from when the
  // platform stamped it (1 s resolution on Telegram) to when it was durable. -1 when none yet.
  int64_t lag_ms = -1;
  // Messages taken in (accepted, not counting repeats) and delivered out, since 00:00 UTC.
  uint64_t in_today = 0, out_today = 0;

  bool connected() const { return state == ChannelState::Connected || state == ChannelState::Serving; }
};

Json channel_status_to_json(const ChannelStatus& s);

}  // namespace moat::channels
