// The Telegram channel against the Bot API stand-in (tests/peers/telegram.mjs, a process of its own,
// checked against grammY by Peers.telegram...), with the real router on a real SQLite store: who is
// answered (direct messages always, groups only when the bot is addressed), a 409 recovered from and
// reported, a 429's retry_after waited out before the next send, a long reply split within 4096 UTF-16
// units, a refused token shown as failed while another channel keeps serving, and the update offset
// surviving a crash between fetch and store with nothing lost and nothing accepted twice.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>

#include "channels/telegram/telegram_channel.h"
#include "net/http_server.h"
#include "router/split.h"
#include "router_test_util.h"
#include "support/raw_http.h"
#include "support/telegram_peer.h"
#include "support/wait.h"

namespace moat::channels {
namespace {

using namespace std::chrono_literals;
using moat::testing::TelegramPeer;
using moat::testing::wait_until;
using router::test::Store;

const Json kDm = {{"id", 1001}, {"type", "private"}, {"first_name", "Ada"}};
const Json kGroup = {{"id", -2002}, {"type", "supergroup"}, {"title", "team"}};

// The stand-in, a store, the router with an echoing agent "a", and the channel, wired as moatd does.
struct Rig {
  TelegramPeer peer;
  std::unique_ptr<Store> store = std::make_unique<Store>();
  std::unique_ptr<router::Router> router;
  std::unique_ptr<TelegramChannel> tg;
  std::mutex token_mu;
  std::string token = TelegramPeer::kToken;
  // How the store takes what the channel fetched: as moatd does, or as moatd killed before the commit
  // (nothing stored), or killed right after it (stored, and the channel never hears back until `dying`).
  enum class Accept { Normally, DieBeforeCommit, DieAfterCommit };
  std::atomic<Accept> accept_mode{Accept::Normally};
  std::atomic<int> fetched{0};         // envelopes the channel offered while dying before the commit
  std::atomic<bool> committed{false};  // a commit happened in DieAfterCommit
  std::mutex dying_mu;
  std::condition_variable dying_cv;
  bool dying = false;

  Result<std::vector<Result<router::Acceptance>>> accept(std::vector<router::Envelope> e, router::ChannelCursor c) {
    switch (accept_mode.load()) {
      case Accept::Normally: break;
      case Accept::DieBeforeCommit:
        fetched += static_cast<int>(e.size());
        return fail(ErrorKind::Unavailable, "moatd died before the commit");  // nothing stored
      case Accept::DieAfterCommit: {
        if (e.empty()) break;
        auto r = router->accept_with_cursor(std::move(e), std::move(c));
        committed = true;
        std::unique_lock l(dying_mu);
        dying_cv.wait_for(l, 20s, [&] { return dying; });  // the process is gone: nobody hears back
        return fail(ErrorKind::Unavailable, "killed");
      }
    }
    return router->accept_with_cursor(std::move(e), std::move(c));
  }
  void kill_the_committer() {
    {
      std::lock_guard g(dying_mu);
      dying = true;
    }
    dying_cv.notify_all();
  }
  std::function<Result<router::TurnResult>(const router::Turn&)> runner = [](const router::Turn& t) {
    router::TurnResult r;
    std::string text;
    for (auto& e : t.envelopes) text += (text.empty() ? "" : " | ") + e.text;
    r.replies.push_back("echo: " + text);
    return Result<router::TurnResult>(r);
  };
  router::test::RecordingChannel web{"web"};
  // Webhook mode when set (before start()): moatd's HTTP server, on a port chosen once for the Rig.
  bool webhook = false;
  uint16_t http_port = 0;
  std::unique_ptr<net::HttpServer> http;
  std::function<void(TelegramOptions&)> tune;  // options a test changes
  std::unique_ptr<AttachmentStage> stage;       // set by a test that sends files
  std::string webhook_url() const { return fmt::format("http://127.0.0.1:{}/telegram/webhook", http_port); }

