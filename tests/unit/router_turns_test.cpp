// Turns and delivery: per-chat order under concurrency, batching while busy, the global cap, agent
// fairness, retries with backoff then an error reply, InvalidInput not retried, resume after the
// router is destroyed and re-created on the same file, outbox retries/failures, live events, send(),
// and what a channel showed read back for it after a restart (channel_history).
#include <atomic>
#include <map>

#include "router/envelope_repo.h"
#include "router_test_util.h"

using namespace moat;
using namespace moat::router;
using namespace moat::router::test;
using namespace std::chrono_literals;

namespace {
Router::Stats idle_stats(Router& r) { return r.stats(); }
}  // namespace

TEST(RouterTurns, PerChatOrderUnderConcurrency) {
  Store s;
  RecordingChannel web;
  std::mutex mu;
  std::map<std::string, std::vector<int>> seen;
  Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 4, .max_batch = 7});
  r.set_rules({catch_all()});
  r.add_channel(web);
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    TurnResult res;
    std::this_thread::sleep_for(1ms);
    std::lock_guard g(mu);
    for (auto& e : t.envelopes) {
      seen[t.chat].push_back(std::stoi(e.text));
      res.replies.push_back("r" + e.text);
    }
    return res;
  });
  ASSERT_TRUE(r.start());
  constexpr int kChats = 6, kEach = 60;
  std::vector<std::thread> ts;
  for (int c = 0; c < kChats; ++c)
    ts.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) ASSERT_TRUE(r.accept(msg(fmt::format("c{}", c), fmt::format("{}-{}", c, i), std::to_string(i))));
    });
  for (auto& t : ts) t.join();
  ASSERT_TRUE(wait_for([&] { return web.size() == kChats * kEach; }, 30s)) << web.size();
  for (int c = 0; c < kChats; ++c) {
    std::vector<int> want(kEach);
    for (int i = 0; i < kEach; ++i) want[i] = i;
    EXPECT_EQ(seen[fmt::format("c{}", c)], want);
  }
  std::map<std::string, int> last;
  for (auto& o : web.delivered()) {  // delivered in order per chat too
    int n = std::stoi(o.text.substr(1));
    EXPECT_EQ(n, last.contains(o.chat) ? last[o.chat] + 1 : 0);
    last[o.chat] = n;
    EXPECT_EQ(o.key, fmt::format("o{}", o.id));
  }
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes WHERE state = 'answered'"), kChats * kEach);
}

TEST(RouterTurns, MessagesArrivingWhileBusyAreBatchedUpToMaxBatch) {
  Store s;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, first_started = false;
  std::vector<std::vector<std::string>> turns;
  Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 2, .max_batch = 3});
  r.set_rules({catch_all()});
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    std::unique_lock l(mu);
    std::vector<std::string> texts;
    for (auto& e : t.envelopes) texts.push_back(e.text);
    turns.push_back(texts);
    if (!first_started) {
      first_started = true;
      cv.notify_all();
      cv.wait(l, [&] { return release; });
    }
    return TurnResult{{"ok"}};
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c", "m0", "0")));
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 5s, [&] { return first_started; }));
  }
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(r.accept(msg("c", fmt::format("m{}", i), std::to_string(i))));
  std::this_thread::sleep_for(30ms);
  {
    std::lock_guard g(mu);
    EXPECT_EQ(turns.size(), 1u);  // one turn per chat at a time, although a worker is free
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard g(mu);
    return turns.size() == 3;
  }));
  std::lock_guard g(mu);
  EXPECT_EQ(turns[0], (std::vector<std::string>{"0"}));
  EXPECT_EQ(turns[1], (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(turns[2], (std::vector<std::string>{"4", "5"}));
}

TEST(RouterTurns, GlobalCapIsNeverExceeded) {
  Store s;
  std::atomic<int> now{0}, peak{0}, total{0};
  Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 3});
  r.set_rules({catch_all()});
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    int n = ++now;
    int p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {}
    std::this_thread::sleep_for(40ms);  // long against a commit, so that turns overlap
    --now;
    total += static_cast<int>(t.envelopes.size());
    return TurnResult{};
  });
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(r.accept(msg(fmt::format("c{}", i % 20), fmt::format("m{}", i), "x")));
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(wait_for([&] { return total.load() == 40; }));
  EXPECT_LE(peak.load(), 3);
  EXPECT_EQ(peak.load(), 3);
  // The runner's last count comes just before its turn is committed; wait for that too.
  EXPECT_TRUE(wait_for([&] {
    auto st = idle_stats(r);
    return st.queued == 0 && st.running == 0;
  }));
}

