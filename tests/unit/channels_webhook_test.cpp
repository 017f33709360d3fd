// The webhook channel over real HTTP: bearer tokens, accept() fields and dedupe, replies POSTed to
// a real callback server with an Idempotency-Key (retried on failure, never twice once taken), and
// replies kept for polling.
#include <gtest/gtest.h>

#include "channels/webhook/webhook_channel.h"
#include "channels_test_client.h"
#include "net/http_server.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"
#include "support/upstream_server.h"

namespace moat::channels {
namespace {

using testing::FakeRouter;
using testing::http_call;

constexpr const char* kToken = "s3cret-token-for-helper";

// The caller's side: an HTTP server that records the replies moat POSTs to it.
struct CallbackReceiver {
  CallbackReceiver() {
    net::ServerOptions o;
    o.port = 0;
    server = std::make_unique<net::HttpServer>(o);
    server->add_route("/cb", [this](const net::ServerRequest& r) {
      std::lock_guard lock(mu);
      got.push_back(r);
      auto res = net::ServerResponse::json(status, Json{{"ok", status < 300}});
      if (!location.empty()) res.headers.emplace_back("Location", location);
      return res;
    });
    EXPECT_TRUE(server->start());
  }
  std::string url() const { return server->base_url() + "/cb"; }
  std::vector<net::ServerRequest> requests() {
    std::lock_guard lock(mu);
    return got;
  }
  std::mutex mu;
  std::vector<net::ServerRequest> got;
  int status = 200;
  std::string location;  // sent with the answer when set (a redirect)
  std::unique_ptr<net::HttpServer> server;
};

class WebhookTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  // (Re)starts the channel and its server with these options.
  void start(WebhookOptions options) {
    if (server) server->stop();
    hooks = std::make_unique<WebhookChannel>(
        router.accept_fn(),
        [](std::string_view agent) {
          return agent == "helper" ? std::vector<std::string>{"old-token", kToken} : std::vector<std::string>{};
        },
        options);
    net::ServerOptions o;
    o.port = 0;
    server = std::make_unique<net::HttpServer>(o);
    hooks->register_routes(*server);
    ASSERT_TRUE(server->start());
    port = server->port();
  }
  void TearDown() override { server->stop(); }
  int send_with_callback(const std::string& chat, const std::string& callback) {
    return send("helper", Json{{"chat", chat}, {"sender", "ci"}, {"message_id", "m-" + chat}, {"text", "hi"},
                               {"callback_url", callback}})
        .status;
  }

  testing::Reply send(const std::string& agent, const Json& body, const std::string& token = kToken) {
    testing::HeaderList h{{"Content-Type", "application/json"}};
    if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
    return http_call(port, "POST", "/hooks/" + agent, h, body.dump());
  }
  router::Outbound reply(const std::string& key, const std::string& chat, const std::string& text) {
    router::Outbound o;
    o.key = key;
    o.channel = "webhook";
    o.chat = WebhookChannel::chat_id("helper", chat);
    o.agent = "helper";
    o.text = text;
    o.in_reply_to = 1;
    return o;
  }

  FakeRouter router;
  std::unique_ptr<WebhookChannel> hooks;
  std::unique_ptr<net::HttpServer> server;
  uint16_t port = 0;
};

TEST_F(WebhookTest, WrongOrMissingTokenIs401) {
  Json msg{{"chat", "t-1"}, {"sender", "ci"}, {"message_id", "e1"}, {"text", "hi"}};
  auto none = send("helper", msg, "");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.header("www-authenticate"), "Bearer");
  EXPECT_EQ(send("helper", msg, "wrong").status, 401);
  EXPECT_EQ(send("helper", msg, std::string(kToken) + "x").status, 401);
  EXPECT_EQ(send("other", msg).status, 401);  // another agent's hook does not take helper's token
  auto basic = http_call(port, "POST", "/hooks/helper", {{"Authorization", std::string("Basic ") + kToken}}, msg.dump());
  EXPECT_EQ(basic.status, 401);
  EXPECT_EQ(http_call(port, "GET", "/hooks/helper/replies?chat=t-1").status, 401);
  EXPECT_TRUE(router.envelopes().empty());
}