  void start() {
    router = std::make_unique<router::Router>(*store->db, *store->audit,
                                              router::RouterOptions{.retry_base = 200ms, .delivery_retry_base = 200ms});
    router->set_rules({router::test::catch_all("a")});
    router->set_turn_runner([this](const router::Turn& t, const router::LiveSink&) { return runner(t); });
    TelegramOptions o;
    o.api_base = peer.url();
    o.token_secret = "tg-bot";
    o.poll_timeout = 1s;
    o.request_timeout = 5s;
    o.backoff = net::Backoff{.initial = 100ms, .factor = 2.0, .cap = 500ms};
    o.refused_token_cap = 500ms;
    if (webhook) {
      if (http_port == 0) http_port = testing::free_loopback_port();
      o.webhook_url = webhook_url();
      o.webhook_path = "/telegram/webhook";
    }
    o.attachments = stage.get();
    if (tune) tune(o);
    tg = std::make_unique<TelegramChannel>(
        [this]() -> Result<std::string> {
          std::lock_guard g(token_mu);
          return token;
        },
        [this](std::vector<router::Envelope> e, router::ChannelCursor c) { return accept(std::move(e), std::move(c)); },
        [this] { return router->channel_cursor("telegram"); }, o);
    router->add_channel(*tg);
    router->add_channel(web);
    ASSERT_TRUE(router->start());
    if (webhook) {
      http = std::make_unique<net::HttpServer>(net::ServerOptions{.address = "127.0.0.1", .port = http_port});
      tg->register_routes(*http);
      ASSERT_TRUE(http->start());
    }
    tg->start();
  }
  // As moatd dying: the channel and the router go; the store file stays.
  void crash() {
    if (http) http->stop();
    http.reset();
    tg->stop();
    router->stop();
    tg.reset();
    router.reset();
    store->close();
  }
  void restart() {
    accept_mode = Accept::Normally;
    store->open();
    start();
  }
  ~Rig() {
    kill_the_committer();
    if (http) http->stop();
    if (tg) tg->stop();
    if (router) router->stop();
  }

  bool wait_state(ChannelState s, std::chrono::milliseconds timeout = 15s) {
    return wait_until([&] { return tg->status().state == s; }, timeout);
  }
  // The messages the bot sent to `chat`, in the order Telegram numbered them.
  std::vector<std::string> sent_to(int64_t chat) {
    std::vector<std::string> out;
    for (auto& m : peer.sent())
      if (m["chat_id"] == chat) out.push_back(m["text"].get<std::string>());
    return out;
  }
  // Until a reply in the direct chat quotes `text`.
  bool wait_answered(const std::string& text, std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] {
      for (auto& t : sent_to(1001))
        if (t.find(text) != std::string::npos) return true;
      return false;
    }, timeout, 50ms);
  }
  bool wait_sent(size_t n, std::chrono::milliseconds timeout = 20s) {
    return wait_until([&] { return peer.sent().size() >= n; }, timeout, 50ms);
  }
};

TEST(TelegramChannel, AnswersDirectMessagesAlwaysAndGroupsOnlyWhenAddressed) {
  Rig rig;
  ASSERT_FALSE(rig.peer.url().empty());
  rig.peer.control("privacy", {{"on", false}});  // every group message reaches the bot: moat decides
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected)) << rig.tg->status().last_error;
  EXPECT_EQ(rig.tg->status().identity, "@moat_test_bot");

  Json dm_msg = rig.peer.say(kDm, "hello there");
  rig.peer.say(kGroup, "just chatting among people");
  rig.peer.say(kGroup, "@moat_test_bot what is new?");
  ASSERT_TRUE(rig.wait_sent(2));
  auto in_group = rig.sent_to(-2002);
  ASSERT_EQ(in_group.size(), 1u);
  EXPECT_EQ(in_group[0], "echo: @moat_test_bot what is new?");
  EXPECT_EQ(rig.sent_to(1001), std::vector<std::string>{"echo: hello there"});

  // A reply to the bot's own message addresses it; another bot mentioning it, and an edit, do not count.
  int64_t bot_message = 0;
  for (auto& m : rig.peer.sent())
    if (m["chat_id"] == -2002) bot_message = m["message_id"].get<int64_t>();
  rig.peer.say(kGroup, "thanks, and one more thing", {{"replyTo", bot_message}});
  rig.peer.say(kGroup, "@moat_test_bot I am a bot too", {{"from", {{"id", 77}, {"is_bot", true}, {"first_name", "other"}}}});
  rig.peer.control("edit", {{"chat", kDm}, {"message_id", dm_msg["message_id"]}, {"text", "hello there (edited)"}});
  rig.peer.say(kDm, "last one");
  ASSERT_TRUE(rig.wait_sent(4));
  ASSERT_TRUE(wait_until([&] { return rig.store->count("SELECT count(*) FROM envelopes WHERE channel = 'telegram'") == 4; }, 5s))
      << rig.store->count("SELECT count(*) FROM envelopes WHERE channel = 'telegram'");
  EXPECT_EQ(rig.sent_to(-2002),
            (std::vector<std::string>{"echo: @moat_test_bot what is new?", "echo: thanks, and one more thing"}));
  EXPECT_EQ(rig.sent_to(1001), (std::vector<std::string>{"echo: hello there", "echo: last one"}));
  // The unaddressed group message, the other bot's message and the edit never became envelopes.
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE body_json LIKE '%just chatting%' OR "
                             "body_json LIKE '%bot too%' OR body_json LIKE '%(edited)%'"),
            0);
  // Envelope keys are chat + message: Telegram numbers messages per chat.
  EXPECT_EQ(rig.store->count(fmt::format("SELECT count(*) FROM envelopes WHERE message_id = '1001:{}'",
                                         dm_msg["message_id"].get<int64_t>())),
            1);
  auto st = rig.tg->status();
  EXPECT_EQ(st.state, ChannelState::Connected);
  EXPECT_GE(st.lag_ms, 0);
  EXPECT_TRUE(st.last_error.empty()) << st.last_error;
}

