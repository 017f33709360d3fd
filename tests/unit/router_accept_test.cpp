// accept(): validation, dedupe, rule matching (order, globs, trigger, mention, direct, senders),
// drop with reason, hold with a pairing code and approve, durability, concurrent callers.
#include <atomic>

#include "router/pairing.h"
#include "router/rule_matcher.h"
#include "router_test_util.h"

using namespace moat;
using namespace moat::router;
using namespace moat::router::test;
using Outcome = Acceptance::Outcome;

TEST(RouterAccept, RefusesIncompleteEnvelopesNamingTheField) {
  Store s;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  for (auto field : {"channel", "chat", "sender", "message_id"}) {
    Envelope e = msg("c1", "m1", "hi");
    if (std::string_view(field) == "channel") e.channel.clear();
    if (std::string_view(field) == "chat") e.chat.clear();
    if (std::string_view(field) == "sender") e.sender.clear();
    if (std::string_view(field) == "message_id") e.message_id.clear();
    auto a = r.accept(e);
    ASSERT_FALSE(a) << field;
    EXPECT_EQ(a.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(a.error().message.find(field), std::string::npos) << a.error().message;
  }
  auto big = r.accept(msg("c1", "m2", std::string((1 << 20) + 1, 'x')));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(big.error().message.find("1 MiB"), std::string::npos);
  EXPECT_TRUE(r.accept(msg("c1", "m3", std::string(1 << 20, 'x'))));  // exactly 1 MiB is fine
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes"), 1);
}

TEST(RouterAccept, RepeatIsDuplicateWithTheFirstId) {
  Store s;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all("bot")});
  auto a = r.accept(msg("c1", "m1", "hi"));
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->outcome, Outcome::Queued);
  EXPECT_EQ(a->agent, "bot");
  auto b = r.accept(msg("c1", "m1", "hi again"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->outcome, Outcome::Duplicate);
  EXPECT_EQ(b->envelope_id, a->envelope_id);
  // Same message id on another channel is another message.
  auto c = r.accept(msg("c1", "m1", "hi", "alice", "telegram"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->outcome, Outcome::Queued);
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes"), 2);
  // Each record was committed with its envelope, before accept() returned: another connection sees
  // it now, with the router still running.
  auto reader = s.db->open_reader();
  ASSERT_TRUE(reader);
  EXPECT_EQ(*reader->query_int64("SELECT count(*) FROM audit WHERE kind = 'message.in'"), 2);
  EXPECT_EQ(*reader->query_int64(fmt::format("SELECT count(*) FROM audit WHERE kind = 'message.in' AND "
                                             "json_extract(data, '$.id') = {}", c->envelope_id)), 1);
}

TEST(RouterAccept, UnmatchedIsDroppedAndStoredWithReason) {
  Store s;
  Router r(*s.db, *s.audit);
  RouteRule rule = catch_all("tg");
  rule.channels = {"telegram"};
  r.set_rules({rule});
  auto a = r.accept(msg("c1", "m1", "hi"));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->outcome, Outcome::Dropped);
  EXPECT_NE(a->reason.find("no route rule"), std::string::npos) << a->reason;
  auto dropped = r.messages("dropped", "", 10);
  ASSERT_TRUE(dropped);
  ASSERT_EQ(dropped->size(), 1u);
  EXPECT_EQ((*dropped)[0].envelope.text, "hi");
  EXPECT_EQ((*dropped)[0].error, a->reason);
  r.stop();
  EXPECT_EQ(s.count("SELECT count(*) FROM audit WHERE kind = 'message.dropped'"), 1);
  EXPECT_FALSE(r.messages("bogus", "", 10));
}

