// The egress gateway against a real moatd, real sandboxes and real local upstreams (plain HTTP and TLS
// servers with their own test CA). Requests come either from inside a sandbox (busybox wget through
// the proxy variables) or from the host through the sandbox's own gateway socket, which is exactly the
// path moat-init's relay takes, so the gateway sees that sandbox's identity.
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netdb.h>

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

std::filesystem::path gateway_socket(const MoatEnv& env, const std::string& sandbox) {
  return env.state_dir() / "sandboxes" / sandbox / "egress" / "gw.sock";
}

std::vector<Json> egress_events(const MoatEnv& env) {
  std::vector<Json> out;
  for (auto& j : env.audit_records())
    if (j["kind"] == "egress") out.push_back(std::move(j));
  return out;
}

int64_t last_seq(const MoatEnv& env) {
  auto events = egress_events(env);
  return events.empty() ? 0 : events.back()["seq"].get<int64_t>();
}

// The newest egress record for `host` after seq `after` (with `decision`, if given). The gateway appends
// records from its own writer thread when a connection ends, and a refusal's record may land after a
// later connection's, so wait for the record asked for, not for any record.
Json last_egress_for(const MoatEnv& env, const std::string& host, int64_t after = 0, std::string_view decision = {}) {
  Json found;
  moat::testing::wait_until(
      [&] {
        auto events = egress_events(env);
        for (auto it = events.rbegin(); it != events.rend(); ++it) {
          if ((*it)["seq"].get<int64_t>() <= after) break;
          if ((*it)["data"]["host"] != host) continue;
          if (!decision.empty() && (*it)["data"]["decision"] != decision) continue;
          found = *it;
          return true;
        }
        return false;
      },
      5s, 100ms);
  return found;
}

std::string get(const std::string& url, const std::string& host_header) {
  return "GET " + url + " HTTP/1.1\r\nHost: " + host_header + "\r\nConnection: close\r\n\r\n";
}

// A non-loopback address of this host (refused as a destination: it is the host itself).
std::string host_own_address() {
  ifaddrs* ifs = nullptr;
  std::string found;
  if (getifaddrs(&ifs) != 0) return found;
  for (auto* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[64];
    getnameinfo(i->ifa_addr, sizeof(sockaddr_in), buf, sizeof buf, nullptr, 0, NI_NUMERICHOST);
    if (std::string(buf).starts_with("127.")) continue;
    found = buf;
    break;
  }
  freeifaddrs(ifs);
  return found;
}

}  // namespace

TEST(Egress, SandboxReachesOnlyWhatPolicyAllows) {
  MOAT_REQUIRE_ROOT();
  UpstreamServer web;
  MoatEnv env;
  env.ok({"sandbox", "create", "a", "--start"});
  std::string url = fmt::format("http://127.0.0.1:{}/", web.port());

  // Default deny: a 403 the agent can read, naming the rule.
  auto denied = env.moat({"exec", "a", "--", "wget", "-q", "-O-", url});
  EXPECT_NE(denied.code, 0);
  EXPECT_NE(denied.err.find("403"), std::string::npos) << denied.err;
  GatewayClient probe(gateway_socket(env, "a"));
  auto r = probe.request(get(url, fmt::format("127.0.0.1:{}", web.port())));
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("default deny"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(fmt::format("moat policy allow a 127.0.0.1:{}", web.port())), std::string::npos) << r.body;

  // Allowed at run time: effective for the next connection.
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", web.port())});
  EXPECT_EQ(env.ok({"exec", "a", "--", "wget", "-q", "-O-", url}), fmt::format("hello from upstream {}\n", web.port()));
  auto ev = last_egress_for(env, "127.0.0.1", 0, "allow");
  ASSERT_FALSE(ev.is_null());
  EXPECT_EQ(ev["actor"], "a");
  EXPECT_EQ(ev["data"]["decision"], "allow");
  EXPECT_EQ(ev["data"]["address"], "127.0.0.1");
  EXPECT_EQ(ev["data"]["rule"], fmt::format("allow 127.0.0.1:{}", web.port()));
  EXPECT_GT(ev["data"]["bytes_down"].get<int>(), 0);
  EXPECT_TRUE(ev["data"].contains("duration_ms"));

  // Deny wins over allow.
  env.ok({"policy", "deny", "a", "127.0.0.0/8"});
  GatewayClient probe2(gateway_socket(env, "a"));
  r = probe2.request(get(url, "x"));
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("deny 127.0.0.0/8"), std::string::npos) << r.body;
  env.ok({"policy", "rm", "a", "deny", "127.0.0.0/8"});

  auto shown = Json::parse(env.ok({"--json", "policy", "show", "a"}));
  EXPECT_EQ(shown["preset"], "balanced");
  bool listed = false;
  for (auto& rule : shown["rules"]) listed |= rule["rule"] == fmt::format("127.0.0.1:{}", web.port()) && rule["source"] == "moat policy";
  EXPECT_TRUE(listed) << shown.dump(2);
  EXPECT_EQ(env.moat({"policy", "show", "nosuch"}).code, 3);
  EXPECT_NE(env.moat({"policy", "allow", "a", "http://x/"}).code, 0);

  // A program that ignores the proxy reaches nothing: the host's loopback and the host's own address
  // are not in the sandbox's network namespace, and there is no route out.
  auto direct = env.moat({"exec", "a", "--", "sh", "-c", fmt::format("echo x | nc -w 2 127.0.0.1 {}", web.port())});
  EXPECT_NE(direct.code, 0) << direct.out;
  auto own = host_own_address();
  if (!own.empty()) {
    auto out = env.moat({"exec", "a", "--", "sh", "-c", fmt::format("echo x | nc -w 2 {} {}", own, web.port())});
    EXPECT_NE(out.code, 0) << out.out;
  }
  // Names do not resolve inside: the gateway resolves them.
  auto dns = env.moat({"exec", "a", "--", "sh", "-c", "nslookup deb.debian.org || ping -c1 -W1 deb.debian.org"});
  EXPECT_NE(dns.code, 0) << dns.out;
  // Every process gets the proxy variables.
  auto vars = env.ok({"exec", "a", "--", "sh", "-c", "echo $HTTP_PROXY $https_proxy $NO_PROXY"});
  EXPECT_EQ(vars, "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1\n");
}