TEST(TelegramChannel, AConflictIsReportedAndRecoveredFrom) {
  Rig rig;
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected));
  // Another instance polls with the same token: the pending poll ends in 409, and so do the next ones.
  rig.peer.control("fault", {{"method", "getUpdates"}, {"code", 409}, {"times", 4}});
  rig.peer.control("conflict");
  ASSERT_TRUE(rig.wait_state(ChannelState::Conflict, 10s));
  auto st = rig.tg->status();
  EXPECT_NE(st.last_error.find("another getUpdates poller or a webhook is active"), std::string::npos) << st.last_error;
  EXPECT_NE(st.last_error.find("terminated by other getUpdates request"), std::string::npos) << st.last_error;
  EXPECT_FALSE(st.connected());
  // The other one goes away: polling resumes by itself and messages flow.
  rig.peer.say(kDm, "are you back?");
  ASSERT_TRUE(rig.wait_sent(1));
  EXPECT_EQ(rig.sent_to(1001), std::vector<std::string>{"echo: are you back?"});
  EXPECT_EQ(rig.tg->status().state, ChannelState::Connected);
  EXPECT_NE(rig.tg->status().last_error.find("409"), std::string::npos);  // still said, with its time
}

TEST(TelegramChannel, ARetryAfterIsWaitedOutBeforeTheNextSend) {
  Rig rig;
  rig.peer.control("fault", {{"method", "sendMessage"}, {"code", 429}, {"retry_after", 2}, {"times", 1}});
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected));
  rig.peer.say(kDm, "hurry");
  // The refused try is recorded on the outbox row; the next one must come no sooner than 2 s after it
  // (the router's own backoff would try again after 200 ms).
  ASSERT_TRUE(wait_until([&] { return rig.store->count("SELECT coalesce(max(attempts), 0) FROM outbox") >= 1; }, 20s, 10ms));
  auto refused_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return !rig.peer.sent().empty(); }, 20s, 10ms));
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - refused_at);
  EXPECT_GE(waited.count(), 1900) << "sent " << waited.count() << " ms after a 429 saying retry_after 2";
  EXPECT_LT(waited.count(), 8000);
  EXPECT_EQ(rig.sent_to(1001), std::vector<std::string>{"echo: hurry"});
}

