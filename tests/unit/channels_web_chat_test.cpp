// The web chat over real HTTP on a real socket: page and headers, sessions, CSRF, accept() fields
// and dedupe, streamed events, durable delivery exactly once, Last-Event-ID replay, and the shared
// HTTP server's limits.
#include <gtest/gtest.h>

#include <regex>

#include "channels/web/web_chat.h"
#include "channels_test_client.h"
#include "net/http_server.h"

namespace moat::channels {
namespace {

using testing::FakeRouter;
using testing::http_call;
using testing::SseClient;

class WebChatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    chat = std::make_unique<WebChat>(router.accept_fn(), [] {
      return std::vector<AgentInfo>{{"helper", "answers questions"}, {"coder", ""}};
    });
    net::ServerOptions o;
    o.port = 0;
    o.sse_heartbeat = std::chrono::milliseconds(200);
    server = std::make_unique<net::HttpServer>(o);
    chat->register_routes(*server);
    ASSERT_TRUE(server->start());
    port = server->port();
  }
  void TearDown() override { server->stop(); }

  // A session as a browser gets one: from the page's Set-Cookie.
  std::string session_cookie() {
    auto r = http_call(port, "GET", "/");
    std::smatch m;
    std::string sc = r.header("set-cookie");
    EXPECT_TRUE(std::regex_search(sc, m, std::regex("moat_session=([0-9a-f]{32})"))) << sc;
    return m.size() > 1 ? m[1].str() : std::string{};
  }
  testing::Reply post(const std::string& session, const Json& body, bool csrf = true) {
    testing::HeaderList h{{"Cookie", "moat_session=" + session}, {"Content-Type", "application/json"}};
    if (csrf) h.emplace_back("X-Moat", "1");
    return http_call(port, "POST", "/api/messages", h, body.dump());
  }
  router::Outbound reply(const std::string& session, const std::string& key, const std::string& text) {
    router::Outbound o;
    o.key = key;
    o.channel = "web";
    o.chat = WebChat::chat_id("helper", session);
    o.agent = "helper";
    o.text = text;
    o.in_reply_to = 1;
    return o;
  }

  FakeRouter router;
  std::unique_ptr<WebChat> chat;
  std::unique_ptr<net::HttpServer> server;
  uint16_t port = 0;
};