TEST(RouterTurns, RoundRobinAcrossAgentsNotChats) {
  Store s;
  std::mutex mu;
  std::vector<std::string> order;
  Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 1, .max_batch = 1});
  RouteRule a = catch_all("busy"), b = catch_all("quiet");
  a.chats = {"a-*"};
  b.chats = {"b-1"};
  r.set_rules({a, b});
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    std::lock_guard g(mu);
    order.push_back(t.agent);
    return TurnResult{};
  });
  // Agent busy floods 50 chats before quiet's one message arrives.
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(r.accept(msg(fmt::format("a-{}", i % 50), fmt::format("a{}", i), "x")));
  ASSERT_TRUE(r.accept(msg("b-1", "b0", "x")));
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard g(mu);
    return order.size() == 201;
  }));
  std::lock_guard g(mu);
  auto pos = std::find(order.begin(), order.end(), "quiet") - order.begin();
  EXPECT_LE(pos, 2) << "quiet waited behind " << pos << " turns of busy";
}

TEST(RouterTurns, FairnessAlsoForMessagesArrivingWhileRunning) {
  Store s;
  std::mutex mu;
  std::vector<std::string> order;
  std::atomic<bool> go{false};
  Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 1, .max_batch = 1});
  RouteRule a = catch_all("busy"), b = catch_all("quiet");
  a.chats = {"a-*"};
  b.chats = {"b-1"};
  r.set_rules({a, b});
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    while (!go) std::this_thread::sleep_for(1ms);
    std::lock_guard g(mu);
    order.push_back(t.agent);
    return TurnResult{};
  });
  ASSERT_TRUE(r.start());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(r.accept(msg(fmt::format("a-{}", i % 50), fmt::format("a{}", i), "x")));
  ASSERT_TRUE(r.accept(msg("b-1", "b0", "x")));
  go = true;
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard g(mu);
    return order.size() == 101;
  }));
  std::lock_guard g(mu);
  auto pos = std::find(order.begin(), order.end(), "quiet") - order.begin();
  EXPECT_LE(pos, 3);
}

TEST(RouterTurns, FailingTurnRetriesWithBackoffThenFailsWithAnErrorReply) {
  Store s;
  RecordingChannel web;
  std::mutex mu;
  std::vector<std::chrono::steady_clock::time_point> tries;
  std::vector<int> attempts;
  Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 2, .max_attempts = 3, .retry_base = 60ms});
  r.set_rules({catch_all()});
  r.add_channel(web);
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    std::lock_guard g(mu);
    tries.push_back(std::chrono::steady_clock::now());
    attempts.push_back(t.attempt);
    return fail(ErrorKind::Unavailable, "the model provider is down");
  });
  ASSERT_TRUE(r.start());
  auto a = r.accept(msg("c", "m1", "hello"));
  ASSERT_TRUE(a);
  ASSERT_TRUE(wait_for([&] { return web.size() == 1; }));
  {
    std::lock_guard g(mu);
    ASSERT_EQ(tries.size(), 3u);
    EXPECT_EQ(attempts, (std::vector<int>{1, 2, 3}));
    EXPECT_GE(tries[1] - tries[0], 55ms);
    EXPECT_GE(tries[2] - tries[1], 115ms);  // doubled
  }
  auto out = web.delivered();
  EXPECT_TRUE(out[0].is_error);
  EXPECT_EQ(out[0].in_reply_to, a->envelope_id);
  EXPECT_NE(out[0].text.find("the model provider is down"), std::string::npos) << out[0].text;
  EXPECT_NE(out[0].text.find("3 attempts"), std::string::npos) << out[0].text;
  auto failed = r.messages("failed", "a", 10);
  ASSERT_TRUE(failed);
  ASSERT_EQ(failed->size(), 1u);
  EXPECT_EQ((*failed)[0].attempts, 3);
  EXPECT_EQ((*failed)[0].error, "the model provider is down");
  r.stop();
  EXPECT_EQ(s.count("SELECT count(*) FROM audit WHERE kind = 'message.failed'"), 1);
}

