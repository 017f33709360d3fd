// The one HTTP(S) client (src/net/http_client.h) against real local servers: verified TLS with SNI
// and host-name checks, connection reuse, a body streamed as it arrives, deadlines, cancellation,
// HTTPS_PROXY through a real CONNECT proxy and NO_PROXY around it, and the address check that
// keeps webhook callbacks off this host's services.
#include "net/http_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "net/tls_errors.h"
#include "support/connect_proxy.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"
#include "support/upstream_server.h"

namespace moat::net {
namespace {

using namespace std::chrono_literals;
using moat::testing::BadCert;
using moat::testing::ConnectProxy;
using moat::testing::ResponseWriter;
using moat::testing::TempDir;
using moat::testing::TestCa;
using moat::testing::UpstreamServer;
using Clock = std::chrono::steady_clock;

Url url_of(const std::string& text) {
  auto u = parse_url(text);
  EXPECT_TRUE(u) << text;
  return *u;
}

HttpRequest get(std::string target = "/") { return HttpRequest{"GET", std::move(target), {}, {}}; }

// A TLS upstream with a certificate for localhost and 127.0.0.1 from a throwaway CA.
struct TlsUpstream {
  TempDir dir;
  TestCa ca{dir.path()};
  std::unique_ptr<UpstreamServer> server;
  explicit TlsUpstream(std::optional<BadCert> bad = std::nullopt) {
    auto cert = bad ? ca.issue_bad("up", *bad) : ca.issue("up");
    UpstreamServer::Options o;
    o.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path};
    server = std::make_unique<UpstreamServer>(o);
  }
  std::string url(std::string_view host = "localhost") const { return fmt::format("https://{}:{}", host, server->port()); }
};

TEST(HttpClient, VerifiesTheCertificateAndSendsSni) {
  TlsUpstream up;
  HttpClient client({.extra_ca_file = up.ca.ca_cert_path()});
  auto r = client.fetch(url_of(up.url()), get("/hello"), {.timeout = 5s});
  ASSERT_TRUE(r) << r.error().error.message;
  EXPECT_EQ(r->head.status, 200);
  ASSERT_EQ(up.server->requests().size(), 1u);
  EXPECT_EQ(up.server->requests()[0].sni, "localhost");
  EXPECT_EQ(up.server->requests()[0].header("host"), fmt::format("localhost:{}", up.server->port()));

  // An address literal gets no SNI (RFC 6066) and is checked against the certificate's IP names.
  auto by_ip = client.fetch(url_of(up.url("127.0.0.1")), get(), {.timeout = 5s});
  ASSERT_TRUE(by_ip) << by_ip.error().error.message;
  EXPECT_EQ(up.server->requests().back().sni, "");

  // Without the test CA the same server is a stranger.
  HttpClient plain;
  auto untrusted = plain.fetch(url_of(up.url()), get(), {.timeout = 5s});
  ASSERT_FALSE(untrusted);
  EXPECT_EQ(untrusted.error().kind, HttpFailure::Kind::Tls);
}

TEST(HttpClient, RefusesACertificateForAnotherName) {
  TlsUpstream up(BadCert::WrongHost);
  HttpClient client({.extra_ca_file = up.ca.ca_cert_path()});
  auto r = client.fetch(url_of(up.url()), get(), {.timeout = 5s});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, HttpFailure::Kind::Tls);
  EXPECT_NE(r.error().error.message.find("certificate verification failed"), std::string::npos) << r.error().error.message;
  EXPECT_TRUE(up.server->requests().empty());  // nothing was sent to it
}

TEST(HttpClient, AnUnreadableExtraCaFileIsNamed) {
  TempDir dir;
  HttpClient client({.extra_ca_file = dir.path() / "missing.pem"});
  TlsUpstream up;
  auto r = client.fetch(url_of(up.url()), get(), {.timeout = 5s});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().error.kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().error.message.find("missing.pem"), std::string::npos);
}

TEST(HttpClient, ReusesOneConnectionForTwoRequests) {
  TlsUpstream up;
  HttpClient client({.extra_ca_file = up.ca.ca_cert_path()});
  for (int i = 0; i < 3; ++i) {
    auto r = client.fetch(url_of(up.url()), get(fmt::format("/r{}", i)), {.timeout = 5s});
    ASSERT_TRUE(r) << r.error().error.message;
  }
  EXPECT_EQ(up.server->connections_accepted(), 1u);
  EXPECT_EQ(client.connections_opened(), 1u);
  auto reqs = up.server->requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[2].connection, 0u);
  EXPECT_EQ(reqs[2].sequence, 2u);

  // A server that says "Connection: close" gets a fresh connection next time.
  up.server->set_handler([](const auto&, ResponseWriter& w) {
    w.send({.status = 200, .headers = {}, .body = "bye", .close = true});
  });
  ASSERT_TRUE(client.fetch(url_of(up.url()), get(), {.timeout = 5s}));
  ASSERT_TRUE(client.fetch(url_of(up.url()), get(), {.timeout = 5s}));
  EXPECT_EQ(client.connections_opened(), 2u);  // the pooled one for the first, a new one for the second
}

