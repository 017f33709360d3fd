// The Telegram channel in a real moatd: [channels.telegram] with the bot token as a channel secret,
// the Bot API stand-in (tests/peers/telegram.mjs) started by the test, and an agent whose model is the
// provider double. A person's direct message is answered, a group only when the bot is addressed; a
// wrong token is a failed status naming the fix while the terminal keeps answering, and storing the
// right one connects without a restart; `moat channel ls|status` say so; messages that arrive while
// moatd is killed (-9) are answered once after it comes back.
#include <gtest/gtest.h>
#include <signal.h>

#include "base/json.h"
#include "support/moat_env.h"
#include "support/provider_double.h"
#include "support/telegram_peer.h"
#include "support/wait.h"

namespace moat::testing {
namespace {

using namespace std::chrono_literals;

const Json kDm = {{"id", 1001}, {"type", "private"}, {"first_name", "Ada"}};
const Json kGroup = {{"id", -2002}, {"type", "supergroup"}, {"title", "team"}};

std::vector<std::string> sent_to(const TelegramPeer& peer, int64_t chat) {
  std::vector<std::string> out;
  for (auto& m : peer.sent())
    if (m["chat_id"] == chat) out.push_back(m["text"].get<std::string>());
  return out;
}

Json channel_status(const MoatEnv& env) {
  auto r = env.moat({"--json", "channel", "status", "telegram"});
  auto j = Json::parse(r.out, nullptr, false);
  return j.is_discarded() ? Json{{"cli_failed", r.err}} : j;
}

TEST(TelegramChannelDaemon, AnAgentAnswersDirectMessagesAndAddressedGroupMessagesThroughMoatd) {
  MOAT_REQUIRE_ROOT();
  TelegramPeer peer;
  ASSERT_FALSE(peer.url().empty());
  peer.control("privacy", {{"on", false}});
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("echo: " + r.last_user_text()); });
  MoatEnv env(fmt::format("[channels.telegram]\ntoken_secret = \"tg-bot\"\napi_base = \"{}\"\npoll_timeout = \"1s\"\n"
                          "[agents.assistant]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                          "base_url = \"{}\" }}\nchats = [\"telegram:*\"]\n",
                          peer.url(), model.anthropic_base_url()));
  env.ok({"secret", "set", "model-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "k");

  // No token yet: failed, saying how to store one; a channel token cannot be given a destination.
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "failed"; }, 20s)) << channel_status(env).dump();
  EXPECT_NE(channel_status(env)["last_error"].get<std::string>().find("moat secret set tg-bot --channel"), std::string::npos)
      << channel_status(env).dump();
  auto bound = env.moat({"secret", "set", "tg-bot", "--channel", "--host", "api.telegram.org"}, TelegramPeer::kToken);
  EXPECT_NE(bound.code, 0);
  EXPECT_NE(bound.err.find("never injected into a sandbox's traffic"), std::string::npos) << bound.err;

  // A wrong token: failed with the fix, while the terminal channel answers.
  env.ok({"secret", "set", "tg-bot", "--channel"}, "123456:wrong-token-value");
  ASSERT_TRUE(wait_until([&] {
    return channel_status(env).value("last_error", "").find("refused the bot token") != std::string::npos;
  }, 30s)) << channel_status(env).dump();
  Json failed = channel_status(env);
  EXPECT_EQ(failed["state"], "failed");
  EXPECT_FALSE(failed["connected"].get<bool>());
  EXPECT_EQ(failed.dump().find("wrong-token-value"), std::string::npos) << failed.dump();
  EXPECT_NE(env.ok({"chat", "assistant", "-m", "terminal still works?"}).find("echo:"), std::string::npos);

  // The right token: connected without a restart.
  env.ok({"secret", "set", "tg-bot", "--channel"}, TelegramPeer::kToken);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 90s))
      << channel_status(env).dump();
  EXPECT_EQ(channel_status(env)["identity"], "@moat_test_bot");

  peer.say(kDm, "hello from a direct message");
  peer.say(kGroup, "people talking among themselves");
  peer.say(kGroup, "@moat_test_bot what do you think?");
  ASSERT_TRUE(wait_until([&] { return peer.sent().size() >= 2; }, 90s, 100ms)) << peer.state().dump();
  auto dm = sent_to(peer, 1001);
  auto group = sent_to(peer, -2002);
  ASSERT_EQ(dm.size(), 1u);
  EXPECT_NE(dm[0].find("hello from a direct message"), std::string::npos) << dm[0];
  ASSERT_EQ(group.size(), 1u);
  EXPECT_NE(group[0].find("what do you think?"), std::string::npos) << group[0];

  // ls and status say the same, with today's traffic.
  Json ls = Json::parse(env.ok({"--json", "channel", "ls"}));
  std::vector<std::string> names;
  for (auto& c : ls) names.push_back(c["name"].get<std::string>());
  EXPECT_EQ(names, (std::vector<std::string>{"terminal", "web", "webhook", "telegram"}));
  Json st = channel_status(env);
  EXPECT_EQ(st["state"], "connected");
  EXPECT_EQ(st["in_today"], 2);  // the unaddressed group message is not stored
  EXPECT_GE(st["out_today"].get<int>(), 2);
  EXPECT_GE(st["lag_ms"].get<int64_t>(), 0);
  EXPECT_NE(env.ok({"channel", "ls"}).find("telegram"), std::string::npos);
  EXPECT_NE(env.moat({"channel", "status", "discord"}).code, 0);

  // moatd killed: what is said meanwhile is answered once when it is back.
  env.kill_daemon(SIGKILL);
  peer.say(kDm, "are you there after the crash?");
  peer.say(kDm, "and this one?");
  env.start_daemon();
  ASSERT_TRUE(wait_until([&] {
    std::string all;
    for (auto& t : sent_to(peer, 1001)) all += t;
    return all.find("and this one?") != std::string::npos;
  }, 90s, 100ms)) << peer.state().dump();
  ASSERT_TRUE(wait_until([&] { return peer.state()["pending"] == 0; }, 10s));
  auto after = sent_to(peer, 1001);
  std::string joined;
  for (auto& t : after) joined += t + "\n";
  EXPECT_EQ(std::count(after.begin(), after.end(), after.back()), 1) << joined;
  EXPECT_EQ(joined.find("after the crash?"), joined.rfind("after the crash?")) << "answered twice: " << joined;
  EXPECT_EQ(joined.find("and this one?"), joined.rfind("and this one?")) << "answered twice: " << joined;
}

}  // namespace
}  // namespace moat::testing
