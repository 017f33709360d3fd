#include "channels/channel_status.h"

namespace moat::channels {

std::string_view channel_state_name(ChannelState s) {
  switch (s) {
    case ChannelState::Serving: return "serving";
    case ChannelState::Starting: return "starting";
    case ChannelState::Connected: return "connected";
    case ChannelState::Retrying: return "retrying";
    case ChannelState::Conflict: return "conflict";
    case ChannelState::Failed: return "failed";
    case ChannelState::Stopped: return "stopped";
  }
  return "unknown";
}

Json channel_status_to_json(const ChannelStatus& s) {
  return Json{{"name", s.name},
              {"kind", s.kind},
              {"state", channel_state_name(s.state)},
              {"connected", s.connected()},
              {"identity", s.identity},
              {"last_error", s.last_error},
              {"last_error_at_ms", s.last_error_ms},
              {"connected_since_ms", s.connected_since_ms},
              {"lag_ms", s.lag_ms},
              {"in_today", s.in_today},
              {"out_today", s.out_today}};
}

}  // namespace moat::channels