TEST(HttpClient, AConnectionTheServerClosedWhileIdleIsReplacedNotFailed) {
  // The server answers as if it kept the connection (no "Connection: close") and then closes it,
  // as servers do with idle connections: the next request must go on a fresh one, exactly once.
  UpstreamServer server;
  server.set_handler([](const auto&, ResponseWriter& w) {
    w.send({.status = 200, .headers = {}, .body = "ok", .close = false});
    w.close_connection();
  });
  HttpClient client;
  auto url = url_of(server.origin());
  for (int i = 0; i < 3; ++i) {
    auto r = client.fetch(url, get(fmt::format("/{}", i)), {.timeout = 5s});
    ASSERT_TRUE(r) << i << ": " << r.error().error.message;
  }
  EXPECT_EQ(server.requests().size(), 3u);  // none was sent twice
  EXPECT_EQ(server.connections_accepted(), 3u);
}

TEST(HttpClient, StreamsTheBodyAsItArrives) {
  UpstreamServer server;  // /chunks/N?delay_ms=D: N chunks, D ms apart
  HttpClient client;
  auto start = Clock::now();
  std::vector<Clock::duration> arrivals;
  std::string body;
  auto head = client.send(url_of(server.origin()), get("/chunks/5?delay_ms=200"), {.timeout = 5s}, nullptr,
                          [&](std::string_view piece) {
                            arrivals.push_back(Clock::now() - start);
                            body += piece;
                            return true;
                          });
  ASSERT_TRUE(head) << head.error().error.message;
  EXPECT_EQ(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
  ASSERT_GE(arrivals.size(), 5u);
  EXPECT_LT(arrivals.front(), 400ms);  // the first chunk came long before the last was written
  EXPECT_GE(arrivals.back(), 750ms);
}

TEST(HttpClient, ADeadlineFiresAndCancellationStopsTheCall) {
  UpstreamServer server;
  server.set_handler([](const auto&, ResponseWriter& w) {
    if (!w.sleep_for(10s)) return;
    w.send({.status = 200, .headers = {}, .body = "late", .close = false});
  });
  HttpClient client;
  auto t0 = Clock::now();
  auto r = client.fetch(url_of(server.origin()), get(), {.timeout = 300ms});
  auto took = Clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, HttpFailure::Kind::Io);
  EXPECT_NE(r.error().error.message.find("did not answer within 300 ms"), std::string::npos) << r.error().error.message;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 1500ms);

  // Cancelled while it waits for the answer: once the server holds the request (the first call's
  // is already recorded, so this one is the second).
  std::atomic<bool> stop{false};
  std::thread canceller([&] {
    EXPECT_TRUE(server.wait_for_requests(2, 5s));
    stop = true;
  });
  t0 = Clock::now();
  auto c = client.fetch(url_of(server.origin()), get(), {.timeout = 10s, .cancelled = [&] { return stop.load(); }});
  took = Clock::now() - t0;
  canceller.join();
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().kind, HttpFailure::Kind::Cancelled);
  EXPECT_LT(took, 1500ms);
  server.stop();
}