TEST(Egress, RefusesEveryPrivateAddressByNameAndLiteral) {
  MOAT_REQUIRE_ROOT();
  UpstreamServer web;
  // `open` allows any host name, so only the address checks stand between the agent and these.
  MoatEnv env("[egress]\npreset = \"open\"\n");
  env.ok({"sandbox", "create", "a", "--start"});
  auto sock = gateway_socket(env, "a");
  uint16_t port = web.port();
  std::vector<std::string> hosts = {
      "127.0.0.1",       "127.1",           "2130706433",       "0177.0.0.1",      "0x7f.0.0.1",
      "10.1.2.3",        "172.16.0.1",      "192.168.1.1",      "169.254.169.254", "169.254.1.1",
      "100.64.0.1",      "224.0.0.1",       "0.0.0.0",          "[::1]",           "[fd00::1]",
      "[fe80::1]",       "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]", "[ff02::1]",
      "localhost",  // a name that resolves to a loopback address
  };
  if (auto own = host_own_address(); !own.empty()) hosts.push_back(own);
  for (const auto& host : hosts) {
    std::string authority = fmt::format("{}:{}", host, port);
    {
      GatewayClient c(sock);
      auto r = c.request(get("http://" + authority + "/", authority));
      EXPECT_EQ(r.status, 403) << "GET " << authority << " -> " << r.head << r.body;
      EXPECT_NE(r.body.find("refused"), std::string::npos) << authority << ": " << r.body;
    }
    {
      GatewayClient c(sock);
      auto r = c.connect(authority);
      EXPECT_EQ(r.status, 403) << "CONNECT " << authority << " -> " << r.head << r.body;
    }
  }
  // The reason names the class.
  GatewayClient c(sock);
  auto meta = c.request(get("http://169.254.169.254/latest/meta-data/", "169.254.169.254"));
  EXPECT_NE(meta.body.find("metadata"), std::string::npos) << meta.body;

  // An explicitly allowed private address:port works; the same address on another port still does not.
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", port)});
  GatewayClient ok(sock);
  auto r = ok.request(get(fmt::format("http://127.0.0.1:{}/", port), "x"));
  EXPECT_EQ(r.status, 200) << r.head << r.body;
  GatewayClient other(sock);
  r = other.request(get(fmt::format("http://127.0.0.1:{}/", port == 65535 ? 1 : port + 1), "x"));
  EXPECT_EQ(r.status, 403) << r.head;
  auto ev = last_egress_for(env, "0177.0.0.1", 0, "deny");
  ASSERT_FALSE(ev.is_null());
  EXPECT_EQ(ev["data"]["decision"], "deny");
  EXPECT_EQ(ev["data"]["address"], "127.0.0.1");
}

