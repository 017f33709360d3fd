// The Telegram channel in a real moatd: [channels.telegram] with the bot token as a channel secret,
// the Bot API stand-in (tests/peers/telegram.mjs) started by the test, and an agent whose model is the
// provider double. A person's direct message is answered, a group only when the bot is addressed; a
// wrong token is a failed status naming the fix while the terminal keeps answering, and storing the
// right one connects without a restart; `moat channel ls|status` say so; messages that arrive while
// moatd is killed (-9) are answered once after it comes back.
#include <gtest/gtest.h>
#include <signal.h>

#include "base/fs.h"
#include "base/json.h"
#include "store/database.h"
#include "support/moat_env.h"
#include "support/provider_double.h"
#include "support/raw_http.h"
#include "support/scoped_env.h"
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

// moatd with the channel configured and the token stored, answering with "echo: <text>".
std::string telegram_config(const TelegramPeer& peer, const ProviderDouble& model) {
  return fmt::format("[channels.telegram]\ntoken_secret = \"tg-bot\"\napi_base = \"{}\"\npoll_timeout = \"1s\"\n"
                     "[agents.assistant]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                     "base_url = \"{}\" }}\nchats = [\"telegram:*\"]\n",
                     peer.url(), model.anthropic_base_url());
}

void store_secrets(const MoatEnv& env, const ProviderDouble& model) {
  env.ok({"secret", "set", "model-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "k");
  env.ok({"secret", "set", "tg-bot", "--channel"}, TelegramPeer::kToken);
}

int64_t count_rows(const MoatEnv& env, const std::string& sql) {
  auto db = Database::open_reader(env.db_path());  // read-only, beside the running moatd
  if (!db) return -1;
  auto n = db->query_int64(sql);
  return n ? *n : -1;
}

std::string moatd_log(const MoatEnv& env) { return read_file(env.state_dir() / "moatd.log").value_or(""); }

// How many of the bot's messages to the chat contain `text`.
int answers_with(const TelegramPeer& peer, int64_t chat, const std::string& text) {
  int n = 0;
  for (auto& t : sent_to(peer, chat)) n += t.find(text) != std::string::npos;
  return n;
}

// MOAT_CRASH_AT=telegram.fetched: moatd dies after getUpdates brought the messages and before they and
// the new offset are stored. Telegram still holds them (nothing confirmed them): the next moatd fetches
// them again, and each is stored exactly once and answered exactly once.
TEST(TelegramChannelDaemon, KilledBetweenFetchAndStoreEachMessageIsStoredOnceAndAnsweredOnce) {
  MOAT_REQUIRE_ROOT();
  TelegramPeer peer;
  ASSERT_FALSE(peer.url().empty());
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("echo: " + r.last_user_text()); });
  std::optional<ScopedEnv> crash(std::in_place, "MOAT_CRASH_AT", "telegram.fetched");
  MoatEnv env(telegram_config(peer, model));
  store_secrets(env, model);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 60s))
      << channel_status(env).dump();
  peer.say(kDm, "first before the crash");
  ASSERT_TRUE(env.wait_daemon_exit(30s)) << "moatd did not stop at telegram.fetched";
  EXPECT_NE(moatd_log(env).find("MOAT_CRASH_AT reached"), std::string::npos) << moatd_log(env);
  EXPECT_EQ(peer.state()["pending"], 1);  // fetched, never confirmed
  peer.say(kDm, "second, while moatd is down");
  crash.reset();
  env.start_daemon();
  ASSERT_TRUE(wait_until([&] {
    return answers_with(peer, 1001, "first before the crash") >= 1 && answers_with(peer, 1001, "second, while") >= 1;
  }, 90s, 100ms)) << peer.state().dump();
  ASSERT_TRUE(wait_until([&] { return peer.state()["pending"] == 0; }, 10s));
  EXPECT_EQ(count_rows(env, "SELECT count(*) FROM envelopes WHERE channel = 'telegram'"), 2);
  EXPECT_EQ(count_rows(env, "SELECT count(DISTINCT message_id) FROM envelopes WHERE channel = 'telegram'"), 2);
  EXPECT_EQ(answers_with(peer, 1001, "first before the crash"), 1) << peer.sent().dump();
  EXPECT_EQ(answers_with(peer, 1001, "second, while"), 1) << peer.sent().dump();
}

