#pragma once
// The Telegram Bot API stand-in (tests/peers/telegram.mjs) as a process of the test's own: started on
// a free port, driven through its POST /_control/<verb> requests (chat, say, edit, fault, conflict,
// privacy, state), killed when the test ends. What it received is read back with state().
#include <string>

#include "base/json.h"
#include "base/subprocess.h"

namespace moat::testing {

class TelegramPeer {
 public:
  static constexpr const char* kToken = "123456:moat-test-token";
  static constexpr int64_t kBotId = 123456;
  static constexpr const char* kBotUsername = "moat_test_bot";

  TelegramPeer();  // starts it; fails the test (and leaves url() empty) when it cannot
  const std::string& url() const { return url_; }

  // POST /_control/<verb> with `body`; the JSON answer (null when the call failed, which fails the test).
  Json control(const std::string& verb, const Json& body = Json::object()) const;
  Json say(const Json& chat, const std::string& text, const Json& extra = Json::object()) const;
  // {sent: [{chat_id, message_id, text, edits}], actions, pending, deliveries, calls}
  Json state() const { return control("state"); }
  Json sent() const { return state().value("sent", Json::array()); }

 private:
  ChildProcess child_;
  std::string url_;
};

}  // namespace moat::testing