TEST(TelegramChannel, ALongReplyArrivesSplitInOrderWithin4096Utf16Units) {
  Rig rig;
  // 10,000 characters, a tenth of them beyond the BMP (two UTF-16 units each), in words.
  std::string reply;
  for (size_t i = 0; i < 10'000; ++i) reply += i % 10 == 3 ? "\xF0\x9F\x98\x80" : i % 7 == 6 ? " " : "x";
  ASSERT_EQ(router::text_length(reply, router::TextUnit::CodePoints), 10'000u);
  size_t units = router::text_length(reply, router::TextUnit::Utf16);
  ASSERT_GT(units, 10'000u);
  rig.runner = [&](const router::Turn&) {
    router::TurnResult r;
    r.replies.push_back(reply);
    return Result<router::TurnResult>(r);
  };
  rig.start();
  rig.peer.say(kDm, "tell me everything");
  size_t parts = (units + 4095) / 4096;
  ASSERT_TRUE(rig.wait_sent(parts));
  ASSERT_TRUE(wait_until([&] {
    std::string joined;
    for (auto& p : rig.sent_to(1001)) joined += p;
    return joined.size() >= reply.size();
  }, 20s, 50ms));
  auto got = rig.sent_to(1001);
  ASSERT_GE(got.size(), 3u);
  std::string joined;
  for (auto& p : got) {
    EXPECT_LE(router::text_length(p, router::TextUnit::Utf16), 4096u);
    joined += p;
  }
  EXPECT_EQ(joined, reply);  // whole, in order, no character cut
  // The row is delivered with the last part's Telegram message id.
  ASSERT_TRUE(wait_until([&] { return rig.store->count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 5s));
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM outbox WHERE platform_id = '" +
                             rig.peer.sent().back()["message_id"].dump() + "'"),
            1);
}

TEST(TelegramChannel, ARefusedTokenIsAFailedStatusWhileOtherChannelsServe) {
  Rig rig;
  rig.token = "123456:not-the-right-token-at-all";
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Failed));
  auto st = rig.tg->status();
  EXPECT_FALSE(st.connected());
  EXPECT_NE(st.last_error.find("Telegram refused the bot token in secret 'tg-bot'"), std::string::npos) << st.last_error;
  EXPECT_NE(st.last_error.find("moat secret set tg-bot --channel"), std::string::npos) << st.last_error;
  EXPECT_NE(st.last_error.find("401"), std::string::npos) << st.last_error;
  EXPECT_EQ(st.last_error.find("not-the-right-token"), std::string::npos) << "the token leaked: " << st.last_error;

  // The web channel, on the same router, is answered all the while.
  ASSERT_TRUE(rig.router->accept(router::test::msg("w1", "m1", "still there?", "alice", "web")));
  ASSERT_TRUE(wait_until([&] { return rig.web.size() == 1; }, 10s));
  EXPECT_EQ(rig.web.delivered()[0].text, "echo: still there?");
  EXPECT_EQ(rig.tg->status().state, ChannelState::Failed);

  // The owner stores the right token: the channel connects without a restart.
  {
    std::lock_guard g(rig.token_mu);
    rig.token = TelegramPeer::kToken;
  }
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected, 10s)) << rig.tg->status().last_error;
  rig.peer.say(kDm, "hello again");
  ASSERT_TRUE(rig.wait_sent(1));
}

TEST(TelegramChannel, AChatThatDoesNotExistIsNeverDeliverableAndTheErrorHasNoToken) {
  Rig rig;
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected));
  ASSERT_TRUE(rig.router->send("a", "telegram", "424242", "anyone there?"));
  ASSERT_TRUE(wait_until([&] { return rig.store->count("SELECT count(*) FROM outbox WHERE failed != ''") == 1; }, 10s));
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM outbox WHERE failed LIKE '%chat not found%'"), 1);
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM outbox WHERE failed LIKE '%moat-test-token%'"), 0);
}

// moatd killed between fetching updates and storing them, then between storing them and the next
// getUpdates (which is what confirms them to Telegram): after each restart every message is in the
// store exactly once and answered exactly once.
TEST(TelegramChannel, TheOffsetSurvivesACrashBetweenFetchAndStore) {
  Rig rig;
  rig.accept_mode = Rig::Accept::DieBeforeCommit;
  rig.start();
  for (int i = 1; i <= 3; ++i) rig.peer.say(kDm, fmt::format("message {}", i));
  ASSERT_TRUE(wait_until([&] { return rig.fetched.load() >= 3; }, 15s));
  rig.crash();
  rig.restart();
  ASSERT_TRUE(rig.wait_answered("message 3")) << rig.peer.state().dump();  // one turn may answer all three
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE channel = 'telegram'"), 3);

  // Now a crash right after a commit, before the next poll confirms the updates to Telegram.
  rig.accept_mode = Rig::Accept::DieAfterCommit;
  rig.peer.say(kDm, "message 4");
  rig.peer.say(kDm, "message 5");
  ASSERT_TRUE(wait_until([&] { return rig.committed.load(); }, 15s));
  EXPECT_GE(rig.peer.state()["pending"].get<int>(), 1);  // Telegram still holds them: not confirmed
  rig.kill_the_committer();
  rig.crash();
  rig.restart();
  ASSERT_TRUE(wait_until([&] { return rig.peer.state()["pending"].get<int>() == 0; }, 15s));
  rig.peer.say(kDm, "message 6");
  ASSERT_TRUE(rig.wait_answered("message 6")) << rig.peer.state().dump();
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE channel = 'telegram'"), 6);
  EXPECT_EQ(rig.store->count("SELECT count(DISTINCT message_id) FROM envelopes WHERE channel = 'telegram'"), 6);
  // Every message answered once (4 and 5 may share a turn), every envelope answered.
  auto replies = rig.sent_to(1001);
  std::string all;
  for (auto& t : replies) all += t + "\n";
  for (int i = 1; i <= 6; ++i) {
    std::string m = fmt::format("message {}", i);
    EXPECT_NE(all.find(m), std::string::npos) << all;
    EXPECT_EQ(all.find(m), all.rfind(m)) << m << " answered twice: " << all;
  }
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE state != 'answered'"), 0);
}