TEST(Egress, ConnectChecksSniAndTlsAndUpstreamCertificates) {
  MOAT_REQUIRE_ROOT();
  TempDir pki("moat-egress-pki");
  TestCa ca(pki.path());
  auto good = ca.issue("good", {"localhost", "127.0.0.1"});
  auto expired = ca.issue_bad("expired", BadCert::Expired, {"localhost", "127.0.0.1"});
  UpstreamServer tls({.tls = UpstreamServer::TlsFiles{good.cert_path, good.key_path}});
  UpstreamServer bad({.tls = UpstreamServer::TlsFiles{expired.cert_path, expired.key_path}});
  MoatEnv env(fmt::format("[egress]\nupstream_ca_file = \"{}\"\n", ca.ca_cert_path().string()));
  env.ok({"sandbox", "create", "a", "--start"});
  auto sock = gateway_socket(env, "a");
  // Names allowed without a port (so the tunnel must carry TLS), the loopback address explicitly.
  env.ok({"policy", "allow", "a", "localhost"});
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", tls.port())});
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", bad.port())});
  std::string authority = fmt::format("localhost:{}", tls.port());

  {  // A matching SNI: an untouched tunnel; the client verifies the upstream itself.
    GatewayClient c(sock);
    ASSERT_EQ(c.connect(authority).status, 200);
    ASSERT_EQ(c.start_tls(ca.ca_cert_path(), "localhost", "localhost"), "");
    auto r = c.request(get("/", "localhost"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, fmt::format("hello from upstream {}\n", tls.port()));
  }
  {  // Domain fronting: SNI names another host than the CONNECT.
    auto mark = last_seq(env);
    GatewayClient c(sock);
    ASSERT_EQ(c.connect(authority).status, 200);
    EXPECT_NE(c.start_tls(ca.ca_cert_path(), "api.anthropic.com", ""), "");
    auto ev = last_egress_for(env, "localhost", mark);
    EXPECT_EQ(ev["data"]["rule"], "sni mismatch") << ev.dump();
    EXPECT_EQ(ev["data"]["decision"], "deny");
  }
  size_t requests_before = tls.requests().size();
  {  // Not TLS where the rule requires it.
    auto mark = last_seq(env);
    GatewayClient c(sock);
    ASSERT_EQ(c.connect(authority).status, 200);
    c.send(get("/", "localhost"));
    EXPECT_TRUE(c.closed_within(5s));
    auto ev = last_egress_for(env, "localhost", mark);
    EXPECT_EQ(ev["data"]["rule"], "tls required") << ev.dump();
  }
  EXPECT_EQ(tls.requests().size(), requests_before) << "the refused plaintext must not reach the upstream";

  // Upstream certificate errors are refused and audited: bind a credential so that the gateway
  // intercepts (and therefore verifies) the expired upstream.
  env.ok({"secret", "set", "TOKEN", "--host", fmt::format("localhost:{}", bad.port()), "--agent", "a", "--header",
          "Authorization: Bearer {}"},
         "s3cr3t-value\n");
  auto mark = last_seq(env);
  GatewayClient c(sock);
  ASSERT_EQ(c.connect(fmt::format("localhost:{}", bad.port())).status, 200);
  ASSERT_EQ(c.start_tls(env.state_dir() / "egress" / "ca.crt", "localhost", "localhost"), "");
  auto r = c.request(get("/", "localhost"));
  EXPECT_EQ(r.status, 502);
  EXPECT_NE(r.body.find("certificate"), std::string::npos) << r.body;
  auto ev = last_egress_for(env, "localhost", mark);
  EXPECT_EQ(ev["data"]["mode"], "intercept");
  EXPECT_EQ(ev["data"]["decision"], "error");
  EXPECT_NE(ev["data"]["error"].get<std::string>().find("expired"), std::string::npos) << ev.dump();
}

TEST(Egress, CredentialReachesOnlyTheBoundAgentAndHost) {
  MOAT_REQUIRE_ROOT();
  TempDir pki("moat-egress-pki");
  TestCa ca(pki.path());
  auto cert = ca.issue("up", {"localhost", "127.0.0.1"});
  UpstreamServer bound({.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  UpstreamServer other({.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  MoatEnv env(fmt::format("[egress]\nupstream_ca_file = \"{}\"\n", ca.ca_cert_path().string()));
  for (std::string name : {"a", "b"}) {
    env.ok({"sandbox", "create", name});
    for (auto* up : {&bound, &other}) {
      env.ok({"policy", "allow", name, fmt::format("localhost:{}", up->port())});
      env.ok({"policy", "allow", name, fmt::format("127.0.0.1:{}", up->port())});
    }
  }
  const std::string value = "sk-moat-test-" + std::to_string(::getpid()) + "-c0ffee";
  auto set = env.moat({"secret", "set", "UPSTREAM_KEY", "--host", fmt::format("localhost:{}", bound.port()), "--agent", "a",
                       "--header", "x-api-key: {}", "--env", "UPSTREAM_API_KEY"},
                      value + "\n");
  ASSERT_EQ(set.code, 0) << set.err;
  EXPECT_EQ(set.out.find(value), std::string::npos);
  env.ok({"sandbox", "start", "a"});
  env.ok({"sandbox", "start", "b"});
  auto placeholder = env.ok({"exec", "a", "--", "sh", "-c", "printf %s \"$UPSTREAM_API_KEY\""});
  EXPECT_EQ(placeholder, "moat-placeholder-UPSTREAM_KEY");
  auto moat_ca = env.state_dir() / "egress" / "ca.crt";

  auto send_with_placeholder = [&](const std::string& sandbox, UpstreamServer& up, const std::filesystem::path& trust) {
    GatewayClient c(gateway_socket(env, sandbox));
    auto open = c.connect(fmt::format("localhost:{}", up.port()));
    EXPECT_EQ(open.status, 200) << open.body;
    EXPECT_EQ(c.start_tls(trust, "localhost", "localhost"), "");
    auto r = c.request("GET /echo HTTP/1.1\r\nHost: localhost:" + std::to_string(up.port()) +
                       "\r\nx-api-key: " + placeholder + "\r\nx-other: keep " + placeholder + "\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(r.status, 200) << r.head << r.body;
    EXPECT_TRUE(up.wait_for_requests(1));
    auto reqs = up.requests();
    up.clear_requests();
    return reqs.empty() ? RecordedRequest{} : reqs.back();
  };
  // The bound agent and host: intercepted with the moat CA, the placeholder swapped in every header.
  auto seen = send_with_placeholder("a", bound, moat_ca);
  EXPECT_EQ(seen.header("x-api-key"), value);
  EXPECT_EQ(seen.header("x-other"), "keep " + value);
  // Another agent: tunnelled untouched (it must trust the upstream's own CA), the placeholder stays.
  seen = send_with_placeholder("b", bound, ca.ca_cert_path());
  EXPECT_EQ(seen.header("x-api-key"), placeholder);
  // Another host: the same.
  seen = send_with_placeholder("a", other, ca.ca_cert_path());
  EXPECT_EQ(seen.header("x-api-key"), placeholder);

  // The value is nowhere inside the sandbox: environment, files, /proc, process arguments. The needle
  // comes on stdin so that the search itself puts it in no argv or environment (nor the exec audit).
  const std::string search =
      "read -r v; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do grep -l -F \"$v\" $f 2>/dev/null; done; "
      "for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -r -l -F \"$v\" $d 2>/dev/null;; esac; done; "
      "echo searched";
  for (std::string name : {"a", "b"}) {
    auto grep = env.moat({"exec", name, "--", "sh", "-c", search}, value + "\n");
    EXPECT_EQ(grep.out, "searched\n") << name << " holds the credential value in: " << grep.out;
  }
  // Nor in the audit log, which names the credential.
  auto audit = env.ok({"audit", "export"});
  EXPECT_EQ(audit.find(value), std::string::npos);
  auto ev = last_egress_for(env, "localhost");
  bool named = false;
  for (auto& e : egress_events(env)) {
    if (e["data"]["mode"] == "intercept" && e["actor"] == "a")
      named |= e["data"]["credentials"] == Json::array({"UPSTREAM_KEY"});
  }
  EXPECT_TRUE(named);
  auto ls = env.ok({"--json", "secret", "ls"});
  EXPECT_EQ(ls.find(value), std::string::npos);
}

TEST(Egress, AnthropicStreamingThroughBaseUrlRoute) {
  MOAT_REQUIRE_ROOT();
  TempDir pki("moat-egress-pki");
  TestCa ca(pki.path());
  auto cert = ca.issue("anthropic", {"localhost"});
  const std::string key = "sk-ant-test-" + std::to_string(::getpid());
  AnthropicDouble anthropic({.api_key = key, .text = {"Hel", "lo", " from", " the", " double"}, .event_delay = 150ms});
  UpstreamServer up({.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}, .handler = anthropic.handler()});
  MoatEnv env(fmt::format("[egress]\nupstream_ca_file = \"{}\"\n[egress.routes.anthropic]\nupstream = \"https://localhost:{}\"\n"
                          "env = \"ANTHROPIC_BASE_URL\"\n",
                          ca.ca_cert_path().string(), up.port()));
  env.ok({"sandbox", "create", "a"});
  env.ok({"policy", "allow", "a", fmt::format("localhost:{}", up.port())});
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", up.port())});
  env.ok({"secret", "set", "ANTHROPIC_API_KEY", "--host", fmt::format("localhost:{}", up.port()), "--agent", "a", "--header",
          "x-api-key: {}", "--env", "ANTHROPIC_API_KEY"},
         key);
  env.ok({"sandbox", "start", "a"});
  EXPECT_EQ(env.ok({"exec", "a", "--", "sh", "-c", "echo $ANTHROPIC_BASE_URL $ANTHROPIC_API_KEY"}),
            "http://127.0.0.1:3128/anthropic moat-placeholder-ANTHROPIC_API_KEY\n");

  std::string body =
      R"({"model":"claude-sonnet-4-5","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Hello"}]})";
  auto c = std::make_unique<GatewayClient>(gateway_socket(env, "a"));
  c->send("POST /anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nx-api-key: moat-placeholder-ANTHROPIC_API_KEY\r\n"
         "anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body);
  // Each SSE event must reach the client when the upstream sends it, not when the response ends.
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> arrived;
  std::string partial;
  auto r = c->read_reply([&](std::string_view piece) {
    partial.append(piece);
    for (auto end = partial.find("\n\n"); end != std::string::npos; end = partial.find("\n\n")) {
      auto ev = partial.substr(0, end);
      partial.erase(0, end + 2);
      if (ev.starts_with("event: ")) arrived.emplace_back(ev.substr(7, ev.find('\n') - 7), std::chrono::steady_clock::now());
    }
  });
  ASSERT_EQ(r.status, 200) << r.head << r.body;
  EXPECT_NE(r.headers["content-type"].find("text/event-stream"), std::string::npos);
  auto sent = anthropic.sent_events();
  ASSERT_EQ(arrived.size(), sent.size()) << r.head << r.body << last_egress_for(env, "localhost").dump();
  ASSERT_GE(sent.size(), 8u);
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(arrived[i].first, sent[i].name);
    // Not buffered: each event is in the client's hands before the upstream sends the next one.
    if (i + 1 < sent.size()) {
      EXPECT_LT(arrived[i].second, sent[i + 1].sent_at) << "event " << i << " (" << sent[i].name << ") was held back";
    }
  }
  EXPECT_EQ(sent.front().name, "message_start");
  EXPECT_EQ(sent.back().name, "message_stop");
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].target, "/v1/messages");
  EXPECT_EQ(reqs[0].header("x-api-key"), key);
  EXPECT_EQ(reqs[0].header("host"), fmt::format("localhost:{}", up.port()));
  c.reset();  // the upstream connection is kept alive for the client; its record is written at the end
  auto ev = last_egress_for(env, "localhost");
  EXPECT_EQ(ev["data"]["mode"], "route");
  EXPECT_EQ(ev["data"]["credentials"], Json::array({"ANTHROPIC_API_KEY"}));

  // An unknown route says which exist.
  GatewayClient d(gateway_socket(env, "a"));
  auto nf = d.request("GET /nosuch/x HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(nf.status, 404);
  EXPECT_NE(nf.body.find("/anthropic"), std::string::npos) << nf.body;
}

TEST(Egress, LimitsRefuseWithAClearMessage) {
  MOAT_REQUIRE_ROOT();
  UpstreamServer web;
  MoatEnv env("[agents.a.egress]\nmax_connections = 2\nmax_bytes_per_day = \"64KiB\"\n");
  env.ok({"sandbox", "create", "a", "--start"});
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", web.port())});
  auto sock = gateway_socket(env, "a");
  std::string authority = fmt::format("127.0.0.1:{}", web.port());
  GatewayClient one(sock), two(sock), three(sock);
  one.send(fmt::format("GET http://{}/ HTTP/1.1\r\nHost: x\r\n\r\n", authority));
  EXPECT_EQ(one.read_reply().status, 200);
  two.send(fmt::format("GET http://{}/ HTTP/1.1\r\nHost: x\r\n\r\n", authority));
  EXPECT_EQ(two.read_reply().status, 200);
  auto r = three.request(get("http://" + authority + "/", "x"));
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.body.find("max_connections"), std::string::npos) << r.body;
  one.send(get("http://" + authority + "/bytes/200000", "x"));
  one.read_reply();
  GatewayClient four(sock);
  r = four.request(get("http://" + authority + "/", "x"));
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.body.find("max_bytes_per_day"), std::string::npos) << r.body;
}

// The same door under every runtime: under gVisor moat-init's relay reaches the gateway's socket
// through the gofer (--host-uds), and the sandbox still has no other way out.
class EgressRuntime : public ::testing::TestWithParam<std::string> {};

TEST_P(EgressRuntime, ProxyIsTheOnlyWayOut) {
  MOAT_REQUIRE_ROOT();
  std::string why;
  if (!runtime_usable(GetParam(), &why)) GTEST_SKIP() << why;
  UpstreamServer web;
  MoatEnv env;
  env.ok({"sandbox", "create", "g", "--runtime", GetParam(), "--start"});
  env.ok({"policy", "allow", "g", fmt::format("127.0.0.1:{}", web.port())});
  std::string url = fmt::format("http://127.0.0.1:{}/", web.port());
  EXPECT_EQ(env.ok({"exec", "g", "--", "wget", "-q", "-O-", url}), fmt::format("hello from upstream {}\n", web.port()));
  auto denied = env.moat({"exec", "g", "--", "wget", "-q", "-O-", "http://10.0.0.1/"});
  EXPECT_NE(denied.err.find("403"), std::string::npos) << denied.err;
  auto direct = env.moat({"exec", "g", "--", "sh", "-c", fmt::format("echo x | nc -w 2 127.0.0.1 {}", web.port())});
  EXPECT_NE(direct.code, 0) << direct.out;
  auto ev = last_egress_for(env, "127.0.0.1");
  EXPECT_EQ(ev["actor"], "g");
}

INSTANTIATE_TEST_SUITE_P(Runtimes, EgressRuntime, ::testing::Values("runc", "runsc", "crun"),
                         [](const auto& info) { return info.param; });

TEST(Egress, PlainHttpKeepsConnectionsAliveAndRefusesGarbage) {
  MOAT_REQUIRE_ROOT();
  UpstreamServer web;
  MoatEnv env;
  env.ok({"sandbox", "create", "a", "--start"});
  env.ok({"policy", "allow", "a", fmt::format("127.0.0.1:{}", web.port())});
  std::string origin = fmt::format("http://127.0.0.1:{}", web.port());
  GatewayClient c(gateway_socket(env, "a"));
  // Two requests on one client connection reuse one upstream connection; a body is streamed through.
  c.send(fmt::format("GET {}/ HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n", origin));
  EXPECT_EQ(c.read_reply().status, 200);
  std::string body(300000, 'b');
  c.send(fmt::format("POST {}/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", origin, body.size()) + body);
  auto r = c.read_reply();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "300000\n");
  ASSERT_TRUE(web.wait_for_requests(2));
  auto reqs = web.requests();
  EXPECT_EQ(reqs[0].connection, reqs[1].connection);
  EXPECT_EQ(reqs[1].sequence, 1u);
  EXPECT_FALSE(reqs[0].has_header("proxy-connection"));
  EXPECT_EQ(reqs[0].header("host"), fmt::format("127.0.0.1:{}", web.port()));  // from the URI, not the client's
  // Garbage gets a 400 and the connection closes; a https:// URI in the clear is refused with advice.
  GatewayClient g(gateway_socket(env, "a"));
  auto bad = g.request("NOT HTTP AT ALL\r\n\r\n");
  EXPECT_EQ(bad.status, 400);
  GatewayClient h(gateway_socket(env, "a"));
  auto https = h.request("GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
  EXPECT_EQ(https.status, 400);
  EXPECT_NE(https.body.find("CONNECT"), std::string::npos) << https.body;
  // An unknown route over HTTP/1.0 once crashed moatd (a g++ 12 coroutine temporary freed twice).
  GatewayClient old_http(gateway_socket(env, "a"));
  EXPECT_EQ(old_http.request("GET /x HTTP/1.0\r\n\r\n").status, 404);
  GatewayClient after(gateway_socket(env, "a"));
  EXPECT_EQ(after.request(get(origin + "/", "x")).status, 200) << "moatd must still answer";
}
