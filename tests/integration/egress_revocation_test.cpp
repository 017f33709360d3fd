// Revocation reaches live connections: `moat policy rm` / `moat policy deny` / `moat secret rm` take
// effect within one second on an open tunnel, a keep-alive upstream and an intercepted session, not
// only on the next connection. Each connection is opened and used through the sandbox's own gateway
// socket (the path moat-init's relay takes), then the change is made with the CLI and the time until
// the gateway closes the connection is measured.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

#include "base/json.h"
#include "support/gateway_client.h"
#include "support/moat_env.h"
#include "support/test_ca.h"
#include "support/upstream_server.h"
#include "support/wait.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

class EgressRevocation : public ::testing::Test {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    ca_ = std::make_unique<TestCa>(pki_.path());
    auto cert = ca_->issue("up", {"localhost", "127.0.0.1"});
    tls_up_ = std::make_unique<UpstreamServer>(UpstreamServer::Options{.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
    echo_ = std::make_unique<UpstreamServer>(UpstreamServer::Options{.mode = UpstreamServer::Mode::Echo});
    plain_ = std::make_unique<UpstreamServer>();
    env_ = std::make_unique<MoatEnv>(fmt::format("[egress]\nupstream_ca_file = \"{}\"\n", ca_->ca_cert_path().string()));
    env_->ok({"sandbox", "create", "a", "--start"});
  }

  // `n` bytes back from the tunnel's echoing far end (or what came before it closed).
  static std::string echoed(GatewayClient& c, size_t n) {
    std::string got;
    char buf[64];
    while (got.size() < n) {
      ssize_t r = ::recv(c.fd(), buf, std::min(sizeof buf, n - got.size()), 0);
      if (r <= 0) break;
      got.append(buf, static_cast<size_t>(r));
    }
    return got;
  }

  GatewayClient client() { return GatewayClient(env_->state_dir() / "sandboxes" / "a" / "egress" / "gw.sock"); }

  // Runs `change` with the CLI, then how long the gateway took to close `c` (fails past `limit`).
  std::chrono::milliseconds closes_after(GatewayClient& c, const std::vector<std::string>& change,
                                         std::chrono::milliseconds limit = 1000ms) {
    env_->ok(change);
    auto t0 = Clock::now();
    bool closed = c.closed_within(limit + 500ms);
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    EXPECT_TRUE(closed) << "still open " << took.count() << " ms after " << fmt::format("{}", fmt::join(change, " "));
    EXPECT_LE(took, limit);
    return took;
  }

  TempDir pki_{"moat-revocation-pki"};
  std::unique_ptr<TestCa> ca_;
  std::unique_ptr<UpstreamServer> tls_up_, echo_, plain_;
  std::unique_ptr<MoatEnv> env_;
};

TEST_F(EgressRevocation, AnOpenTunnelClosesWhenItsRuleIsRemoved) {
  auto rule = fmt::format("127.0.0.1:{}", echo_->port());
  env_->ok({"policy", "allow", "a", rule});
  auto c = client();
  auto open = c.connect(rule);
  ASSERT_EQ(open.status, 200) << open.head << open.body;
  c.send("ping");
  EXPECT_EQ(echoed(c, 4), "ping");
  auto took = closes_after(c, {"policy", "rm", "a", "allow", rule});
  std::printf("tunnel closed %lld ms after 'moat policy rm'\n", static_cast<long long>(took.count()));
  // And it is on record as revoked.
  // (The gateway's audit writer is its own thread.)
  EXPECT_TRUE(wait_until([&] { return env_->ok({"audit", "export"}).find("revoked: ") != std::string::npos; }, 5s, 50ms));
}

TEST_F(EgressRevocation, AKeepAliveUpstreamClosesWhenADenyRuleArrives) {
  auto rule = fmt::format("127.0.0.1:{}", plain_->port());
  env_->ok({"policy", "allow", "a", rule});
  auto c = client();
  auto r = c.request(fmt::format("GET {}/ HTTP/1.1\r\nHost: {}\r\n\r\n", plain_->origin(), rule));
  ASSERT_EQ(r.status, 200) << r.head;
  closes_after(c, {"policy", "deny", "a", rule});
}

TEST_F(EgressRevocation, AnInterceptedSessionClosesWhenItsSecretIsRemoved) {
  auto authority = fmt::format("localhost:{}", tls_up_->port());
  env_->ok({"policy", "allow", "a", authority});
  env_->ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", tls_up_->port())});
  const std::string value = "sk-revoke-" + std::to_string(getpid());
  env_->ok({"secret", "set", "KEY", "--host", authority, "--agent", "a", "--header", "x-api-key: {}"}, value);
  auto c = client();
  ASSERT_EQ(c.connect(authority).status, 200);
  ASSERT_EQ(c.start_tls(env_->state_dir() / "egress" / "ca.crt", "localhost", "localhost"), "");
  auto r = c.request(fmt::format("GET /echo HTTP/1.1\r\nHost: {}\r\nx-api-key: moat-placeholder-KEY\r\n\r\n", authority));
  ASSERT_EQ(r.status, 200) << r.head;
  ASSERT_TRUE(tls_up_->wait_for_requests(1));
  EXPECT_EQ(tls_up_->requests()[0].header("x-api-key"), value);
  closes_after(c, {"secret", "rm", "KEY"});
  EXPECT_EQ(tls_up_->requests().size(), 1u);
}

TEST_F(EgressRevocation, AnUnrelatedChangeLeavesConnectionsAlone) {
  auto rule = fmt::format("127.0.0.1:{}", echo_->port());
  env_->ok({"policy", "allow", "a", rule});
  auto c = client();
  ASSERT_EQ(c.connect(rule).status, 200);
  env_->ok({"policy", "allow", "a", "example.org:443"});
  env_->ok({"secret", "set", "OTHER", "--host", "example.org", "--agent", "a", "--header", "x-k: {}"}, "v");
  // Two re-check ticks later the tunnel still carries bytes both ways.
  EXPECT_FALSE(c.closed_within(600ms));
  c.send("still here");
  EXPECT_EQ(echoed(c, 10), "still here");
}

}  // namespace