TEST(RouterAccept, TriggerMentionAndDirect) {
  Store s;
  Router r(*s.db, *s.audit);
  RouteRule rule = catch_all("bot");
  rule.trigger = "^@?bot\\b";
  r.set_rules({rule});
  auto group = [](std::string id, std::string text) { return msg("g1", std::move(id), std::move(text), "alice", "web", false); };
  auto plain = r.accept(group("m1", "hello all"));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->outcome, Outcome::Dropped);
  EXPECT_NE(plain->reason.find("not addressed"), std::string::npos) << plain->reason;
  EXPECT_EQ(r.accept(group("m2", "@bot what time is it"))->outcome, Outcome::Queued);
  Envelope mentioned = group("m3", "hello all");
  mentioned.mentioned = true;
  EXPECT_EQ(r.accept(mentioned)->outcome, Outcome::Queued);
  EXPECT_EQ(r.accept(msg("d1", "m4", "hello", "alice", "web", true))->outcome, Outcome::Queued);  // direct chat
  // Not required in groups: every message goes.
  rule.require_trigger_in_groups = false;
  r.set_rules({rule});
  EXPECT_EQ(r.accept(group("m5", "hello all"))->outcome, Outcome::Queued);
  // A second agent with its own trigger in the same group chat: the trigger picks the agent.
  RouteRule a = catch_all("alpha"), b = catch_all("beta");
  a.trigger = "^@alpha";
  b.trigger = "^@beta";
  r.set_rules({a, b});
  EXPECT_EQ(r.accept(group("m6", "@beta hi"))->agent, "beta");
  EXPECT_EQ(r.accept(group("m7", "@alpha hi"))->agent, "alpha");
}

TEST(RouterAccept, InvalidTriggerIsReportedAndLeftOut) {
  RouteRule bad = catch_all("bad");
  bad.trigger = "([unclosed";
  auto st = Router::validate_rules({catch_all("ok"), bad});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(st.error().message.find("bad"), std::string::npos);
  Store s;
  Router r(*s.db, *s.audit);
  bad.channels = {"web"};
  RouteRule ok = catch_all("ok");
  r.set_rules({bad, ok});  // bad is left out, ok still routes
  EXPECT_EQ(r.accept(msg("c", "m1", "x"))->agent, "ok");
}

TEST(RouterAccept, FirstRuleWinsAcrossExactAndGlobChats) {
  Store s;
  Router r(*s.db, *s.audit);
  RouteRule glob = catch_all("globber");
  glob.chats = {"web:team-*"};
  RouteRule exact = catch_all("exact");
  exact.chats = {"team-1"};
  RouteRule other = catch_all("other");
  other.channels = {"web"};
  r.set_rules({glob, exact, other});
  EXPECT_EQ(r.accept(msg("team-1", "m1", "x"))->agent, "globber");
  EXPECT_EQ(r.accept(msg("solo", "m2", "x"))->agent, "other");
  r.set_rules({exact, glob, other});
  EXPECT_EQ(r.accept(msg("team-1", "m3", "x"))->agent, "exact");
  EXPECT_EQ(r.accept(msg("team-2", "m4", "x"))->agent, "globber");
  EXPECT_EQ(r.accept(msg("team-1", "m5", "x", "alice", "telegram"))->agent, "exact");  // "chat" form: any channel
  EXPECT_EQ(r.accept(msg("team-2", "m6", "x", "alice", "telegram"))->outcome, Outcome::Dropped);
  // A channel that names its agent gets only that agent's rules.
  Envelope named = msg("team-1", "m7", "x");
  named.agent = "other";
  EXPECT_EQ(r.accept(named)->agent, "other");
}

TEST(RouterAccept, ThousandsOfRulesMatchByIndex) {
  Store s;
  Router r(*s.db, *s.audit);
  std::vector<RouteRule> rules;
  for (int i = 0; i < 10000; ++i) {
    RouteRule x = catch_all(fmt::format("agent-{}", i));
    x.chats = {fmt::format("web:chat-{}", i)};
    rules.push_back(std::move(x));
  }
  r.set_rules(rules);
  EXPECT_EQ(r.accept(msg("chat-9999", "m1", "x"))->agent, "agent-9999");
  EXPECT_EQ(r.accept(msg("chat-0", "m2", "x"))->agent, "agent-0");
  EXPECT_EQ(r.accept(msg("chat-x", "m3", "x"))->outcome, Outcome::Dropped);
}