// Webhook mode: moatd sets the webhook with its secret; the stand-in delivers, each update is stored
// once and answered once; a forged or missing secret token is 401 and nothing is stored; Telegram's
// redelivery of an update whose 200 was lost is stored once; an update that could not be stored is
// not answered 2xx, so Telegram delivers it again.
TEST(TelegramChannel, WebhookModeTakesAuthenticUpdatesOnceAndRefusesForgedOnes) {
  Rig rig;
  rig.webhook = true;
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected)) << rig.tg->status().last_error;
  Json hook = rig.peer.state()["webhook"];
  ASSERT_TRUE(hook.is_object()) << rig.peer.state().dump();
  EXPECT_EQ(hook["url"], rig.webhook_url());
  EXPECT_EQ(hook["secret_token"], webhook_secret_for(TelegramPeer::kToken));
  EXPECT_EQ(hook["secret_token"].get<std::string>().find("moat-test-token"), std::string::npos);
  EXPECT_EQ(hook["allowed_updates"], Json::array({"message"}));
  EXPECT_EQ(hook["max_connections"], 1);
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM channel_cursors WHERE channel = 'telegram' AND "
                             "json_extract(cursor_json, '$.mode') = 'webhook'"),
            1);

  rig.peer.say(kDm, "hello by webhook");
  ASSERT_TRUE(rig.wait_answered("hello by webhook")) << rig.peer.state().dump();
  EXPECT_EQ(rig.sent_to(1001), std::vector<std::string>{"echo: hello by webhook"});

  // Forged: a wrong secret, none at all, the bot token itself. 401 each, nothing stored.
  const std::string path = "/telegram/webhook";
  Json forged = {{"update_id", 99000},
                 {"message",
                  {{"message_id", 777},
                   {"date", 1700000000},
                   {"chat", kDm},
                   {"from", {{"id", 42}, {"is_bot", false}, {"first_name", "Eve"}}},
                   {"text", "forged update"}}}};
  int64_t before = rig.store->count("SELECT count(*) FROM envelopes");
  for (const auto& headers : std::vector<testing::HeaderList>{
           {{"Content-Type", "application/json"}, {"X-Telegram-Bot-Api-Secret-Token", "not-the-secret"}},
           {{"Content-Type", "application/json"}},
           {{"Content-Type", "application/json"}, {"X-Telegram-Bot-Api-Secret-Token", TelegramPeer::kToken}},
           {{"Content-Type", "application/json"},
            {"X-Telegram-Bot-Api-Secret-Token", webhook_secret_for(TelegramPeer::kToken) + "x"}}}) {
    auto r = testing::http_call(rig.http_port, "POST", path, headers, forged.dump());
    EXPECT_EQ(r.status, 401) << r.body;
  }
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes"), before);
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE body_json LIKE '%forged update%'"), 0);
  EXPECT_EQ(testing::http_call(rig.http_port, "GET", path).status, 405);

  // Telegram delivering one update twice (its 200 was lost): stored once, answered once.
  testing::HeaderList authentic = {{"Content-Type", "application/json"},
                                   {"X-Telegram-Bot-Api-Secret-Token", webhook_secret_for(TelegramPeer::kToken)}};
  Json update = forged;
  update["message"]["text"] = "delivered twice";
  rig.peer.control("chat", kDm);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(testing::http_call(rig.http_port, "POST", path, authentic, update.dump()).status, 200);
  ASSERT_TRUE(rig.wait_answered("delivered twice"));
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE body_json LIKE '%delivered twice%'"), 1);

  // The store refuses (moatd dying before the commit): no 2xx, so the stand-in keeps the update and
  // delivers it again until it is stored.
  rig.accept_mode = Rig::Accept::DieBeforeCommit;
  rig.peer.say(kDm, "stored on the second try");
  ASSERT_TRUE(wait_until([&] { return rig.fetched.load() >= 1; }, 10s));
  ASSERT_TRUE(wait_until([&] {
    for (auto& d : rig.peer.state().value("deliveries", Json::array()))
      if (d["status"] == 503) return true;
    return false;
  }, 10s)) << rig.peer.state().dump();
  EXPECT_EQ(rig.peer.state()["pending"], 1);
  rig.accept_mode = Rig::Accept::Normally;
  ASSERT_TRUE(rig.wait_answered("stored on the second try")) << rig.peer.state().dump();
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE body_json LIKE '%second try%'"), 1);
  auto replies = rig.sent_to(1001);
  EXPECT_EQ(std::count(replies.begin(), replies.end(), "echo: stored on the second try"), 1);
  EXPECT_EQ(rig.tg->status().state, ChannelState::Connected);
}

