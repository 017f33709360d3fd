// What a pulling channel and the outbox keep for the platforms: a channel's cursor is committed in the
// same transaction as the envelopes it covers (and never without them), a delivery's platform message
// id is kept with its outbox row and its audit record, and a platform's retry_after replaces the
// router's own backoff.
#include "router/envelope_repo.h"
#include "router_test_util.h"
#include "support/raw_sqlite.h"

using namespace moat;
using namespace moat::router;
using namespace moat::router::test;
using moat::testing::raw_exec;
using namespace std::chrono_literals;

TEST(RouterChannelState, TheCursorIsCommittedWithTheEnvelopesItCovers) {
  Store s;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  ASSERT_TRUE(r.start());
  auto none = r.channel_cursor("telegram");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  auto first = r.accept_with_cursor({msg("c1", "u1", "one", "alice", "telegram"), msg("c1", "u2", "two", "alice", "telegram")},
                                    ChannelCursor{"telegram", Json{{"offset", 1002}}});
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_EQ(first->size(), 2u);
  for (auto& a : *first) EXPECT_EQ(a->outcome, Acceptance::Outcome::Queued);
  EXPECT_EQ(*r.channel_cursor("telegram").value(), (Json{{"offset", 1002}}));

  // A refetch after a crash brings the same messages again: duplicates, and the cursor moves on.
  auto again = r.accept_with_cursor({msg("c1", "u2", "two", "alice", "telegram"), msg("c1", "u3", "three", "alice", "telegram")},
                                    ChannelCursor{"telegram", Json{{"offset", 1003}}});
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)[0]->outcome, Acceptance::Outcome::Duplicate);
  EXPECT_EQ((*again)[1]->outcome, Acceptance::Outcome::Queued);
  EXPECT_EQ(*r.channel_cursor("telegram").value(), (Json{{"offset", 1003}}));

  // A poll with nothing to accept still moves the cursor; an invalid envelope does not hold it back.
  Envelope bad = msg("c1", "", "no id", "alice", "telegram");
  auto empty = r.accept_with_cursor({bad}, ChannelCursor{"telegram", Json{{"offset", 1004}}});
  ASSERT_TRUE(empty);
  EXPECT_FALSE((*empty)[0].has_value());
  EXPECT_EQ(*r.channel_cursor("telegram").value(), (Json{{"offset", 1004}}));
  // Each channel has its own.
  ASSERT_TRUE(r.accept_with_cursor({}, ChannelCursor{"discord", Json{{"session_id", "s1"}, {"seq", 7}}}));
  EXPECT_EQ((*r.channel_cursor("discord").value())["seq"], 7);
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes WHERE channel = 'telegram'"), 3);
}

TEST(RouterChannelState, AFailedCommitStoresNothingAndLeavesTheCursor) {
  Store s;
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.accept_with_cursor({}, ChannelCursor{"telegram", Json{{"offset", 10}}}));
  // The store refuses the cursor's write (as a full disk or an I/O error would): the whole
  // transaction goes, envelopes included, and the channel is told so it does not move on.
  raw_exec(s.dir / "moat.db",
           "CREATE TRIGGER refuse BEFORE UPDATE ON channel_cursors BEGIN SELECT RAISE(ABORT, 'disk says no'); END;");
  auto refused = r.accept_with_cursor({msg("c1", "u11", "eleven", "alice", "telegram")},
                                      ChannelCursor{"telegram", Json{{"offset", 11}}});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("disk says no"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("channel telegram"), std::string::npos) << refused.error().message;
  EXPECT_EQ(s.count("SELECT count(*) FROM envelopes"), 0);
  EXPECT_EQ(*r.channel_cursor("telegram").value(), (Json{{"offset", 10}}));
  // The same fetch, once the store takes writes again, is accepted as if the first try never was.
  raw_exec(s.dir / "moat.db", "DROP TRIGGER refuse;");
  auto ok = r.accept_with_cursor({msg("c1", "u11", "eleven", "alice", "telegram")}, ChannelCursor{"telegram", Json{{"offset", 11}}});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ((*ok)[0]->outcome, Acceptance::Outcome::Queued);
  EXPECT_EQ(*r.channel_cursor("telegram").value(), (Json{{"offset", 11}}));
}

TEST(RouterChannelState, ThePlatformsMessageIdIsKeptWithTheOutboxRowAndItsRecord) {
  Store s;
  RecordingChannel web;
  web.platform = [](const Outbound& o) -> DeliveryResult { return Delivered{"platform-" + o.key}; };
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(web);
  ASSERT_TRUE(r.start());
  auto id = r.send("a", "web", "c1", "hello");
  ASSERT_TRUE(id);
  ASSERT_TRUE(wait_for([&] { return web.size() == 1; }, 10s));
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 10s));
  EXPECT_EQ(outbox_platform_id(*s.db, *id).value(), fmt::format("platform-o{}", *id));
  EXPECT_EQ(s.count(fmt::format("SELECT count(*) FROM audit WHERE kind = 'message.out' AND data LIKE '%\"platform_id\":\"platform-o{}\"%'", *id)), 1);
}