TEST(RouterAccept, SenderAllowlistDropsOthers) {
  Store s;
  Router r(*s.db, *s.audit);
  RouteRule rule = catch_all("bot");
  rule.senders = {"web:alice", "carol"};
  r.set_rules({rule});
  EXPECT_EQ(r.accept(msg("c", "m1", "x", "alice"))->outcome, Outcome::Queued);
  EXPECT_EQ(r.accept(msg("c", "m2", "x", "carol", "telegram"))->outcome, Outcome::Queued);
  auto bob = r.accept(msg("c", "m3", "x", "bob"));
  EXPECT_EQ(bob->outcome, Outcome::Dropped);
  EXPECT_NE(bob->reason.find("web:bob"), std::string::npos) << bob->reason;
  EXPECT_EQ(r.accept(msg("c", "m4", "x", "alice", "telegram"))->outcome, Outcome::Dropped);
}

TEST(RouterAccept, UnknownSenderIsHeldWithOneCodeAndApprovalRequeuesInOrder) {
  Store s;
  RecordingChannel web;
  std::mutex mu;
  std::vector<std::string> seen;
  {
    Router r(*s.db, *s.audit, RouterOptions{.max_concurrent_turns = 1});
    RouteRule rule = catch_all("bot");
    rule.senders = {"alice"};
    rule.unknown_senders = UnknownSenders::Hold;
    r.set_rules({rule});
    r.add_channel(web);
    r.set_turn_runner([&](const Turn& t, const LiveSink&) -> Result<TurnResult> {
      std::lock_guard g(mu);
      for (auto& e : t.envelopes) seen.push_back(e.text);
      return TurnResult{{"ok"}};
    });
    ASSERT_TRUE(r.start());

    auto h1 = r.accept(msg("bobchat", "m1", "one", "bob"));
    auto h2 = r.accept(msg("bobchat", "m2", "two", "bob"));
    ASSERT_TRUE(h1 && h2);
    EXPECT_EQ(h1->outcome, Outcome::Held);
    EXPECT_EQ(h2->outcome, Outcome::Held);
    EXPECT_EQ(h1->agent, "bot");
    ASSERT_EQ(h1->pairing_code.size(), 8u);
    EXPECT_EQ(h1->pairing_code, h2->pairing_code);
    EXPECT_EQ(h1->pairing_code.find_first_of("01OIL"), std::string::npos);
    // One reply per code, to the chat, naming the command.
    ASSERT_TRUE(wait_for([&] { return web.size() >= 1; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto out = web.delivered();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].chat, "bobchat");
    EXPECT_NE(out[0].text.find("moat approve " + h1->pairing_code), std::string::npos) << out[0].text;
    EXPECT_EQ(s.count("SELECT count(*) FROM envelopes WHERE state = 'held'"), 2);

    auto bad = r.approve("NOTACODE", "owner");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().kind, ErrorKind::NotFound);
    // Lower case with a dash, as an owner might type it.
    std::string typed = h1->pairing_code.substr(0, 4) + "-" + h1->pairing_code.substr(4);
    for (auto& c : typed) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto ok = r.approve(typed, "owner");
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_EQ((*ok)["requeued"], 2);
    EXPECT_EQ((*ok)["sender"], "bob");
    EXPECT_FALSE(r.approve(h1->pairing_code, "owner"));  // used once
    ASSERT_TRUE(wait_for([&] {
      std::lock_guard g(mu);
      return seen.size() == 2;
    }));
    EXPECT_EQ(seen, (std::vector<std::string>{"one", "two"}));
    // Approved now: straight to the queue.
    EXPECT_EQ(r.accept(msg("bobchat", "m3", "three", "bob"))->outcome, Outcome::Queued);
    r.stop();
    EXPECT_EQ(s.count("SELECT count(*) FROM audit WHERE kind = 'sender.approved'"), 1);
    EXPECT_EQ(s.count("SELECT count(*) FROM audit WHERE kind = 'message.held'"), 2);
  }
  // The approval survives a restart.
  Router r2(*s.db, *s.audit);
  RouteRule rule = catch_all("bot");
  rule.senders = {"alice"};
  rule.unknown_senders = UnknownSenders::Hold;
  r2.set_rules({rule});
  EXPECT_EQ(r2.accept(msg("bobchat", "m4", "four", "bob"))->outcome, Outcome::Queued);
}

