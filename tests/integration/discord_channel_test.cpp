// The Discord channel: in a real moatd ([channels.discord] with the bot token as a channel secret, the
// REST + Gateway stand-in tests/peers/discord.mjs started by the test, an agent whose model is the
// provider double), and on its own against the stand-in for the outbound paths (previews, rate-limit
// buckets, typing). A DM is always answered, a guild message only when the bot is addressed (a
// mention, a mention of one of its roles, a reply to it); the Gateway's failures — a dropped
// connection, withheld heartbeat ACKs, op 7, op 9 — lose nothing; fatal closes (4004, 4014) are a
// failed status with the fix and no reconnect loop while the terminal keeps answering; a 429's
// retry_after is honoured; long replies arrive split in order; moatd killed at discord.dispatched
// and at router.sent loses nothing and sends nothing twice (nonce).
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "base/json.h"
#include "channels/discord/discord_channel.h"
#include "store/attachment_stage.h"
#include "support/discord_peer.h"
#include "support/moat_env.h"
#include "support/provider_double.h"
#include "support/temp_dir.h"
#include "support/wait.h"

namespace moat::testing {
namespace {

using namespace std::chrono_literals;

const std::string kGuild = "4400000000000000004";
const std::string kGuildChannel = "3300000000000000003";
const std::string kDmChannel = "3300000000000000005";
const std::string kBotRole = "5500000000000000005";
const Json kAda = {{"id", "2200000000000000002"}, {"username", "ada"}, {"discriminator", "0"}, {"global_name", "Ada"}};

// What the bot said in `channel`, in order (the final text of each message).
std::vector<std::string> sent_to(const DiscordPeer& peer, const std::string& channel) {
  std::vector<std::string> out;
  for (auto& m : peer.sent())
    if (m["channel_id"] == channel) out.push_back(m["content"].get<std::string>());
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string all;
  for (auto& t : v) all += t + "\n";
  return all;
}

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

Json say(const DiscordPeer& peer, const std::string& channel, const std::string& text, Json extra = Json::object()) {
  extra["channel"] = Json{{"id", channel}};
  extra["content"] = text;
  extra["author"] = kAda;
  return peer.control("say", extra);
}

Json channel_status(const MoatEnv& env) {
  auto r = env.moat({"--json", "channel", "status", "discord"});
  auto j = Json::parse(r.out, nullptr, false);
  return j.is_discarded() ? Json{{"cli_failed", r.err}} : j;
}

// A stand-in with a guild (the bot holds kBotRole there), a guild text channel and a DM channel.
void set_up_platform(const DiscordPeer& peer) {
  peer.control("channel", {{"id", kGuildChannel}, {"type", 0}, {"guild_id", kGuild}});
  peer.control("channel", {{"id", kDmChannel}, {"type", 1}});
  peer.control("guild", {{"id", kGuild}, {"botRoles", {kBotRole}}});
}

std::string config_for(const DiscordPeer& peer, const ProviderDouble& model) {
  return fmt::format("[channels.discord]\ntoken_secret = \"discord-bot\"\napi_base = \"{}\"\n"
                     "[agents.assistant]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                     "base_url = \"{}\" }}\nchats = [\"discord:*\"]\n",
                     peer.api_base(), model.anthropic_base_url());
}

void echo_model(ProviderDouble& model) {
  model.set_reply_function([](const ProviderRequest& r) {
    std::string said = r.last_user_text();
    if (said.find("a long answer") != std::string::npos) {
      // 5,000 characters, 2-byte ones among them: split by code points, in order, with markers.
      std::string text;
      for (int i = 0; i < 625; ++i) text += fmt::format("[{:04}]é-", i);  // 8 characters each
      return ScriptedReply::say(text);
    }
    return ScriptedReply::say("echo: " + said);
  });
}

void store_keys(const MoatEnv& env, const ProviderDouble& model, const std::string& token) {
  env.ok({"secret", "set", "model-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "k");
  env.ok({"secret", "set", "discord-bot", "--channel"}, token);
}

bool answered(const DiscordPeer& peer, const std::string& channel, const std::string& text) {
  return joined(sent_to(peer, channel)).find(text) != std::string::npos;
}

TEST(DiscordChannelDaemon, AnAgentAnswersDmsAlwaysAndGuildMessagesOnlyWhenAddressed) {
  MOAT_REQUIRE_ROOT();
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  ProviderDouble model({.api_key = "k"});
  echo_model(model);
  MoatEnv env(config_for(peer, model));
  store_keys(env, model, DiscordPeer::kToken);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 30s))
      << channel_status(env).dump();
  EXPECT_EQ(channel_status(env)["identity"], fmt::format("@moat-bot ({})", DiscordPeer::kBotId));

  say(peer, kDmChannel, "hello from a DM");
  say(peer, kGuildChannel, "people talking among themselves");
  say(peer, kGuildChannel, "<@1100000000000000001> what do you think?", {{"mentionBot", true}});
  say(peer, kGuildChannel, "<@&5500000000000000005> role, are you there?", {{"mentionRoles", {kBotRole}}});
  say(peer, kGuildChannel, "someone else's role", {{"mentionRoles", {"5500000000000000099"}}});
  ASSERT_TRUE(wait_until([&] { return answered(peer, kGuildChannel, "role, are you there?"); }, 90s, 100ms))
      << peer.state().dump();
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "hello from a DM"); }, 30s, 100ms)) << peer.state().dump();
  // A reply to the bot's message addresses it without a mention.
  std::string bots_message;
  for (auto& m : peer.sent())
    if (m["channel_id"] == kGuildChannel) bots_message = m["id"];
  say(peer, kGuildChannel, "replying to you", {{"replyTo", bots_message}});
  ASSERT_TRUE(wait_until([&] { return answered(peer, kGuildChannel, "replying to you"); }, 60s, 100ms))
      << peer.state().dump();
  std::string guild = joined(sent_to(peer, kGuildChannel));
  EXPECT_NE(guild.find("what do you think?"), std::string::npos) << guild;
  EXPECT_EQ(guild.find("among themselves"), std::string::npos) << guild;
  EXPECT_EQ(guild.find("someone else's role"), std::string::npos) << guild;
  // Each reply was previewed while it streamed: one message, made with the preview's key as nonce
  // ("p<id>") and edited into the final text by the outbox's delivery; no second message beneath it.
  int previews = 0;
  for (auto& m : peer.sent()) {
    std::string nonce = m.value("nonce", "");
    ASSERT_FALSE(nonce.empty()) << m.dump();
    if (nonce[0] == 'p') {
      ++previews;
      EXPECT_FALSE(m["edits"].empty()) << "a preview left as it was: " << m.dump();
    } else {
      EXPECT_EQ(nonce[0], 'o') << m.dump();
    }
  }
  EXPECT_GE(previews, 3);  // the DM, the guild (its two addressed messages may be one turn), the reply

  // A 429 with retry_after: the reply waits it out and arrives once.
  peer.control("fault", {{"route", "POST /channels/:id/messages"}, {"times", 1}, {"retry_after", 1.5}});
  auto t0 = std::chrono::steady_clock::now();
  say(peer, kDmChannel, "after a rate limit");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "after a rate limit"); }, 60s, 50ms)) << peer.state().dump();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1500ms);
  EXPECT_EQ(count_of(joined(sent_to(peer, kDmChannel)), "after a rate limit"), 1u);

  // 5,000 characters (two-byte ones among them) arrive as three messages of at most 2,000, in order.
  size_t before = sent_to(peer, kDmChannel).size();
  say(peer, kDmChannel, "a long answer, please");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "[0624]"); }, 60s, 100ms)) << peer.state().dump();
  auto dm = sent_to(peer, kDmChannel);
  ASSERT_EQ(dm.size(), before + 3);
  std::string whole;
  for (size_t i = before; i < dm.size(); ++i) {
    size_t points = 0;
    for (unsigned char c : dm[i]) points += (c & 0xC0) != 0x80;
    EXPECT_LE(points, 2000u) << "part " << i - before;
    whole += dm[i];
  }
  std::string expected;
  for (int i = 0; i < 625; ++i) expected += fmt::format("[{:04}]é-", i);
  EXPECT_EQ(whole, expected);

  // ls and status.
  Json ls = Json::parse(env.ok({"--json", "channel", "ls"}));
  std::vector<std::string> names;
  for (auto& c : ls) names.push_back(c["name"].get<std::string>());
  EXPECT_EQ(names, (std::vector<std::string>{"terminal", "web", "webhook", "discord"}));
  Json st = channel_status(env);
  EXPECT_EQ(st["state"], "connected");
  EXPECT_EQ(st["kind"], "discord");
  EXPECT_EQ(st["in_today"], 6);  // the two unaddressed guild messages are not stored
  EXPECT_GE(st["out_today"].get<int>(), 5);  // six messages; the two guild mentions may share a turn
  EXPECT_GE(st["lag_ms"].get<int64_t>(), 0);
  EXPECT_EQ(st.dump().find(DiscordPeer::kToken), std::string::npos);
  EXPECT_GE(peer.state()["typing"].get<int>(), 1);  // typing shown while turns ran
}

