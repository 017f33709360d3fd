// Reply previews as outbox state (router/preview.cpp): a streamed reply is one platform message,
// created once, edited at the channel's rate, and edited into the final reply by the outbox; a
// preview left open by a crash is marked "(interrupted)" at the next start; a retried turn streams
// into the same message; a preview that cannot be edited any more does not lose the reply.
#include <atomic>
#include <map>

#include "router/envelope_repo.h"
#include "router_test_util.h"

using namespace moat;
using namespace moat::router;
using namespace moat::router::test;
using namespace std::chrono_literals;

namespace {

// A platform that keeps messages by id and can edit them, as Telegram and Discord do.
class EditingChannel : public Channel {
 public:
  explicit EditingChannel(std::chrono::milliseconds interval = 50ms) : interval_(interval) {}
  std::string_view name() const override { return "chat"; }
  std::chrono::milliseconds preview_interval() const override { return interval_; }
  MessageLimit message_limit() const override { return {100, TextUnit::CodePoints}; }

  DeliveryResult preview(const Preview& p) override {
    std::lock_guard g(mu);
    preview_calls.push_back(p);
    if (p.platform_id.empty()) return Delivered{make(p.text)};
    return edit(p.platform_id, p.text);
  }
  DeliveryResult deliver(const Outbound& o) override {
    std::lock_guard g(mu);
    deliveries.push_back(o);
    if (!o.edit_platform_id.empty()) return edit(o.edit_platform_id, o.text);
    return Delivered{make(o.text)};
  }

  std::map<std::string, std::string> messages() {
    std::lock_guard g(mu);
    return shown;
  }
  std::vector<Preview> previews() {
    std::lock_guard g(mu);
    return preview_calls;
  }
  std::vector<Outbound> delivered() {
    std::lock_guard g(mu);
    return deliveries;
  }
  void forget(const std::string& id) {  // someone deleted the message on the platform
    std::lock_guard g(mu);
    shown.erase(id);
  }

 private:
  std::string make(const std::string& text) {
    std::string id = fmt::format("m{}", ++next_id);
    shown[id] = text;
    return id;
  }
  DeliveryResult edit(const std::string& id, const std::string& text) {
    auto it = shown.find(id);
    if (it == shown.end()) return delivery_failed(Error{ErrorKind::NotFound, "message to edit not found"});
    it->second = text;
    return Delivered{id};
  }
  std::chrono::milliseconds interval_;
  std::mutex mu;
  int next_id = 0;
  std::map<std::string, std::string> shown;
  std::vector<Preview> preview_calls;
  std::vector<Outbound> deliveries;
};

}  // namespace

TEST(RouterPreview, AStreamedReplyIsOneMessageEditedIntoTheFinalText) {
  Store s;
  EditingChannel ch;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(ch);
  r.set_turn_runner([&](const Turn&, const LiveSink& live) -> Result<TurnResult> {
    live("text", Json{{"text", "Hel"}});
    if (!wait_for([&] { return !ch.messages().empty(); }, 10s)) return fail(ErrorKind::Internal, "no preview came");
    live("text", Json{{"text", "lo wor"}});
    if (!wait_for([&] { auto m = ch.messages(); return !m.empty() && m.begin()->second == "Hello wor"; }, 10s))
      return fail(ErrorKind::Internal, "the preview was not edited");
    return TurnResult{.replies = {"Hello world, final."}};
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c1", "1", "hi", "alice", "chat")));
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 15s));
  auto shown = ch.messages();
  ASSERT_EQ(shown.size(), 1u) << "the preview and the reply must be one message";
  EXPECT_EQ(shown.begin()->second, "Hello world, final.");
  auto d = ch.delivered();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].edit_platform_id, shown.begin()->first);
  auto p = ch.previews();
  ASSERT_GE(p.size(), 2u);
  EXPECT_TRUE(p[0].platform_id.empty());
  EXPECT_EQ(p[1].platform_id, shown.begin()->first);
  EXPECT_EQ(p[0].key, p[1].key);
  EXPECT_EQ(s.count("SELECT count(*) FROM previews WHERE state = 'final'"), 1);
  EXPECT_EQ(s.count("SELECT count(*) FROM previews WHERE state != 'final'"), 0);
}

TEST(RouterPreview, EditsComeNoFasterThanTheChannelsInterval) {
  Store s;
  EditingChannel ch(100ms);
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(ch);
  std::chrono::steady_clock::duration streamed{};
  r.set_turn_runner([&](const Turn&, const LiveSink& live) -> Result<TurnResult> {
    auto start = std::chrono::steady_clock::now();
    // 60 deltas over about 600 ms: at one edit per 100 ms, at most ~7 sends.
    for (int i = 0; i < 60; ++i) {
      live("text", Json{{"text", "x"}});
      std::this_thread::sleep_for(10ms);  // the model's pace, not a wait for a condition
    }
    streamed = std::chrono::steady_clock::now() - start;
    return TurnResult{.replies = {"done"}};
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c1", "1", "hi", "alice", "chat")));
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 15s));
  auto p = ch.previews();
  auto allowed = std::chrono::duration_cast<std::chrono::milliseconds>(streamed).count() / 100 + 2;
  EXPECT_GE(p.size(), 2u) << "the stream should have been shown while it ran";
  EXPECT_LE(static_cast<long>(p.size()), allowed) << "previews must be rate-bounded";
  EXPECT_EQ(ch.messages().size(), 1u);
}