TEST(RouterChannelState, APlatformsRetryAfterReplacesTheRoutersBackoff) {
  Store s;
  RecordingChannel web;
  std::mutex mu;
  std::vector<std::chrono::steady_clock::time_point> tries;
  web.platform = [&](const Outbound&) -> DeliveryResult {
    std::lock_guard g(mu);
    tries.push_back(std::chrono::steady_clock::now());
    if (tries.size() == 1) return delivery_failed(Error{ErrorKind::Unavailable, "429 Too Many Requests"}, 300ms);
    return Delivered{"m1"};
  };
  // The router's own backoff would wait 20 s before the second try.
  Router r(*s.db, *s.audit, RouterOptions{.delivery_retry_base = 20s});
  r.set_rules({catch_all()});
  r.add_channel(web);
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.send("a", "web", "c1", "hello"));
  ASSERT_TRUE(wait_for([&] { return web.size() == 1; }, 10s)) << "the retry did not come within 10 s";
  std::lock_guard g(mu);
  ASSERT_EQ(tries.size(), 2u);
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(tries[1] - tries[0]);
  EXPECT_GE(waited, 290ms);
  EXPECT_LT(waited, 5s);
}

namespace {
// A platform with a 10-character limit that fails once on the part named `fail_key`.
class SmallChannel : public RecordingChannel {
 public:
  using RecordingChannel::RecordingChannel;
  MessageLimit message_limit() const override { return {10, TextUnit::CodePoints}; }
};
}  // namespace

TEST(RouterChannelState, ALongReplyGoesOutInPartsEachUnderItsOwnKeyAndResumesAfterAFailedPart) {
  Store s;
  SmallChannel web;
  std::atomic<int> failures{0};
  web.platform = [&](const Outbound& o) -> DeliveryResult {
    if (o.part == 2 && failures.fetch_add(1) == 0) return delivery_failed(Error{ErrorKind::Unavailable, "dropped"}, 50ms);
    return Delivered{"p-" + o.key};
  };
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(web);
  ASSERT_TRUE(r.start());
  auto id = r.send("a", "web", "c1", "aaaa bbbb cccc dddd eeee ffff");  // 29 characters: 3 parts of at most 10
  ASSERT_TRUE(id);
  ASSERT_TRUE(wait_for([&] { return s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms > 0") == 1; }, 10s));
  auto got = web.delivered();
  std::vector<std::string> keys, texts;
  for (auto& o : got) {
    keys.push_back(o.key);
    texts.push_back(o.text);
    EXPECT_EQ(o.parts, 3u);
  }
  // Parts 1 and 2 went once each; part 3 failed once and went again alone.
  EXPECT_EQ(keys, (std::vector<std::string>{fmt::format("o{}.1", *id), fmt::format("o{}.2", *id), fmt::format("o{}.3", *id)}));
  EXPECT_EQ(texts, (std::vector<std::string>{"aaaa bbbb ", "cccc dddd ", "eeee ffff"}));
  EXPECT_EQ(failures.load(), 2);
  EXPECT_EQ(outbox_platform_id(*s.db, *id).value(), fmt::format("p-o{}.3", *id));
  EXPECT_EQ(s.count(fmt::format("SELECT parts_sent FROM outbox WHERE id = {}", *id)), 2);
}

TEST(RouterChannelState, ARemovedChannelsRepliesWaitUntilItIsAddedAgain) {
  Store s;
  RecordingChannel first("tg"), second("tg"), other("web");
  Router r(*s.db, *s.audit);
  r.set_rules({catch_all()});
  r.add_channel(first);
  r.add_channel(other);
  ASSERT_TRUE(r.start());
  ASSERT_TRUE(r.send("a", "tg", "c1", "one"));
  ASSERT_TRUE(wait_for([&] { return first.size() == 1; }, 10s));
  r.remove_channel("tg");
  ASSERT_TRUE(r.send("a", "tg", "c1", "two"));
  // The outbox goes in id order: once a later row for another channel is out, "two" was passed over.
  ASSERT_TRUE(r.send("a", "web", "c2", "elsewhere"));
  ASSERT_TRUE(wait_for([&] { return other.size() == 1; }, 10s));
  EXPECT_EQ(s.count("SELECT count(*) FROM outbox WHERE delivered_at_ms = 0"), 1);
  EXPECT_EQ(first.size(), 1u);
  r.add_channel(second);
  ASSERT_TRUE(wait_for([&] { return second.size() == 1; }, 10s));
  EXPECT_EQ(second.delivered()[0].text, "two");
  EXPECT_EQ(first.size(), 1u);
}