TEST(DiscordChannelDaemon, DropsMissedAcksOp7AndOp9LoseNothing) {
  MOAT_REQUIRE_ROOT();
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  // A short heartbeat so that a withheld ACK shows within seconds (the stand-in closes a connection
  // silent for 1.5 intervals: 1 s leaves a loaded machine half a second of slack).
  peer.control("options", {{"heartbeatInterval", 1000}});
  ProviderDouble model({.api_key = "k"});
  echo_model(model);
  MoatEnv env(config_for(peer, model));
  store_keys(env, model, DiscordPeer::kToken);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 30s))
      << channel_status(env).dump();
  say(peer, kDmChannel, "first");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "first"); }, 60s, 100ms)) << peer.state().dump();

  // 1006 (no close frame): what is said while the connection is down comes with the RESUME.
  peer.control("drop");
  say(peer, kDmChannel, "said while dropped");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "said while dropped"); }, 60s, 100ms)) << peer.state().dump();
  EXPECT_GE(peer.state()["resumes"].get<int>(), 1);

  // Heartbeat ACKs withheld: the channel sees a dead connection, closes it and resumes.
  int resumes = peer.state()["resumes"];
  peer.control("acks", {{"on", false}});
  ASSERT_TRUE(wait_until([&] { return peer.state()["resumes"].get<int>() > resumes; }, 20s, 50ms)) << peer.state().dump();
  peer.control("acks", {{"on", true}});
  say(peer, kDmChannel, "after the zombie");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "after the zombie"); }, 60s, 100ms)) << peer.state().dump();

  // Op 7: reconnect and resume.
  resumes = peer.state()["resumes"];
  peer.control("reconnect");
  say(peer, kDmChannel, "around op 7");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "around op 7"); }, 60s, 100ms)) << peer.state().dump();
  EXPECT_GT(peer.state()["resumes"].get<int>(), resumes);

  // Op 9 (not resumable): what is said before the new session exists reaches no session; the channel
  // identifies again and fetches it with GET /channels/{id}/messages?after=.
  int identifies = peer.state()["identifies"];
  peer.control("invalidate", {{"resumable", false}});
  say(peer, kDmChannel, "in the gap one");
  say(peer, kGuildChannel, "<@1100000000000000001> in the gap two", {{"mentionBot", true}});
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "in the gap one"); }, 60s, 100ms)) << peer.state().dump();
  ASSERT_TRUE(wait_until([&] { return answered(peer, kGuildChannel, "in the gap two"); }, 60s, 100ms))
      << peer.state().dump();
  // One new session (more only if a loaded machine missed a heartbeat: the stand-in then ends the session).
  EXPECT_GE(peer.state()["identifies"].get<int>(), identifies + 1);

  // Nothing answered twice.
  std::string dm = joined(sent_to(peer, kDmChannel));
  for (auto* t : {"Ada: first", "said while dropped", "after the zombie", "around op 7", "in the gap one"})
    EXPECT_EQ(count_of(dm, t), 1u) << t << " in\n" << dm;
  EXPECT_EQ(channel_status(env)["state"], "connected");
}