TEST(RouterPreview, ARetriedTurnStreamsIntoTheSameMessage) {
  Store s;
  EditingChannel ch;
  Router r(*s.db, *s.audit, RouterOptions{.retry_base = 10ms});
  r.set_rules({catch_all()});
  r.add_channel(ch);
  r.set_turn_runner([&](const Turn& t, const LiveSink& live) -> Result<TurnResult> {
    live("text", Json{{"text", fmt::format("attempt {}", t.attempt)}});
    if (!wait_for([&] { auto m = ch.messages(); return !m.empty() && m.begin()->second == fmt::format("attempt {}", t.attempt); }, 10s))
      return fail(ErrorKind::Internal, "no preview");
    if (t.attempt == 1) return fail(ErrorKind::Unavailable, "the model dropped the stream");
    return TurnResult{.replies = {"answer"}};
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c1", "1", "hi", "alice", "chat")));
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 15s));
  auto shown = ch.messages();
  ASSERT_EQ(shown.size(), 1u);
  EXPECT_EQ(shown.begin()->second, "answer");
  EXPECT_EQ(s.count("SELECT count(*) FROM previews"), 1);
}

TEST(RouterPreview, APreviewOpenAtACrashIsMarkedInterruptedAndTheTurnAnswersOnce) {
  Store s;
  EditingChannel ch;
  {
    // First life: the turn streams, its preview is shown, then the turn fails and moatd stops before
    // the retry: the preview row is still open, as a kill -9 mid-turn leaves it.
    Router r(*s.db, *s.audit, RouterOptions{.retry_base = 60s});
    r.set_rules({catch_all()});
    r.add_channel(ch);
    r.set_turn_runner([&](const Turn&, const LiveSink& live) -> Result<TurnResult> {
      live("text", Json{{"text", "Half an ans"}});
      if (!wait_for([&] { return s.count("SELECT count(*) FROM previews WHERE platform_id != ''") == 1; }, 10s))
        return fail(ErrorKind::Internal, "no preview");
      return fail(ErrorKind::Unavailable, "killed");
    });
    ASSERT_TRUE(r.start());
    ASSERT_TRUE(r.accept(msg("c1", "1", "hi", "alice", "chat")));
    ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM envelopes WHERE attempts = 1 AND state = 'queued'") == 1; }, 15s));
    r.stop();
  }
  ASSERT_EQ(s.count("SELECT count(*) FROM previews WHERE state = 'open'"), 1);
  // Make the retry due now rather than in a minute.
  ASSERT_TRUE(s.db->exec("UPDATE envelopes SET not_before_ms = 0"));
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(ch);
  r.set_turn_runner([&](const Turn&, const LiveSink&) -> Result<TurnResult> { return TurnResult{.replies = {"The whole answer."}}; });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 15s));
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM previews WHERE state = 'interrupted'") == 1; }, 15s));
  auto shown = ch.messages();
  ASSERT_EQ(shown.size(), 2u);
  EXPECT_EQ(shown["m1"], "Half an ans\n\n(interrupted)");
  EXPECT_EQ(shown["m2"], "The whole answer.");
}

TEST(RouterPreview, AReplyWhosePreviewWasDeletedGoesAsANewMessage) {
  Store s;
  EditingChannel ch;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(ch);
  r.set_turn_runner([&](const Turn&, const LiveSink& live) -> Result<TurnResult> {
    live("text", Json{{"text", "draft"}});
    if (!wait_for([&] { return s.count("SELECT count(*) FROM previews WHERE platform_id != ''") == 1; }, 10s))
      return fail(ErrorKind::Internal, "no preview");
    ch.forget("m1");
    return TurnResult{.replies = {"final"}};
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c1", "1", "hi", "alice", "chat")));
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 15s));
  auto shown = ch.messages();
  ASSERT_EQ(shown.size(), 1u);
  EXPECT_EQ(shown["m2"], "final");
  EXPECT_EQ(s.count("SELECT count(*) FROM outbox WHERE failed != ''"), 0);
}

TEST(RouterPreview, AChannelWithoutPreviewsGetsNone) {
  Store s;
  RecordingChannel web;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(web);
  r.set_turn_runner([&](const Turn&, const LiveSink& live) -> Result<TurnResult> {
    live("text", Json{{"text", "streamed"}});
    return TurnResult{.replies = {"final"}};
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c1", "1", "hi")));
  ASSERT_TRUE(wait_for([&] { return web.size() == 1; }, 10s));
  EXPECT_EQ(s.count("SELECT count(*) FROM previews"), 0);
  EXPECT_TRUE(web.delivered()[0].edit_platform_id.empty());
  std::lock_guard g(web.mu);
  ASSERT_GE(web.lives.size(), 2u);
  EXPECT_EQ(web.lives.front().kind, "turn_started");
}