TEST_F(WebhookTest, AcceptedMessageReachesTheRouterAndRetriesDedupe) {
  Json msg{{"chat", "ticket-42"}, {"sender", "ci"}, {"message_id", "evt-1"}, {"text", "build failed"},
           {"sender_name", "CI bot"}};
  auto r = send("helper", msg);
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.json()["outcome"], "queued");
  EXPECT_EQ(r.json()["envelope_id"], 1);
  auto envs = router.envelopes();
  ASSERT_EQ(envs.size(), 1u);
  EXPECT_EQ(envs[0].channel, "webhook");
  EXPECT_EQ(envs[0].chat, "helper/ticket-42");
  EXPECT_EQ(envs[0].sender, "ci");
  EXPECT_EQ(envs[0].sender_name, "CI bot");
  EXPECT_EQ(envs[0].message_id, "helper/evt-1");
  EXPECT_EQ(envs[0].text, "build failed");
  EXPECT_EQ(envs[0].agent, "helper");
  EXPECT_TRUE(envs[0].direct);

  auto again = send("helper", msg);
  EXPECT_EQ(again.status, 202);
  EXPECT_EQ(again.json()["outcome"], "duplicate");
  EXPECT_EQ(router.envelopes().size(), 1u);
}

TEST_F(WebhookTest, BadBodiesAre400) {
  EXPECT_EQ(send("helper", Json{{"chat", "c"}, {"sender", "s"}, {"text", "t"}}).status, 400);  // no message_id
  EXPECT_EQ(send("helper", Json{{"chat", "c"}, {"sender", "s"}, {"message_id", "m"}}).status, 400);
  auto remote = send("helper", Json{{"chat", "c"}, {"sender", "s"}, {"message_id", "m"}, {"text", "t"},
                                    {"callback_url", "http://example.com/x"}});
  EXPECT_EQ(remote.status, 400);
  EXPECT_NE(remote.json()["error"].get<std::string>().find("loopback"), std::string::npos);
  auto junk = http_call(port, "POST", "/hooks/helper", {{"Authorization", std::string("Bearer ") + kToken}}, "[1,2");
  EXPECT_EQ(junk.status, 400);
  EXPECT_EQ(http_call(port, "GET", "/hooks/helper", {{"Authorization", std::string("Bearer ") + kToken}}).status, 405);
  EXPECT_TRUE(router.envelopes().empty());
}

TEST_F(WebhookTest, ReplyIsPostedToTheCallbackWithItsIdempotencyKey) {
  CallbackReceiver cb;
  ASSERT_EQ(send("helper", Json{{"chat", "t-7"}, {"sender", "ci"}, {"message_id", "e7"}, {"text", "hello"},
                                {"callback_url", cb.url()}}).status,
            202);

  cb.status = 503;  // the caller is down: worth a retry
  auto st = hooks->deliver(reply("o5", "t-7", "hello back"));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().error.kind, ErrorKind::Unavailable);

  cb.status = 200;
  ASSERT_TRUE(hooks->deliver(reply("o5", "t-7", "hello back")));
  ASSERT_TRUE(hooks->deliver(reply("o5", "t-7", "hello back")));  // a redelivery: not posted again
  auto got = cb.requests();
  ASSERT_EQ(got.size(), 2u);  // the failed try and the one that took
  EXPECT_EQ(got[1].method, "POST");
  EXPECT_EQ(got[1].header("idempotency-key"), "o5");
  EXPECT_EQ(got[1].header("content-type"), "application/json");
  Json body = Json::parse(got[1].body);
  EXPECT_EQ(body["key"], "o5");
  EXPECT_EQ(body["chat"], "t-7");
  EXPECT_EQ(body["agent"], "helper");
  EXPECT_EQ(body["text"], "hello back");
  EXPECT_EQ(body["in_reply_to"], 1);
  EXPECT_EQ(body["is_error"], false);

  cb.status = 400;  // the caller refuses it for good
  auto refused = hooks->deliver(reply("o6", "t-7", "again"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().error.kind, ErrorKind::InvalidInput);
}