TEST(DiscordChannelDaemon, FatalClosesAreAFailedStatusWithTheFixAndNoReconnectLoop) {
  MOAT_REQUIRE_ROOT();
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  ProviderDouble model({.api_key = "k"});
  echo_model(model);
  MoatEnv env(config_for(peer, model));
  // A token Discord refuses: REST says 401 before the Gateway would say 4004.
  store_keys(env, model, "MTEw.wrong.token-value");
  ASSERT_TRUE(wait_until([&] {
    return channel_status(env).value("last_error", "").find("Discord refused the bot token") != std::string::npos;
  }, 30s)) << channel_status(env).dump();
  EXPECT_EQ(channel_status(env)["state"], "failed");
  Json failed = channel_status(env);
  EXPECT_NE(failed["last_error"].get<std::string>().find("moat secret set discord-bot --channel"), std::string::npos)
      << failed.dump();
  EXPECT_EQ(failed.dump().find("wrong.token-value"), std::string::npos) << failed.dump();
  EXPECT_NE(env.ok({"chat", "assistant", "-m", "terminal still works?"}).find("echo:"), std::string::npos);

  // The right token: connected without a restart. Then the Gateway itself closes with 4004.
  env.ok({"secret", "set", "discord-bot", "--channel"}, DiscordPeer::kToken);
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 30s))
      << channel_status(env).dump();
  int identifies = peer.state()["identifies"];
  peer.control("close", {{"code", 4004}, {"reason", "Authentication failed."}});
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "failed"; }, 30s)) << channel_status(env).dump();
  EXPECT_NE(channel_status(env)["last_error"].get<std::string>().find("close 4004"), std::string::npos);
  // No reconnect loop: while the terminal answers a turn, the channel stays away from the Gateway.
  EXPECT_NE(env.ok({"chat", "assistant", "-m", "still serving?"}).find("echo:"), std::string::npos);
  EXPECT_EQ(peer.state()["connected"], 0);
  EXPECT_EQ(peer.state()["identifies"], identifies);
  EXPECT_EQ(peer.state()["resumes"], 0);

  // 4014: the MESSAGE_CONTENT intent is not enabled for the bot.
  peer.control("options", {{"messageContentAllowed", false}});
  peer.control("invalidate", {{"resumable", false}});
  // The channel retries at once when the secret changes: a wrong value first (refused by REST: 401),
  // then the right one, which resumes a session the stand-in has dropped: op 9, IDENTIFY, 4014.
  env.ok({"secret", "set", "discord-bot", "--channel"}, "MTEw.other.value");
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("last_error", "").find("401") != std::string::npos; }, 30s))
      << channel_status(env).dump();
  env.ok({"secret", "set", "discord-bot", "--channel"}, DiscordPeer::kToken);
  ASSERT_TRUE(wait_until([&] {
    return channel_status(env).value("last_error", "").find("MESSAGE_CONTENT intent is not enabled") != std::string::npos;
  }, 30s)) << channel_status(env).dump();
  EXPECT_EQ(channel_status(env)["state"], "failed");
  identifies = peer.state()["identifies"];
  EXPECT_NE(env.ok({"chat", "assistant", "-m", "and now?"}).find("echo:"), std::string::npos);
  EXPECT_EQ(peer.state()["connected"], 0);
  EXPECT_EQ(peer.state()["identifies"], identifies);
}