TEST(RouterTurns, BackoffSurvivesARestart) {
  Store s;
  std::atomic<int> calls{0};
  {
    Router r(*s.db, *s.audit, RouterOptions{.max_attempts = 3, .retry_base = 10s});
    r.set_rules({catch_all()});
    r.set_turn_runner([&](const Turn&, const LiveSink&) -> Result<TurnResult> {
      ++calls;
      return fail(ErrorKind::Unavailable, "down");
    });
    ASSERT_TRUE(r.start());
    ASSERT_TRUE(r.accept(msg("c", "m1", "x")));
    ASSERT_TRUE(wait_for([&] { return calls.load() == 1; }));
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GT(s.count("SELECT not_before_ms FROM envelopes"), 0);
  Router r(*s.db, *s.audit, RouterOptions{.max_attempts = 3, .retry_base = 10s});
  r.set_turn_runner([&](const Turn&, const LiveSink&) -> Result<TurnResult> {
    ++calls;
    return TurnResult{};
  });
  ASSERT_TRUE(r.start());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(calls.load(), 1);  // still backing off
  EXPECT_EQ(r.stats().queued, 1u);
}

TEST(RouterTurns, InvalidInputIsNotRetried) {
  Store s;
  RecordingChannel web;
  std::atomic<int> calls{0};
  Router r(*s.db, *s.audit, RouterOptions{.max_attempts = 5, .retry_base = 10ms});
  r.set_rules({catch_all()});
  r.add_channel(web);
  r.set_turn_runner([&](const Turn&, const LiveSink&) -> Result<TurnResult> {
    ++calls;
    return fail(ErrorKind::InvalidInput, "agent a has no model configured");
  });
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept(msg("c", "m1", "x")));
  ASSERT_TRUE(wait_for([&] { return web.size() == 1; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(web.delivered()[0].is_error);
  EXPECT_NE(web.delivered()[0].text.find("misconfigured"), std::string::npos);
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes WHERE state = 'failed' AND attempts = 1"), 1);
}

TEST(RouterTurns, QueuedRunningAndUndeliveredResumeAfterRecreation) {
  Store s;
  int64_t answered_id = 0;
  {
    // First life: one envelope is answered but its reply cannot be delivered (channel down);
    // two more are accepted and never run (no runner).
    RecordingChannel down;
    down.hook = [](const Outbound&) -> Status { return fail(ErrorKind::Unavailable, "network down"); };
    Router r(*s.db, *s.audit, RouterOptions{.delivery_retry_base = 20ms});
    r.set_rules({catch_all()});
    r.add_channel(down);
    std::atomic<bool> ran{false};
    r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
      ran = true;
      return TurnResult{{"answer:" + t.envelopes[0].text}};
    });
    ASSERT_TRUE(r.start());
    auto a = r.accept(msg("c1", "m1", "first"));
    ASSERT_TRUE(a);
    answered_id = a->envelope_id;
    ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE attempts >= 1") == 1; }));
    r.set_turn_runner({});
  }
  {
    Router r(*s.db, *s.audit);
    r.set_rules({catch_all()});
    ASSERT_TRUE(r.accept(msg("c2", "m2", "second")));
    ASSERT_TRUE(r.accept(msg("c2", "m3", "third")));
  }
  // Simulate a crash mid-turn: m2 was running when moatd died.
  ASSERT_TRUE(s.db->exec("UPDATE envelopes SET state = 'running', attempts = 1 WHERE message_id = 'm2'"));
  s.close();
  s.open();
  RecordingChannel web;
  std::mutex mu;
  std::vector<std::string> ran;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(web);
  r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    std::lock_guard g(mu);
    TurnResult res;
    for (auto& e : t.envelopes) {
      ran.push_back(e.text);
      res.replies.push_back("answer:" + e.text);
    }
    // m2's crashed try counts; m3 (never tried) is not batched with m2's retry but runs after it.
    EXPECT_EQ(t.attempt, t.envelopes[0].text == "second" ? 2 : 1);
    EXPECT_EQ(t.envelopes.size(), 1u);
    return res;
  });
  EXPECT_EQ(r.stats().undelivered, 1u);
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(wait_for([&] { return web.size() == 3; }));
  // Order holds per chat; c1's row may wait out the backoff its failed delivery stored.
  std::vector<std::string> c2;
  int firsts = 0;
  for (const auto& o : web.delivered()) {
    EXPECT_EQ(o.key, fmt::format("o{}", o.id));
    if (o.chat == "c2") c2.push_back(o.text);
    if (o.chat == "c1") {
      ++firsts;
      EXPECT_EQ(o.text, "answer:first");
      EXPECT_EQ(o.in_reply_to, answered_id);
    }
  }
  EXPECT_EQ(firsts, 1);
  EXPECT_EQ(c2, (std::vector<std::string>{"answer:second", "answer:third"}));
  std::lock_guard g(mu);
  EXPECT_EQ(ran, (std::vector<std::string>{"second", "third"}));
}