// Back from webhook mode to polling: the webhook moatd had set is deleted before the first getUpdates
// and nothing pending is lost; a webhook set later by someone else is a reported 409, not deleted.
TEST(TelegramChannel, SwitchingBackToPollingDeletesOurWebhookOnly) {
  Rig rig;
  rig.webhook = true;
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected)) << rig.tg->status().last_error;
  ASSERT_TRUE(rig.peer.state()["webhook"].is_object());
  rig.crash();
  rig.peer.say(kDm, "said while moatd was down");  // the stand-in cannot deliver: kept
  rig.webhook = false;
  rig.restart();
  ASSERT_TRUE(rig.wait_answered("said while moatd was down")) << rig.peer.state().dump();
  EXPECT_TRUE(rig.peer.state()["webhook"].is_null());
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM channel_cursors WHERE channel = 'telegram' AND "
                             "json_extract(cursor_json, '$.mode') = 'polling'"),
            1);

  // Another program sets a webhook for this bot: polling gets 409, reported as such and left alone.
  testing::http_call(static_cast<uint16_t>(std::stoi(rig.peer.url().substr(rig.peer.url().rfind(':') + 1))), "POST",
                     fmt::format("/bot{}/setWebhook", TelegramPeer::kToken), {{"Content-Type", "application/json"}},
                     Json{{"url", "https://elsewhere.example/hook"}}.dump());
  ASSERT_TRUE(wait_until([&] { return rig.tg->status().last_error.find("webhook is active") != std::string::npos; }, 10s))
      << rig.tg->status().last_error;
  EXPECT_EQ(rig.tg->status().state, ChannelState::Conflict);
  ASSERT_TRUE(wait_until([&] {
    int polls = 0;
    for (auto& m : rig.peer.state().value("methods", Json::array())) polls += m == "getUpdates";
    return polls >= 3;
  }, 10s));
  EXPECT_EQ(rig.peer.state()["webhook"]["url"], "https://elsewhere.example/hook");
}

// While a turn runs the chat shows "typing" (sendChatAction, again every interval); after it ended,
// no more.
TEST(TelegramChannel, TypingIsShownWhileATurnRunsAndNotAfter) {
  Rig rig;
  rig.tune = [](TelegramOptions& o) { o.typing_interval = 200ms; };
  auto typing_in = [&](int64_t chat) {
    int n = 0;
    for (auto& a : rig.peer.state().value("actions", Json::array())) n += a["chat_id"] == chat && a["action"] == "typing";
    return n;
  };
  // A slow turn: it ends once the chat has shown "typing" three times (deadline 10 s).
  std::atomic<int> seen_while_running{0};
  rig.runner = [&](const router::Turn& t) {
    wait_until([&] { return typing_in(1001) >= 3; }, 10s, 20ms);
    seen_while_running = typing_in(1001);
    router::TurnResult r;
    r.replies.push_back("done: " + t.envelopes.back().text);
    return Result<router::TurnResult>(r);
  };
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected));
  rig.peer.say(kDm, "think about it");
  ASSERT_TRUE(rig.wait_answered("think about it"));
  EXPECT_GE(seen_while_running.load(), 3);
  EXPECT_EQ(typing_in(-2002), 0);
  int at_end = typing_in(1001);
  // Five intervals without a turn: not one more.
  EXPECT_FALSE(wait_until([&] { return typing_in(1001) > at_end; }, 1000ms, 50ms)) << rig.peer.state()["actions"].dump();
}