// moatd SIGKILLed by MOAT_CRASH_AT at `point`; the message said then is answered (`answer` shows)
// after the restart.
void crash_at(MoatEnv& env, const DiscordPeer& peer, const std::string& point, const std::string& text,
              const std::string& answer) {
  env.kill_daemon(SIGTERM);
  ::setenv("MOAT_CRASH_AT", point.c_str(), 1);
  env.start_daemon();
  ::unsetenv("MOAT_CRASH_AT");
  pid_t pid = env.daemon_pid();
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 30s));
  say(peer, kDmChannel, text);
  ASSERT_TRUE(wait_until([&] { return ::waitpid(pid, nullptr, WNOHANG) == pid; }, 60s, 50ms)) << "moatd did not stop at " << point;
  env.kill_daemon(SIGKILL);  // already gone: forgets the pid
  env.start_daemon();
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, answer); }, 90s, 100ms)) << peer.state().dump();
}

TEST(DiscordChannelDaemon, KilledAtDispatchedOrAtSentLosesNothingAndSendsNothingTwice) {
  MOAT_REQUIRE_ROOT();
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  ProviderDouble model({.api_key = "k"});
  echo_model(model);
  MoatEnv env(config_for(peer, model));
  store_keys(env, model, DiscordPeer::kToken);

  crash_at(env, peer, "discord.dispatched", "received, then killed", "received, then killed");
  // A long reply, killed once its three parts are on Discord and before the outbox knows: after the
  // restart the outbox sends its last part again (parts_sent is written after each part but the last),
  // with the same key as nonce, and Discord returns the message it made before the kill.
  crash_at(env, peer, "router.sent", "a long answer, sent, then killed", "[0624]");
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("out_today", 0) == 2; }, 30s)) << channel_status(env).dump();
  std::string dm = joined(sent_to(peer, kDmChannel));
  EXPECT_EQ(count_of(dm, "received, then killed"), 1u) << dm;
  EXPECT_EQ(count_of(dm, "[0624]"), 1u) << dm;
  EXPECT_EQ(count_of(dm, "[0000]"), 1u) << dm;
  EXPECT_EQ(peer.state()["nonceRepeats"], 1) << "the reply sent before the kill was not offered again";
  EXPECT_EQ(channel_status(env)["in_today"], 2);
}