TEST_F(WebhookTest, UnreachableCallbackIsRetryable) {
  // A port nobody listens on (bound then closed).
  uint16_t dead;
  {
    net::ServerOptions o;
    o.port = 0;
    net::HttpServer tmp(o);
    ASSERT_TRUE(tmp.start());
    dead = tmp.port();
  }
  ASSERT_EQ(send("helper", Json{{"chat", "t-8"}, {"sender", "ci"}, {"message_id", "e8"}, {"text", "x"},
                                {"callback_url", fmt::format("http://127.0.0.1:{}/cb", dead)}}).status,
            202);
  auto st = hooks->deliver(reply("o8", "t-8", "y"));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().error.kind, ErrorKind::Unavailable);
}

TEST_F(WebhookTest, RepliesWithoutCallbackAreKeptForPolling) {
  ASSERT_EQ(send("helper", Json{{"chat", "poll me"}, {"sender", "cron"}, {"message_id", "p1"}, {"text", "status?"}}).status,
            202);
  ASSERT_TRUE(hooks->deliver(reply("o10", "poll me", "all green")));
  ASSERT_TRUE(hooks->deliver(reply("o10", "poll me", "all green")));  // repeat dropped
  ASSERT_TRUE(hooks->deliver(reply("o11", "poll me", "still green")));
  testing::HeaderList auth{{"Authorization", std::string("Bearer ") + kToken}};
  auto all = http_call(port, "GET", "/hooks/helper/replies?chat=poll%20me", auth);
  ASSERT_EQ(all.status, 200) << all.body;
  auto list = all.json()["replies"];
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["key"], "o10");
  EXPECT_EQ(list[0]["chat"], "poll me");
  EXPECT_EQ(list[0]["text"], "all green");
  EXPECT_EQ(list[1]["key"], "o11");
  auto newer = http_call(port, "GET", "/hooks/helper/replies?chat=poll+me&after=o10", auth);
  ASSERT_EQ(newer.json()["replies"].size(), 1u);
  EXPECT_EQ(newer.json()["replies"][0]["key"], "o11");
  EXPECT_EQ(http_call(port, "GET", "/hooks/helper/replies?chat=poll+me&after=o11", auth).json()["replies"].size(), 0u);
  EXPECT_EQ(http_call(port, "GET", "/hooks/helper/replies", auth).status, 400);
  EXPECT_EQ(http_call(port, "GET", "/hooks/helper/replies?chat=other", auth).json()["replies"].size(), 0u);
}

}  // namespace
}  // namespace moat::channels

namespace moat::channels {
namespace {

TEST_F(WebhookTest, ExpectContinueIsAnswered) {
  // curl sends "Expect: 100-continue" for bodies over 1 KiB and waits for the go-ahead.
  std::string body = Json{{"chat", "c"}, {"sender", "curl"}, {"message_id", "big"}, {"text", std::string(4000, 'x')}}.dump();
  int fd = testing::connect_loopback(port);
  ASSERT_GE(fd, 0);
  UniqueFd guard(fd);
  testing::send_all(fd, fmt::format("POST /hooks/helper HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n"
                                    "Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n"
                                    "Connection: close\r\n\r\n",
                                    kToken, body.size()));
  std::string buf;
  ASSERT_TRUE(testing::read_until(fd, buf, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; },
                                  std::chrono::seconds(5)));
  EXPECT_TRUE(buf.starts_with("HTTP/1.1 100 Continue")) << buf;
  testing::send_all(fd, body);
  buf.clear();
  testing::read_until(fd, buf, [](const std::string&) { return false; }, std::chrono::seconds(5));
  EXPECT_NE(buf.find("HTTP/1.1 202"), std::string::npos) << buf;
  EXPECT_EQ(router.envelopes().size(), 1u);
}

}  // namespace
}  // namespace moat::channels

