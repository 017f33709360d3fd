// `moat channel add|rm` against a real moatd: a Telegram channel added at run time connects at once
// (through the Bot API stand-in) and answers, is still there after a restart, and goes away with rm
// (its undelivered replies wait); bad settings are refused naming the key with nothing stored; a
// channel moat.toml declares cannot be removed or added over.
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

Json status_of(const MoatEnv& env, const std::string& name) {
  auto r = env.moat({"--json", "channel", "status", name});
  auto j = Json::parse(r.out, nullptr, false);
  return j.is_discarded() ? Json{{"cli_failed", r.err}} : j;
}

std::vector<std::string> names(const MoatEnv& env) {
  std::vector<std::string> out;
  for (auto& c : Json::parse(env.ok({"--json", "channel", "ls"}))) out.push_back(c["name"]);
  return out;
}

TEST(ChannelAdmin, ATelegramChannelAddedAtRunTimeAnswersSurvivesARestartAndIsRemoved) {
  MOAT_REQUIRE_ROOT();
  TelegramPeer peer;
  ASSERT_FALSE(peer.url().empty());
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("echo: " + r.last_user_text()); });
  MoatEnv env(fmt::format("[agents.assistant]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                          "base_url = \"{}\" }}\nchats = [\"telegram:*\"]\n",
                          model.anthropic_base_url()));
  env.ok({"secret", "set", "model-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "k");
  env.ok({"secret", "set", "tg-bot", "--channel"}, TelegramPeer::kToken);
  EXPECT_EQ(names(env), (std::vector<std::string>{"terminal", "web", "webhook"}));

  // Bad settings: refused naming what is wrong; nothing stored, nothing started.
  auto typo = env.moat({"channel", "add", "telegram", "--token-secret", "tg-bot", "--set", "pol_timeout=1s"});
  EXPECT_NE(typo.code, 0);
  EXPECT_NE(typo.err.find("pol_timeout"), std::string::npos) << typo.err;
  auto kind = env.moat({"channel", "add", "irc", "--token-secret", "x"});
  EXPECT_NE(kind.code, 0);
  EXPECT_EQ(names(env).size(), 3u);

  Json added = Json::parse(env.ok({"--json", "channel", "add", "telegram", "--token-secret", "tg-bot", "--api-base",
                                   peer.url(), "--poll-timeout", "1s"}));
  EXPECT_EQ(added["name"], "telegram");
  ASSERT_TRUE(wait_until([&] { return status_of(env, "telegram").value("state", "") == "connected"; }, 60s))
      << status_of(env, "telegram").dump();
  const Json dm = {{"id", 4242}, {"type", "private"}, {"first_name", "Ada"}};
  peer.say(dm, "hello after add");
  ASSERT_TRUE(wait_until([&] { return peer.sent().size() >= 1; }, 60s, 100ms)) << peer.state().dump();
  auto again = env.moat({"channel", "add", "telegram", "--token-secret", "tg-bot"});
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.err.find("moat channel rm telegram"), std::string::npos) << again.err;

  // A restart keeps it.
  env.kill_daemon(SIGKILL);
  env.start_daemon();
  ASSERT_TRUE(wait_until([&] { return status_of(env, "telegram").value("state", "") == "connected"; }, 60s))
      << status_of(env, "telegram").dump();

  // Removed: gone from ls, no more polling; what is said meanwhile waits at Telegram.
  env.ok({"channel", "rm", "telegram"});
  EXPECT_EQ(names(env).size(), 3u);
  EXPECT_NE(env.moat({"channel", "rm", "telegram"}).code, 0);
  size_t sent_before = peer.sent().size();
  peer.say(dm, "while removed");
  // Back: the message said meanwhile is answered.
  env.ok({"channel", "add", "telegram", "--token-secret", "tg-bot", "--api-base", peer.url(), "--poll-timeout", "1s"});
  ASSERT_TRUE(wait_until([&] { return peer.sent().size() > sent_before; }, 60s, 100ms)) << peer.state().dump();
  EXPECT_NE(peer.sent().back()["text"].get<std::string>().find("while removed"), std::string::npos);
  auto records = env.ok({"audit", "export"});
  EXPECT_NE(records.find("channel.add"), std::string::npos);
  EXPECT_NE(records.find("channel.rm"), std::string::npos);
}

TEST(ChannelAdmin, AChannelDeclaredInMoatTomlIsTheFiles) {
  MOAT_REQUIRE_ROOT();
  MoatEnv env("[channels.telegram]\ntoken_secret = \"tg-bot\"\napi_base = \"http://127.0.0.1:9\"\n");
  auto rm = env.moat({"channel", "rm", "telegram"});
  EXPECT_NE(rm.code, 0);
  EXPECT_NE(rm.err.find("moat.toml"), std::string::npos) << rm.err;
  auto add = env.moat({"channel", "add", "telegram", "--token-secret", "other"});
  EXPECT_NE(add.code, 0);
  EXPECT_NE(add.err.find("moat.toml"), std::string::npos) << add.err;
}

}  // namespace
}  // namespace moat::testing