// Previews: created with sendMessage, edited in place; the same text again ("message is not
// modified") is a success; the final reply edits the preview instead of sending a second message; a
// preview that is gone is replaced by a new message.
TEST(TelegramChannel, PreviewsAreOneMessageEditedInPlaceAndBecomeTheReply) {
  Rig rig;
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected));
  EXPECT_EQ(rig.tg->preview_interval(), 1000ms);
  rig.peer.control("chat", kDm);
  router::Preview p{.id = 1, .key = "p1", .channel = "telegram", .chat = "1001", .agent = "a", .text = "Thinking"};
  auto created = rig.tg->preview(p);
  ASSERT_TRUE(created) << created.error().error.message;
  ASSERT_FALSE(created->platform_id.empty());
  p.platform_id = created->platform_id;
  p.text = "Thinking about it";
  auto edited = rig.tg->preview(p);
  ASSERT_TRUE(edited) << edited.error().error.message;
  EXPECT_EQ(edited->platform_id, created->platform_id);
  auto again = rig.tg->preview(p);  // unchanged: Telegram says "message is not modified"
  ASSERT_TRUE(again) << again.error().error.message;
  EXPECT_EQ(again->platform_id, created->platform_id);

  router::Outbound out;
  out.key = "o1";
  out.channel = "telegram";
  out.chat = "1001";
  out.text = "Thinking about it: the answer is 42";
  out.edit_platform_id = created->platform_id;
  auto final_reply = rig.tg->deliver(out);
  ASSERT_TRUE(final_reply) << final_reply.error().error.message;
  EXPECT_EQ(final_reply->platform_id, created->platform_id);
  auto sent = rig.peer.sent();
  ASSERT_EQ(sent.size(), 1u) << sent.dump();  // one message, edited twice
  EXPECT_EQ(sent[0]["text"], "Thinking about it: the answer is 42");
  EXPECT_EQ(sent[0]["edits"], Json::array({"Thinking about it", "Thinking about it: the answer is 42"}));
  int edit_calls = 0;
  for (auto& m : rig.peer.state().value("methods", Json::array())) edit_calls += m == "editMessageText";
  EXPECT_EQ(edit_calls, 3);  // the unchanged one was asked, and answered "not modified"
  // The same final text delivered again (a retry) is a success too, and sends nothing.
  out.key = "o1-again";
  ASSERT_TRUE(rig.tg->deliver(out));
  EXPECT_EQ(rig.peer.sent().size(), 1u);

  // A preview message that is gone: the preview and the final reply each come as a new message.
  p.platform_id = "987654";
  auto replaced = rig.tg->preview(p);
  ASSERT_TRUE(replaced) << replaced.error().error.message;
  EXPECT_NE(replaced->platform_id, "987654");
  out.key = "o2";
  out.edit_platform_id = "987655";
  out.text = "final, in a new message";
  auto fresh = rig.tg->deliver(out);
  ASSERT_TRUE(fresh) << fresh.error().error.message;
  EXPECT_EQ(rig.peer.sent().back()["text"], "final, in a new message");
  EXPECT_EQ(rig.peer.sent().size(), 3u);
  // A chat that does not exist is never deliverable, as with sendMessage.
  p.chat = "424242";
  p.platform_id.clear();
  auto nowhere = rig.tg->preview(p);
  ASSERT_FALSE(nowhere);
  EXPECT_EQ(nowhere.error().error.kind, ErrorKind::InvalidInput);
}