// MOAT_CRASH_AT=router.sent: Telegram took the reply, moatd died before the outbox marked it
// delivered. Telegram has no idempotency key, so the next moatd delivers the reply's last part again:
// at most one repeat, and only of that part. The reply here is two parts (over 4096 UTF-16 units):
// the first edits the turn's preview into its text (repeating an edit changes nothing, and parts
// already recorded as sent are not delivered again), the second is a sendMessage (repeated). The
// test counts the repeats of each (docs/channels.md states the window).
TEST(TelegramChannelDaemon, KilledBetweenSendAndDeliveredMarkAPartIsRepeatedAtMostOnce) {
  MOAT_REQUIRE_ROOT();
  TelegramPeer peer;
  ASSERT_FALSE(peer.url().empty());
  ProviderDouble model({.api_key = "k"});
  std::string tail;
  for (int i = 0; i < 1100; ++i) tail += "tail ";  // 5,500 characters: the reply needs two messages
  model.set_reply_function([&](const ProviderRequest& r) {
    std::string text = r.last_user_text();
    return ScriptedReply::say("echo: " + text + (text.find("across a crash") != std::string::npos ? "\n" + tail : ""));
  });
  std::optional<ScopedEnv> crash(std::in_place, "MOAT_CRASH_AT", "router.sent");
  MoatEnv env(telegram_config(peer, model));
  store_secrets(env, model);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 60s))
      << channel_status(env).dump();
  // Messages of the bot that begin with the reply's second part.
  auto second_parts = [&] {
    int n = 0;
    for (auto& t : sent_to(peer, 1001)) n += t.starts_with("tail ");
    return n;
  };
  peer.say(kDm, "answer me across a crash");
  ASSERT_TRUE(env.wait_daemon_exit(60s)) << "moatd did not stop at router.sent";
  EXPECT_NE(moatd_log(env).find("MOAT_CRASH_AT reached"), std::string::npos) << moatd_log(env);
  EXPECT_EQ(answers_with(peer, 1001, "answer me across a crash"), 1);  // both parts went out before the kill
  EXPECT_EQ(second_parts(), 1);
  crash.reset();
  env.start_daemon();
  peer.say(kDm, "and after it");
  ASSERT_TRUE(wait_until([&] { return answers_with(peer, 1001, "and after it") >= 1; }, 90s, 100ms)) << peer.state().dump();
  ASSERT_TRUE(wait_until([&] { return count_rows(env, "SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 2; }, 10s));
  int first_repeats = answers_with(peer, 1001, "answer me across a crash") - 1;
  int second_repeats = second_parts() - 1;
  fmt::print("telegram: repeats after a kill at router.sent (1 crash, a 2-part reply): part 1 (edited preview) {}, "
             "part 2 (sendMessage) {}\n",
             first_repeats, second_repeats);
  EXPECT_EQ(first_repeats, 0) << peer.sent().dump();
  EXPECT_LE(second_repeats, 1) << peer.sent().dump();
  EXPECT_EQ(answers_with(peer, 1001, "and after it"), 1);
}

// Webhook mode in moatd: it sets the webhook (with its secret) at start, serves the path on its [web]
// listener, and answers what Telegram delivers there; a forged secret token is 401 and stores nothing.
TEST(TelegramChannelDaemon, WebhookModeServesThePathOnTheWebListenerAndRefusesForgedDeliveries) {
  MOAT_REQUIRE_ROOT();
  TelegramPeer peer;
  ASSERT_FALSE(peer.url().empty());
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("echo: " + r.last_user_text()); });
  uint16_t port = free_loopback_port();
  std::string hook = fmt::format("http://127.0.0.1:{}/telegram/webhook", port);
  // The telegram table's keys go before the next table's header.
  std::string toml = telegram_config(peer, model);
  toml.insert(toml.find("[agents."), fmt::format("mode = \"webhook\"\nwebhook_url = \"{}\"\n", hook));
  MoatEnv env(toml + fmt::format("[web]\nlisten = \"127.0.0.1:{}\"\n", port));
  store_secrets(env, model);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 60s))
      << channel_status(env).dump();
  EXPECT_EQ(peer.state()["webhook"]["url"], hook);
  EXPECT_EQ(channel_status(env)["identity"].get<std::string>().find("@moat_test_bot via webhook " + hook), 0u)
      << channel_status(env).dump();

  peer.say(kDm, "hello through the webhook");
  ASSERT_TRUE(wait_until([&] { return answers_with(peer, 1001, "hello through the webhook") == 1; }, 60s, 100ms))
      << peer.state().dump();
  auto r = http_call(port, "POST", "/telegram/webhook",
                     {{"Content-Type", "application/json"}, {"X-Telegram-Bot-Api-Secret-Token", "guessed"}},
                     Json{{"update_id", 5},
                          {"message",
                           {{"message_id", 9},
                            {"date", 1700000000},
                            {"chat", kDm},
                            {"from", {{"id", 42}, {"is_bot", false}, {"first_name", "Eve"}}},
                            {"text", "a forged update"}}}}
                         .dump());
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_EQ(count_rows(env, "SELECT count(*) FROM envelopes WHERE channel = 'telegram'"), 1);
  EXPECT_EQ(channel_status(env)["state"], "connected");
}

}  // namespace
}  // namespace moat::testing