namespace moat::channels {
namespace {

TEST_F(WebhookTest, HttpsCallbackIsVerifiedAndDelivered) {
  moat::testing::TempDir dir;
  moat::testing::TestCa ca(dir.path());
  auto cert = ca.issue("cb");
  moat::testing::UpstreamServer::Options o;
  o.tls = moat::testing::UpstreamServer::TlsFiles{cert.cert_path, cert.key_path};
  moat::testing::UpstreamServer cb(o);
  start({.extra_ca_file = ca.ca_cert_path()});
  ASSERT_EQ(send_with_callback("tls", fmt::format("https://localhost:{}/cb", cb.port())), 202);
  ASSERT_TRUE(hooks->deliver(reply("o40", "tls", "over TLS")));
  ASSERT_EQ(cb.requests().size(), 1u);
  EXPECT_EQ(cb.requests()[0].sni, "localhost");
  EXPECT_EQ(cb.requests()[0].header("idempotency-key"), "o40");
}

TEST_F(WebhookTest, PublicCallbacksCannotReachThisHostOrPrivateNetworks) {
  CallbackReceiver local;  // a service on this host that a callback must not be able to reach
  start({.callbacks = CallbackScope::Public});
  // Literal addresses are judged when the message arrives, each with the gateway's class name.
  struct Case {
    std::string url, says;
  };
  for (const auto& c : {Case{local.url(), "loopback"}, Case{"http://10.1.2.3/cb", "private"},
                        Case{"https://169.254.169.254/latest/meta-data", "metadata"},
                        Case{"http://[::1]:80/x", "loopback"}, Case{"http://2130706433/x", "loopback"},
                        Case{"http://192.168.0.10/x", "private"}, Case{"ftp://example.com/x", "http"}}) {
    auto r = send("helper", Json{{"chat", "c"}, {"sender", "s"}, {"message_id", "m"}, {"text", "t"},
                                 {"callback_url", c.url}});
    EXPECT_EQ(r.status, 400) << c.url;
    EXPECT_NE(r.json()["error"].get<std::string>().find(c.says), std::string::npos) << c.url << ": " << r.body;
  }
  EXPECT_TRUE(router.envelopes().empty());

  // A name is judged on what it resolves to, at delivery: "localhost" is accepted as a name, and
  // its reply is refused for good (not retried) without a byte reaching the local service.
  ASSERT_EQ(send_with_callback("named", fmt::format("http://localhost:{}/cb", local.server->port())), 202);
  auto st = hooks->deliver(reply("o41", "named", "must not arrive"));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().error.kind, ErrorKind::InvalidInput);
  EXPECT_NE(st.error().error.message.find("loopback address"), std::string::npos) << st.error().error.message;
  EXPECT_TRUE(local.requests().empty());
  // The reply is still kept for polling.
  testing::HeaderList auth{{"Authorization", std::string("Bearer ") + kToken}};
  EXPECT_EQ(http_call(port, "GET", "/hooks/helper/replies?chat=named", auth).json()["replies"].size(), 1u);
}

TEST_F(WebhookTest, ARedirectIsNotFollowed) {
  // A callback that answers 302 towards another service: the reply is undeliverable, and the
  // other service never hears from moatd.
  CallbackReceiver bouncer, elsewhere;
  bouncer.status = 302;
  bouncer.location = elsewhere.url();
  ASSERT_EQ(send_with_callback("r", bouncer.url()), 202);
  auto st = hooks->deliver(reply("o43", "r", "bounced"));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().error.kind, ErrorKind::InvalidInput);
  EXPECT_EQ(bouncer.requests().size(), 1u);
  EXPECT_TRUE(elsewhere.requests().empty());
}

TEST_F(WebhookTest, LoopbackCallbacksAreCheckedOnTheResolvedAddressToo) {
  // The default scope: programs on this host. A literal elsewhere is refused on arrival...
  EXPECT_EQ(send_with_callback("a", "http://10.0.0.1/cb"), 400);
  EXPECT_EQ(send_with_callback("b", "http://169.254.169.254/cb"), 400);
  EXPECT_EQ(send_with_callback("c", "https://example.com/cb"), 400);
  // ...and a stored callback (from before a restart) is judged again when it is used.
  CallbackReceiver cb;
  ASSERT_EQ(send_with_callback("d", cb.url()), 202);
  auto r = reply("o42", "d", "back");
  r.reply_to = cb.url();
  ASSERT_TRUE(hooks->deliver(r));
  EXPECT_EQ(cb.requests().size(), 1u);
}

}  // namespace
}  // namespace moat::channels