TEST(RouterTurns, DeliveryRetriesInOrderAndGivesUpOnUndeliverable) {
  Store s;
  RecordingChannel web;
  std::atomic<int> fails{2};
  web.hook = [&](const Outbound& o) -> Status {
    if (o.text == "bad") return fail(ErrorKind::InvalidInput, "chat does not exist");
    if (o.text == "one" && fails.fetch_sub(1) > 0) return fail(ErrorKind::Unavailable, "try later");
    return {};
  };
  Router r(*s.db, *s.audit, RouterOptions{.delivery_retry_base = 20ms});
  r.add_channel(web);
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.send("a", "web", "c1", "one"));
  ASSERT_TRUE(r.send("a", "web", "c1", "two"));
  ASSERT_TRUE(r.send("a", "web", "c2", "bad"));
  ASSERT_TRUE(r.send("a", "web", "c2", "after bad"));
  ASSERT_TRUE(r.send("a", "nowhere", "c3", "waits"));
  EXPECT_FALSE(r.send("a", "web", "", "x"));
  ASSERT_TRUE(wait_for([&] { return web.size() == 3; }));
  auto out = web.delivered();
  std::vector<std::string> c1;
  for (auto& o : out)
    if (o.chat == "c1") c1.push_back(o.text);
  EXPECT_EQ(c1, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(s.count("SELECT count(*) FROM outbox WHERE failed != ''"), 1);
  EXPECT_EQ(r.stats().undelivered, 1u);  // the unregistered channel's row waits
}

TEST(RouterTurns, LiveEventsReachTheChannelAndElsewhereMessagesAreSent) {
  Store s;
  RecordingChannel web, tg("telegram");
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(web);
  r.add_channel(tg);
  r.set_turn_runner([&](const Turn& t, const LiveSink& live) -> Result<TurnResult> {
    live("text", Json{{"text", "thinking"}});
    TurnResult res{{"done"}};
    res.elsewhere.push_back({"telegram", "ops", "fyi"});
    return res;
  });
  ASSERT_TRUE(r.start());
  Envelope e = msg("c", "m1", "x");
  e.reply_to = "https://example.test/callback";
  ASSERT_TRUE(r.accept(e));
  ASSERT_TRUE(wait_for([&] { return web.size() == 1 && tg.size() == 1; }));
  EXPECT_EQ(web.delivered()[0].reply_to, "https://example.test/callback");  // kept through the store
  EXPECT_EQ(tg.delivered()[0].reply_to, "");  // another chat: not a reply
  {
    std::lock_guard g(web.mu);
    ASSERT_EQ(web.lives.size(), 3u);  // the router's turn_started, the runner's text, the router's turn_ended
    EXPECT_EQ(web.lives[0].kind, "turn_started");
    EXPECT_EQ(web.lives[0].data["attempt"], 1);
    EXPECT_EQ(web.lives[1].kind, "text");
    EXPECT_EQ(web.lives[1].data["text"], "thinking");
    EXPECT_EQ(web.lives[1].agent, "a");
    EXPECT_EQ(web.lives[2].kind, "turn_ended");
    EXPECT_EQ(web.lives[2].data["outcome"], "answered");
    EXPECT_EQ(web.lives[2].data["replies"], 1);
  }
  EXPECT_EQ(tg.delivered()[0].chat, "ops");
  EXPECT_EQ(tg.delivered()[0].text, "fyi");
}

TEST(RouterTurns, RemovedAgentsQueuedMessagesFail) {
  Store s;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all("gone"), catch_all("stays")});
  ASSERT_TRUE(r.start());  // no runner: everything stays queued
  ASSERT_TRUE(r.accept(msg("c", "m1", "x")));
  EXPECT_EQ(r.stats().queued, 1u);
  r.set_rules({catch_all("stays")});
  EXPECT_EQ(r.stats().queued, 0u);
  auto failed = r.messages("failed", "gone", 10);
  ASSERT_TRUE(failed);
  ASSERT_EQ(failed->size(), 1u);
  EXPECT_NE((*failed)[0].error.find("removed"), std::string::npos);
}