TEST(DiscordChannelDaemon, AddedAtRunTimeAnswersAndIsRemoved) {
  MOAT_REQUIRE_ROOT();
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  ProviderDouble model({.api_key = "k"});
  echo_model(model);
  MoatEnv env(fmt::format("[agents.assistant]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                          "base_url = \"{}\" }}\nchats = [\"discord:*\"]\n",
                          model.anthropic_base_url()));
  store_keys(env, model, DiscordPeer::kToken);
  env.ok({"channel", "add", "discord", "--token-secret", "discord-bot", "--api-base", peer.api_base()});
  ASSERT_TRUE(wait_until([&] { return channel_status(env).value("state", "") == "connected"; }, 30s))
      << channel_status(env).dump();
  say(peer, kDmChannel, "added at run time");
  ASSERT_TRUE(wait_until([&] { return answered(peer, kDmChannel, "added at run time"); }, 60s, 100ms)) << peer.state().dump();
  env.ok({"channel", "rm", "discord"});
  EXPECT_NE(env.moat({"channel", "status", "discord"}).code, 0);
  ASSERT_TRUE(wait_until([&] { return peer.state()["connected"] == 0; }, 10s)) << peer.state().dump();
}

// The channel on its own against the stand-in: previews (create, edit, the final delivery edits
// them), no mentions allowed in what the agent writes, the nonce, a bucket that is empty waits for its
// reset, a global 429's retry_after, typing while a turn runs.
TEST(DiscordChannelDirect, PreviewsMentionsNoncesRateLimitsAndTyping) {
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  channels::DiscordOptions opts;
  opts.api_base = peer.api_base();
  opts.token_secret = "discord-bot";
  opts.typing_every = 300ms;
  channels::DiscordChannel ch([]() -> Result<std::string> { return std::string(DiscordPeer::kToken); },
                              [](std::vector<router::Envelope>, router::ChannelCursor) {
                                return Result<std::vector<Result<router::Acceptance>>>(
                                    std::vector<Result<router::Acceptance>>{});
                              },
                              []() -> Result<std::optional<Json>> { return std::optional<Json>(); }, opts);
  EXPECT_GT(ch.preview_interval().count(), 0);
  EXPECT_EQ(ch.message_limit().max, 2000u);

  router::Preview p;
  p.key = "p7";
  p.channel = "discord";
  p.chat = kGuildChannel;
  p.text = "Thinking";
  auto first = ch.preview(p);
  ASSERT_TRUE(first) << first.error().error.message;
  ASSERT_FALSE(first->platform_id.empty());
  p.platform_id = first->platform_id;
  p.text = "Thinking about it";
  auto second = ch.preview(p);
  ASSERT_TRUE(second) << second.error().error.message;
  EXPECT_EQ(second->platform_id, first->platform_id);
  auto unchanged = ch.preview(p);  // the same text again is a success
  ASSERT_TRUE(unchanged);

  router::Outbound final;
  final.key = "o9";
  final.channel = "discord";
  final.chat = kGuildChannel;
  final.text = "The answer is 42.";
  final.edit_platform_id = first->platform_id;
  auto done = ch.deliver(final);
  ASSERT_TRUE(done) << done.error().error.message;
  EXPECT_EQ(done->platform_id, first->platform_id);
  Json sent = peer.sent();
  ASSERT_EQ(sent.size(), 1u) << sent.dump();
  EXPECT_EQ(sent[0]["content"], "The answer is 42.");
  EXPECT_EQ(sent[0]["edits"], Json({"Thinking about it", "Thinking about it", "The answer is 42."}));
  // Whatever the agent wrote, the message pings no one (no @everyone from a prompt injection).
  EXPECT_EQ(sent[0]["allowed_mentions"], Json({{"parse", Json::array()}, {"replied_user", false}}));

  // A repeat of a delivery (after a crash) with its key as nonce returns the message already made.
  router::Outbound again = final;
  again.edit_platform_id.clear();
  again.key = "o10";
  auto a1 = ch.deliver(again);
  auto a2 = ch.deliver(again);
  ASSERT_TRUE(a1 && a2);
  EXPECT_EQ(a1->platform_id, a2->platform_id);
  EXPECT_EQ(peer.sent().size(), 2u);
  EXPECT_EQ(peer.state()["nonceRepeats"], 1);

  // Unknown channel: never deliverable.
  router::Outbound lost = again;
  lost.key = "o11";
  lost.chat = "3300000000000000999";
  auto l = ch.deliver(lost);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().error.kind, ErrorKind::InvalidInput);

  // The bucket: 2 a window; the third waits for the reset instead of being refused.
  peer.control("options", {{"routeLimit", 2}, {"routeWindowMs", 1200}});
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    router::Outbound m = again;
    m.key = fmt::format("o2{}", i);
    m.chat = kDmChannel;
    m.text = fmt::format("bucket {}", i);
    auto r = ch.deliver(m);
    ASSERT_TRUE(r) << i << ": " << r.error().error.message;
  }
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 500ms);
  // A global 429: its retry_after goes back to the router.
  peer.control("fault", {{"times", 1}, {"retry_after", 2}, {"global", true}});
  router::Outbound g = again;
  g.key = "o30";
  g.chat = kDmChannel;
  auto limited = ch.deliver(g);
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().retry_after, 2000ms);
  EXPECT_EQ(limited.error().error.kind, ErrorKind::Unavailable);

  // Typing while a turn runs in a chat, not after it ended.
  ch.start();
  router::LiveEvent started{"discord", kGuildChannel, "assistant", "turn_started", Json::object()};
  ch.live(started);
  ASSERT_TRUE(wait_until([&] { return peer.state()["typing"].get<int>() >= 2; }, 10s, 50ms)) << peer.state().dump();
  router::LiveEvent ended = started;
  ended.kind = "turn_ended";
  ch.live(ended);
  ch.stop();
}

}  // namespace
}  // namespace moat::testing