TEST(RouterAccept, PairingCodesUseTheUnambiguousAlphabet) {
  std::set<std::string> codes;
  for (int i = 0; i < 200; ++i) {
    auto c = new_pairing_code();
    ASSERT_EQ(c.size(), 8u);
    for (char ch : c) EXPECT_NE(std::string_view("ABCDEFGHJKMNPQRSTUVWXYZ23456789").find(ch), std::string_view::npos);
    codes.insert(c);
  }
  EXPECT_GT(codes.size(), 195u);
  EXPECT_TRUE(glob_match("web:*", "web:x"));
  EXPECT_TRUE(glob_match("*-1", "team-1"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYY"));
  EXPECT_FALSE(glob_match("team", "team-1"));
}

TEST(RouterAccept, ConcurrentAcceptFromSixteenThreadsIsAllDurable) {
  Store s;
  constexpr int kThreads = 16, kEach = 400;
  std::vector<int64_t> ids(kThreads * kEach);
  {
    Router r(*s.db, *s.audit);
    r.set_rules({catch_all("bot")});
    std::vector<std::thread> ts;
    std::atomic<int> bad{0};
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          auto a = r.accept(msg(fmt::format("c{}", t), fmt::format("t{}-{}", t, i), fmt::format("{}", i)));
          if (!a || a->outcome != Outcome::Queued) {
            ++bad;
            continue;
          }
          ids[t * kEach + i] = a->envelope_id;
        }
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(bad.load(), 0);
  }
  // Reopen the file: every acknowledged envelope is there, ids unique and, per chat, in send order.
  s.close();
  s.open();
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes WHERE state = 'queued'"), kThreads * kEach);
  EXPECT_EQ(s.count("SELECT count(*) FROM audit WHERE kind = 'message.in'"), kThreads * kEach);
  std::set<int64_t> uniq(ids.begin(), ids.end());
  EXPECT_EQ(uniq.size(), ids.size());
  for (int t = 0; t < kThreads; ++t)
    for (int i = 1; i < kEach; ++i) EXPECT_LT(ids[t * kEach + i - 1], ids[t * kEach + i]);
}

TEST(RouterAccept, AcceptManyAnswersEachEnvelopeInOrder) {
  Store s;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all("bot")});
  std::vector<Envelope> burst = {msg("c", "m1", "one"), msg("", "m2", "no chat"), msg("c", "m1", "repeat"),
                                 msg("c", "m3", "three")};
  auto rs = r.accept_many(burst);
  ASSERT_EQ(rs.size(), 4u);
  ASSERT_TRUE(rs[0]);
  EXPECT_EQ(rs[0]->outcome, Outcome::Queued);
  ASSERT_FALSE(rs[1]);
  EXPECT_EQ(rs[1].error().kind, ErrorKind::InvalidInput);
  ASSERT_TRUE(rs[2]);
  EXPECT_EQ(rs[2]->outcome, Outcome::Duplicate);  // a repeat within the same burst
  EXPECT_EQ(rs[2]->envelope_id, rs[0]->envelope_id);
  ASSERT_TRUE(rs[3]);
  EXPECT_GT(rs[3]->envelope_id, rs[0]->envelope_id);
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes"), 2);
}
