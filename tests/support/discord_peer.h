#pragma once
// The Discord REST + Gateway stand-in (tests/peers/discord.mjs) as a process of the test's own: started
// on a free port, driven through its POST /_control/<verb> requests (channel, guild, say, drop,
// reconnect, invalidate, close, fault, acks, options, state), killed when the test ends.
// (The process handling is the same as TelegramPeer's; the two can share it once that file is free.)
#include <string>

#include "base/json.h"
#include "base/subprocess.h"

namespace moat::testing {

class DiscordPeer {
 public:
  static constexpr const char* kToken = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.moat.discord-test-token";
  static constexpr const char* kBotId = "1100000000000000001";

  DiscordPeer();  // starts it; fails the test (and leaves url() empty) when it cannot
  // "http://127.0.0.1:PORT": the REST API is at url() + "/api/v10".
  const std::string& url() const { return url_; }
  std::string api_base() const { return url_ + "/api/v10"; }

  Json control(const std::string& verb, const Json& body = Json::object()) const;
  // {sent: [{id, channel_id, content, nonce, edits}], typing, typingIn, identifies, resumes, connected}
  Json state() const { return control("state"); }
  Json sent() const { return state().value("sent", Json::array()); }

 private:
  ChildProcess child_;
  std::string url_;
};

}  // namespace moat::testing