namespace moat::testing {
namespace {

// Files attached to a Discord message are downloaded from the CDN into the staging area before the
// message is stored; one over the cap is named unavailable; a link off Discord's CDN is not fetched.
TEST(DiscordChannelDirect, FilesAreDownloadedIntoTheStagingAreaBeforeTheMessageIsStored) {
  DiscordPeer peer;
  ASSERT_FALSE(peer.url().empty());
  set_up_platform(peer);
  TempDir dir("moat-discord-files");
  auto stage = AttachmentStage::open(dir / "attachments", {.max_file = 64 << 10});
  ASSERT_TRUE(stage);
  std::mutex mu;
  std::vector<router::Envelope> got;
  channels::DiscordOptions opts;
  opts.api_base = peer.api_base();
  opts.token_secret = "discord-bot";
  opts.attachments = stage->get();
  channels::DiscordChannel ch([]() -> Result<std::string> { return std::string(DiscordPeer::kToken); },
                              [&](std::vector<router::Envelope> e, router::ChannelCursor) {
                                std::vector<Result<router::Acceptance>> out;
                                std::lock_guard g(mu);
                                for (auto& x : e) {
                                  got.push_back(x);
                                  out.push_back(router::Acceptance{router::Acceptance::Outcome::Queued});
                                }
                                return Result<std::vector<Result<router::Acceptance>>>(std::move(out));
                              },
                              []() -> Result<std::optional<Json>> { return std::optional<Json>(); }, opts);
  ch.start();
  ASSERT_TRUE(wait_until([&] { return ch.status().state == channels::ChannelState::Connected; }, 20s))
      << ch.status().last_error;
  say(peer, kDmChannel, "", {{"files", {{{"name", "notes.txt"}, {"data", "line one\n"}, {"content_type", "text/plain"}}}}});
  say(peer, kDmChannel, "big", {{"files", {{{"name", "big.bin"}, {"data", std::string(100 << 10, 'x')}}}}});
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(mu);
    return got.size() == 2;
  }, 20s));
  ch.stop();
  std::lock_guard g(mu);
  ASSERT_EQ(got[0].attachments.size(), 1u);
  ASSERT_FALSE(got[0].attachments[0].staged.empty()) << got[0].attachments[0].unavailable;
  EXPECT_EQ((*stage)->read(got[0].attachments[0].staged).value(), "line one\n");
  EXPECT_EQ(got[0].attachments[0].mime, "text/plain");
  ASSERT_EQ(got[1].attachments.size(), 1u);
  EXPECT_TRUE(got[1].attachments[0].staged.empty());
  EXPECT_NE(got[1].attachments[0].unavailable.find("limit"), std::string::npos) << got[1].attachments[0].unavailable;
}

}  // namespace
}  // namespace moat::testing