TEST_F(WebChatTest, PageIsServedWithStrictHeadersAndASessionCookie) {
  auto r = http_call(port, "GET", "/");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.header("content-type").find("text/html"), std::string::npos);
  EXPECT_NE(r.header("content-security-policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(r.header("content-security-policy").find("unsafe-inline"), std::string::npos);
  EXPECT_EQ(r.header("x-content-type-options"), "nosniff");
  std::string cookie = r.header("set-cookie");
  EXPECT_TRUE(std::regex_search(cookie, std::regex("^moat_session=[0-9a-f]{32};"))) << cookie;
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
  // No inline script: the page loads its script from itself.
  EXPECT_NE(r.body.find("<script src=\"/chat.js\""), std::string::npos);
  EXPECT_EQ(r.body.find("<script>"), std::string::npos);
  EXPECT_EQ(r.body.find("<style"), std::string::npos);

  // A browser that already has a session keeps it.
  auto again = http_call(port, "GET", "/", {{"Cookie", "moat_session=" + std::string(32, 'a')}});
  EXPECT_EQ(again.header("set-cookie"), "");

  auto js = http_call(port, "GET", "/chat.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_NE(js.header("content-type").find("javascript"), std::string::npos);
  EXPECT_EQ(js.body.find("innerHTML"), std::string::npos);  // agent text is only set with textContent
  EXPECT_EQ(http_call(port, "GET", "/chat.css").status, 200);
  EXPECT_EQ(http_call(port, "GET", "/nope").status, 404);
}

TEST_F(WebChatTest, ForeignHostNamesAreRefused) {
  // DNS rebinding: evil.example resolving to 127.0.0.1 must not get the page or the API.
  auto r = http_call(port, "GET", "/", {{"Host", "evil.example:7700"}}, "", false);
  EXPECT_EQ(r.status, 421);
  EXPECT_TRUE(r.json().contains("error"));
  EXPECT_EQ(http_call(port, "GET", "/", {{"Host", "localhost:1"}}, "", false).status, 200);
  // The Host header is read by the one authority parser: IPv6 in brackets, case and a trailing dot
  // do not matter, and anything that is not an authority is refused.
  EXPECT_EQ(http_call(port, "GET", "/", {{"Host", "[::1]:7700"}}, "", false).status, 200);
  EXPECT_EQ(http_call(port, "GET", "/", {{"Host", "LocalHost."}}, "", false).status, 200);
  EXPECT_EQ(http_call(port, "GET", "/", {{"Host", "localhost.evil.example"}}, "", false).status, 421);
  EXPECT_EQ(http_call(port, "GET", "/", {{"Host", "localhost@evil.example"}}, "", false).status, 421);
  EXPECT_EQ(http_call(port, "GET", "/", {{"Host", "[::1"}}, "", false).status, 421);
}

TEST_F(WebChatTest, ApiNeedsASessionAndPostsNeedTheCsrfMark) {
  EXPECT_EQ(http_call(port, "GET", "/api/agents").status, 401);
  std::string s = session_cookie();
  auto agents = http_call(port, "GET", "/api/agents", {{"Cookie", "moat_session=" + s}});
  ASSERT_EQ(agents.status, 200);
  EXPECT_EQ(agents.json()["agents"][0]["name"], "helper");
  EXPECT_EQ(agents.json()["agents"].size(), 2u);

  Json msg{{"agent", "helper"}, {"text", "hi"}, {"client_id", "c1"}};
  auto no_mark = post(s, msg, false);
  EXPECT_EQ(no_mark.status, 403);
  EXPECT_NE(no_mark.json()["error"].get<std::string>().find("X-Moat"), std::string::npos);
  auto cross = http_call(port, "POST", "/api/messages",
                         {{"Cookie", "moat_session=" + s}, {"Origin", "http://evil.example"}}, msg.dump());
  EXPECT_EQ(cross.status, 403);
  auto same = http_call(port, "POST", "/api/messages",
                        {{"Cookie", "moat_session=" + s}, {"Origin", "http://127.0.0.1:" + std::to_string(port)}},
                        msg.dump());
  EXPECT_EQ(same.status, 200) << same.body;
  EXPECT_EQ(router.envelopes().size(), 1u);
}

TEST_F(WebChatTest, PostReachesTheRouterWithTheRightFieldsAndResubmitsDedupe) {
  std::string s = session_cookie();
  auto r = post(s, Json{{"agent", "helper"}, {"text", "what is 2+2?"}, {"client_id", "m-1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["outcome"], "queued");
  EXPECT_EQ(r.json()["envelope_id"], 1);
  auto envs = router.envelopes();
  ASSERT_EQ(envs.size(), 1u);
  const auto& e = envs[0];
  EXPECT_EQ(e.channel, "web");
  EXPECT_EQ(e.chat, "helper/web-" + s);
  EXPECT_EQ(e.sender, "web-" + s);
  EXPECT_EQ(e.message_id, s + ":m-1");
  EXPECT_EQ(e.text, "what is 2+2?");
  EXPECT_TRUE(e.direct);
  EXPECT_EQ(e.agent, "helper");

  auto again = post(s, Json{{"agent", "helper"}, {"text", "what is 2+2?"}, {"client_id", "m-1"}});
  EXPECT_EQ(again.json()["outcome"], "duplicate");
  EXPECT_EQ(again.json()["envelope_id"], 1);
  EXPECT_EQ(router.envelopes().size(), 1u);

  // History holds the user's message once.
  auto h = http_call(port, "GET", "/api/history", {{"Cookie", "moat_session=" + s}});
  ASSERT_EQ(h.json()["messages"].size(), 1u);
  EXPECT_EQ(h.json()["messages"][0]["role"], "user");
  EXPECT_EQ(h.json()["messages"][0]["key"], "u:m-1");
}

TEST_F(WebChatTest, BadMessagesGetClearErrors) {
  std::string s = session_cookie();
  EXPECT_EQ(post(s, Json{{"agent", "nobody"}, {"text", "x"}, {"client_id", "a"}}).status, 404);
  EXPECT_EQ(post(s, Json{{"agent", "helper"}, {"text", ""}, {"client_id", "a"}}).status, 400);
  EXPECT_EQ(post(s, Json{{"agent", "helper"}, {"text", "x"}, {"client_id", "bad id!"}}).status, 400);
  auto garbage = http_call(port, "POST", "/api/messages", {{"Cookie", "moat_session=" + s}, {"X-Moat", "1"}}, "{not json");
  EXPECT_EQ(garbage.status, 400);
  EXPECT_TRUE(garbage.json().contains("error"));
  EXPECT_EQ(http_call(port, "GET", "/api/messages", {{"Cookie", "moat_session=" + s}}).status, 405);
  EXPECT_TRUE(router.envelopes().empty());
}

TEST_F(WebChatTest, EventsCarryLiveTextAndEachDurableMessageOnce) {
  std::string s = session_cookie();
  SseClient sse(port, "/api/events", {{"Cookie", "moat_session=" + s}});
  EXPECT_EQ(sse.head().status, 200);
  EXPECT_NE(sse.head().header("content-type").find("text/event-stream"), std::string::npos);
  auto ready = sse.next();
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->event, "ready");

  std::string chat_id = WebChat::chat_id("helper", s);
  chat->live(router::LiveEvent{"web", chat_id, "helper", "text", Json{{"text", "thinking"}}});
  chat->live(router::LiveEvent{"web", chat_id, "helper", "tool_call", Json{{"name", "bash"}, {"input", {{"cmd", "ls"}}}}});
  // Another session's events never show up here.
  chat->live(router::LiveEvent{"web", WebChat::chat_id("helper", std::string(32, 'b')), "helper", "text", Json{{"text", "other"}}});
  ASSERT_TRUE(chat->deliver(reply(s, "o1", "the answer is 4")));
  ASSERT_TRUE(chat->deliver(reply(s, "o1", "the answer is 4")));  // redelivery after a crash
  ASSERT_TRUE(chat->deliver(reply(s, "o2", "anything else?")));

  auto e1 = sse.next();
  ASSERT_TRUE(e1);
  EXPECT_EQ(e1->event, "live");
  Json j1 = Json::parse(e1->data);
  EXPECT_EQ(j1["kind"], "text");
  EXPECT_EQ(j1["data"]["text"], "thinking");
  EXPECT_TRUE(e1->id.empty());  // live events do not move Last-Event-ID
  auto e2 = sse.next();
  ASSERT_TRUE(e2);
  EXPECT_EQ(Json::parse(e2->data)["kind"], "tool_call");
  EXPECT_EQ(Json::parse(e2->data)["data"]["name"], "bash");
  auto m1 = sse.next();
  ASSERT_TRUE(m1);
  EXPECT_EQ(m1->event, "message");
  EXPECT_EQ(m1->id, "o1");
  EXPECT_EQ(Json::parse(m1->data)["text"], "the answer is 4");
  EXPECT_EQ(Json::parse(m1->data)["role"], "agent");
  auto m2 = sse.next();
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->id, "o2");  // o1 came once
  EXPECT_FALSE(sse.next(std::chrono::milliseconds(500)));  // heartbeats are comments, nothing else

  auto h = http_call(port, "GET", "/api/history", {{"Cookie", "moat_session=" + s}});
  EXPECT_EQ(h.json()["messages"].size(), 2u);
}

TEST_F(WebChatTest, ReconnectWithLastEventIdReplaysOnlyNewerMessages) {
  std::string s = session_cookie();
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(chat->deliver(reply(s, fmt::format("o{}", i), fmt::format("m{}", i))));
  SseClient sse(port, "/api/events", {{"Cookie", "moat_session=" + s}, {"Last-Event-ID", "o1"}});
  ASSERT_EQ(sse.next()->event, "ready");
  EXPECT_EQ(sse.next()->id, "o2");
  EXPECT_EQ(sse.next()->id, "o3");
  EXPECT_FALSE(sse.next(std::chrono::milliseconds(300)));

  SseClient by_query(port, "/api/events?after=o2", {{"Cookie", "moat_session=" + s}});
  ASSERT_EQ(by_query.next()->event, "ready");
  EXPECT_EQ(by_query.next()->id, "o3");

  SseClient fresh(port, "/api/events", {{"Cookie", "moat_session=" + s}});
  ASSERT_EQ(fresh.next()->event, "ready");
  EXPECT_EQ(fresh.next()->id, "o1");  // no Last-Event-ID: everything retained

  // A message for a chat that is not a web chat is never deliverable.
  router::Outbound bad = reply(s, "o9", "x");
  bad.chat = "somewhere";
  auto st = chat->deliver(bad);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().error.kind, ErrorKind::InvalidInput);
}

TEST_F(WebChatTest, ServerLimits) {
  std::string s = session_cookie();
  std::string big(1100 * 1024, 'x');
  auto r = http_call(port, "POST", "/api/messages", {{"Cookie", "moat_session=" + s}, {"X-Moat", "1"}}, big);
  EXPECT_EQ(r.status, 413);
  EXPECT_TRUE(r.json().contains("error"));

  // Garbage instead of HTTP gets a JSON 400.
  int fd = testing::connect_loopback(port);
  ASSERT_GE(fd, 0);
  UniqueFd guard(fd);
  testing::send_all(fd, "HELLO THERE\r\n\r\n");
  std::string buf;
  testing::read_until(fd, buf, [](const std::string&) { return false; }, std::chrono::seconds(5));
  EXPECT_NE(buf.find("HTTP/1.1 400"), std::string::npos) << buf;
  EXPECT_NE(buf.find("\"error\""), std::string::npos);
}

}  // namespace
}  // namespace moat::channels