TEST(RouterTurns, ChannelHistoryIsWhatTheChannelShowedInOrder) {
  Store s;
  RecordingChannel web;
  web.hook = [](const Outbound& o) -> Status {
    if (o.text == "r-never") return fail(ErrorKind::Unavailable, "the channel is down");
    return {};
  };
  {
    Router r(*s.db, *s.audit, RouterOptions{.delivery_retry_base = 10s});
    r.set_rules({catch_all()});
    r.add_channel(web);
    r.set_turn_runner([](const Turn& t, const LiveSink&) -> Result<TurnResult> {
      TurnResult res;
      for (auto& e : t.envelopes) res.replies.push_back("r-" + e.text);
      return res;
    });
    ASSERT_TRUE(r.start());
    ASSERT_TRUE(r.accept(msg("c1", "m1", "first")));
    ASSERT_TRUE(wait_for([&] { return web.size() == 1; }));
    ASSERT_TRUE(r.accept(msg("c2", "m2", "second")));
    ASSERT_TRUE(wait_for([&] { return web.size() == 2; }));
    ASSERT_TRUE(r.accept(msg("c1", "m3", "never")));  // its reply is refused: not shown, so not history
    ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE attempts > 0") == 1; }));
    ASSERT_TRUE(r.accept(msg("c9", "m4", "elsewhere", "alice", "terminal")));  // another channel
  }
  Router again(*s.db, *s.audit);
  auto h = again.channel_history("web", 100, 100);
  ASSERT_TRUE(h) << h.error().message;
  std::vector<std::string> seen;
  for (auto& m : *h) seen.push_back(fmt::format("{} {} {} {}", m.role, m.chat, m.key, m.text));
  auto delivered = web.delivered();
  ASSERT_EQ(delivered.size(), 2u);
  EXPECT_EQ(seen, (std::vector<std::string>{"user c1 m1 first", fmt::format("agent c1 {} r-first", delivered[0].key),
                                            "user c2 m2 second", fmt::format("agent c2 {} r-second", delivered[1].key),
                                            "user c1 m3 never"}));
  EXPECT_EQ((*h)[1].in_reply_to, 1);
  EXPECT_EQ((*h)[1].at_ms, delivered[0].created_ms);
  EXPECT_GT((*h)[1].at_ms, 0);
  // The newest of each kind, as many as asked for.
  auto last = again.channel_history("web", 1, 1);
  ASSERT_TRUE(last);
  ASSERT_EQ(last->size(), 2u);
  EXPECT_EQ((*last)[0].text, "r-second");
  EXPECT_EQ((*last)[1].text, "never");
  auto replies_only = again.channel_history("web", 0, 5);
  ASSERT_TRUE(replies_only);
  ASSERT_EQ(replies_only->size(), 2u);
  EXPECT_EQ((*replies_only)[0].role, "agent");
}

// Within one millisecond (the clock's grain), replies still follow the message they answer: two
// replies of one turn in their own order, an unsolicited one after the messages of its millisecond.
TEST(RouterTurns, ChannelHistoryTiesInOneMillisecondKeepQuestionBeforeAnswer) {
  auto user = [](int64_t id, int64_t ms) {
    return ChannelMessage{.role = "user", .key = fmt::format("m{}", id), .envelope_id = id, .at_ms = ms};
  };
  auto agent = [](int64_t outbox, int64_t answers, int64_t ms) {
    return ChannelMessage{.role = "agent", .key = fmt::format("o{}", outbox), .in_reply_to = answers, .at_ms = ms};
  };
  // Each kind oldest first, as channel_history reads them; everything in millisecond 7 but the last.
  std::vector<ChannelMessage> h{user(1, 7), user(2, 7), user(3, 7), user(4, 9),
                                agent(10, 2, 7), agent(11, 2, 7), agent(12, 0, 7), agent(13, 1, 7)};
  sort_channel_history(h);
  std::vector<std::string> keys;
  for (auto& m : h) keys.push_back(m.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"m1", "o13", "m2", "o10", "o11", "m3", "o12", "m4"}));
}