TEST(TelegramChannel, FilesAreDownloadedIntoTheStagingAreaBeforeTheMessageIsStored) {
  Rig rig;
  ASSERT_FALSE(rig.peer.url().empty());
  rig.stage = std::move(*AttachmentStage::open(rig.store->dir / "attachments", {.max_file = 64 << 10}));
  std::vector<router::Envelope> seen;
  std::mutex seen_mu;
  rig.runner = [&](const router::Turn& t) {
    std::lock_guard g(seen_mu);
    for (auto& e : t.envelopes) seen.push_back(e);
    return Result<router::TurnResult>(router::TurnResult{.replies = {"got it"}});
  };
  rig.start();
  ASSERT_TRUE(rig.wait_state(ChannelState::Connected)) << rig.tg->status().last_error;
  std::string notes = "first line\nsecond line\n";
  rig.peer.say(kDm, "", {{"document", {{"name", "notes.txt"}, {"data", notes}}}});
  rig.peer.say(kDm, "and a big one", {{"document", {{"name", "big.bin"}, {"data", std::string(100 << 10, 'b')}}}});
  ASSERT_TRUE(rig.wait_sent(2));
  std::lock_guard g(seen_mu);
  ASSERT_EQ(seen.size(), 2u);
  ASSERT_EQ(seen[0].attachments.size(), 1u);
  const auto& a = seen[0].attachments[0];
  EXPECT_EQ(a.name, "notes.txt");
  ASSERT_FALSE(a.staged.empty()) << a.unavailable;
  EXPECT_EQ(rig.stage->read(a.staged).value(), notes);
  EXPECT_TRUE(a.url.starts_with("telegram-file:")) << a.url;
  ASSERT_EQ(seen[1].attachments.size(), 1u);
  EXPECT_TRUE(seen[1].attachments[0].staged.empty());
  EXPECT_NE(seen[1].attachments[0].unavailable.find("limit"), std::string::npos) << seen[1].attachments[0].unavailable;
  // Stored with the envelope (a turn after a restart copies the same file), and never with the token.
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE body_json LIKE '%staged%'"), 1);
  EXPECT_EQ(rig.store->count("SELECT count(*) FROM envelopes WHERE body_json LIKE '%moat-test-token%'"), 0);
}

TEST(TelegramUpdates, MentionsAreReadFromEntitiesInUtf16Offsets) {
  telegram::BotIdentity bot{123456, "moat_test_bot"};
  // "😀 @Moat_Test_Bot hi": the emoji is two UTF-16 units, so the mention starts at offset 3.
  Json update = {{"update_id", 1},
                 {"message",
                  {{"message_id", 5},
                   {"date", 1700000000},
                   {"chat", {{"id", -5}, {"type", "group"}}},
                   {"from", {{"id", 9}, {"is_bot", false}, {"first_name", "Bo"}}},
                   {"text", "\xF0\x9F\x98\x80 @Moat_Test_Bot hi"},
                   {"entities", Json::array({{{"type", "mention"}, {"offset", 3}, {"length", 14}}})}}}};
  auto m = telegram::map_update(update, bot);
  ASSERT_TRUE(m.envelope);
  EXPECT_TRUE(m.envelope->mentioned);
  EXPECT_FALSE(m.envelope->direct);
  EXPECT_EQ(m.envelope->message_id, "-5:5");
  // Someone else's mention is not the bot's.
  update["message"]["text"] = "\xF0\x9F\x98\x80 @someone_else hi";
  update["message"]["entities"][0]["length"] = 13;
  EXPECT_EQ(telegram::map_update(update, bot).skipped, telegram::Skip::NotAddressed);
  // A text_mention of the bot's id, a command addressed to it.
  update["message"]["entities"] = Json::array({{{"type", "text_mention"}, {"offset", 0}, {"length", 2}, {"user", {{"id", 123456}}}}});
  EXPECT_TRUE(telegram::map_update(update, bot).envelope->mentioned);
  update["message"]["text"] = "/start@moat_test_bot";
  update["message"]["entities"] = Json::array({{{"type", "bot_command"}, {"offset", 0}, {"length", 20}}});
  EXPECT_TRUE(telegram::map_update(update, bot).envelope->mentioned);
  // The bot's own messages and edits are skipped.
  update["message"]["from"]["id"] = 123456;
  EXPECT_EQ(telegram::map_update(update, bot).skipped, telegram::Skip::OwnMessage);
  Json edit = {{"update_id", 2}, {"edited_message", update["message"]}};
  EXPECT_EQ(telegram::map_update(edit, bot).skipped, telegram::Skip::Edited);
}

}  // namespace
}  // namespace moat::channels