TEST(HttpClient, HttpsProxyIsUsedAndNoProxyBypassesIt) {
  TlsUpstream up;
  ConnectProxy proxy;
  auto target = url_of(up.url());
  {
    HttpClient client({.extra_ca_file = up.ca.ca_cert_path(),
                       .proxy = ProxySettings::parse(fmt::format("http://127.0.0.1:{}", proxy.port()), "")});
    auto r = client.fetch(target, get("/via-proxy"), {.timeout = 5s});
    ASSERT_TRUE(r) << r.error().error.message;
    ASSERT_EQ(proxy.targets(), std::vector<std::string>{fmt::format("localhost:{}", up.server->port())});
    EXPECT_EQ(up.server->requests().back().sni, "localhost");  // TLS is end to end, through the tunnel
  }
  {
    HttpClient client({.extra_ca_file = up.ca.ca_cert_path(),
                       .proxy = ProxySettings::parse(fmt::format("127.0.0.1:{}", proxy.port()), "example.com, localhost")});
    ASSERT_TRUE(client.fetch(target, get("/direct"), {.timeout = 5s}));
    EXPECT_EQ(proxy.targets().size(), 1u);  // NO_PROXY: straight to the host
    EXPECT_EQ(up.server->requests().back().target, "/direct");
  }
  {
    // With an address check, the proxy is asked for the address that was checked, not the name.
    HttpClient client({.extra_ca_file = up.ca.ca_cert_path(),
                       .proxy = ProxySettings::parse(fmt::format("http://127.0.0.1:{}", proxy.port()), ""),
                       .address_check = [](const IpAddress&) -> Status { return {}; }});
    ASSERT_TRUE(client.fetch(target, get(), {.timeout = 5s}));
    // localhost may resolve to ::1 first, where nothing listens: each address gets its own tunnel.
    auto t = proxy.targets();
    ASSERT_GE(t.size(), 2u);
    EXPECT_EQ(t.back(), fmt::format("127.0.0.1:{}", up.server->port()));
    for (size_t i = 1; i < t.size(); ++i) EXPECT_NE(t[i], fmt::format("localhost:{}", up.server->port()));
  }
  {
    // A proxy setting that cannot be used fails the call saying so, rather than going direct.
    HttpClient client({.extra_ca_file = up.ca.ca_cert_path(), .proxy = ProxySettings::parse("https://proxy:3128", "")});
    auto r = client.fetch(target, get(), {.timeout = 5s});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().error.message.find("HTTPS_PROXY"), std::string::npos) << r.error().error.message;
  }
}

TEST(ProxySettings, ReadsTheEnvironmentAndMatchesNoProxy) {
  ::setenv("HTTPS_PROXY", "http://proxy.internal:3128", 1);
  ::setenv("NO_PROXY", ".corp.example, 10.0.0.0/8,192.168.1.7, ::1", 1);
  auto p = ProxySettings::from_environment();
  ::unsetenv("HTTPS_PROXY");
  ::unsetenv("NO_PROXY");
  ASSERT_TRUE(p.https_proxy);
  EXPECT_EQ(p.https_proxy->host, "proxy.internal");
  EXPECT_EQ(p.https_proxy->port, 3128);
  EXPECT_TRUE(p.error.empty());
  EXPECT_TRUE(p.bypasses("corp.example"));
  EXPECT_TRUE(p.bypasses("API.corp.example"));
  EXPECT_FALSE(p.bypasses("notcorp.example"));
  EXPECT_TRUE(p.bypasses("10.20.30.40"));
  EXPECT_FALSE(p.bypasses("11.0.0.1"));
  EXPECT_TRUE(p.bypasses("192.168.1.7"));
  EXPECT_TRUE(p.bypasses("::1"));
  EXPECT_FALSE(p.bypasses("localhost"));  // loopback is not implied
  EXPECT_TRUE(ProxySettings::parse("p:1", "*").bypasses("anything.example"));
  EXPECT_FALSE(ProxySettings::parse("user:pw@p:1", "").error.empty());
}

TEST(HttpClient, TheAddressCheckRefusesBeforeConnecting) {
  UpstreamServer server;
  auto public_only = [](const IpAddress& a) -> Status {
    auto cls = classify(a);
    if (cls == AddressClass::Public) return {};
    return fail(ErrorKind::InvalidInput, "{} is a {}", format_address(a), address_class_phrase(cls));
  };
  HttpClient client({.address_check = public_only});
  for (auto host : {std::string("127.0.0.1"), std::string("localhost"), std::string("0177.0.0.1"), std::string("2130706433")}) {
    auto r = client.fetch(url_of(fmt::format("http://{}:{}/", host, server.port())), get(), {.timeout = 2s});
    ASSERT_FALSE(r) << host;
    EXPECT_EQ(r.error().kind, HttpFailure::Kind::Refused) << host;
    EXPECT_NE(r.error().error.message.find("loopback"), std::string::npos) << r.error().error.message;
  }
  EXPECT_EQ(server.connections_accepted(), 0u);
  EXPECT_EQ(client.connections_opened(), 0u);
}

// The one reader of OpenSSL's error queue (net/tls_errors.h, used by this client and the egress
// CA): every queued reason in one line, and the queue left empty for the next failure.
TEST(TlsErrors, DrainTheQueueIntoOneLine) {
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  ASSERT_TRUE(ctx);
  ASSERT_NE(SSL_CTX_use_certificate_file(ctx.get(), "/nonexistent/moat-cert.pem", SSL_FILETYPE_PEM), 1);
  std::string first = tls_errors();
  EXPECT_NE(first.find("error:"), std::string::npos) << first;
  EXPECT_EQ(ERR_peek_error(), 0u);
  EXPECT_EQ(tls_errors(), "no detail from OpenSSL");
}

}  // namespace
}  // namespace moat::net
