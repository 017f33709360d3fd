// The WebSocket client (src/net/websocket.h) against real WebSocket servers on loopback: a Beast
// server in this file (plain and TLS with a throwaway CA), a real CONNECT proxy, and the Discord
// stand-in (tests/peers/discord.mjs, a Node `ws` server). Every wait is on a condition with a
// deadline.
#include "net/websocket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <list>
#include <mutex>
#include <thread>

#include <utility>  // before asio: boost 1.74's awaitable.hpp uses std::exchange without including it
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <nlohmann/json.hpp>

#include "base/subprocess.h"
#include "support/connect_proxy.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"
#include "support/wait.h"

namespace moat::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using moat::testing::BadCert;
using moat::testing::ConnectProxy;
using moat::testing::TempDir;
using moat::testing::TestCa;
using moat::testing::wait_until;
using Clock = std::chrono::steady_clock;
using Event = WebSocketEvent;

Url ws_url(const std::string& text) {
  auto u = parse_websocket_url(text);
  EXPECT_TRUE(u) << text;
  return *u;
}

// Released when the server stops: what a stalled server waits on instead of a sleep.
class Gate {
 public:
  void open() {
    std::lock_guard g(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// One accepted connection, as a behaviour sees it: the upgrade request has been read; accept() or
// decline() answers it. Blocking (Beast's synchronous API on the connection's own thread).
class Peer {
 public:
  using PlainWs = websocket::stream<tcp::socket>;
  using TlsWs = websocket::stream<ssl::stream<tcp::socket>>;

  Peer(std::variant<std::unique_ptr<PlainWs>, std::unique_ptr<TlsWs>> ws, http::request<http::string_body> req,
       beast::flat_buffer buf, Gate& stopped)
      : ws_(std::move(ws)), req_(std::move(req)), buf_(std::move(buf)), stopped_(stopped) {}

  const http::request<http::string_body>& request() const { return req_; }

  bool accept() {
    return with([&](auto& ws) {
      ws.control_callback([this](websocket::frame_type kind, beast::string_view payload) {
        if (kind == websocket::frame_type::pong) {
          std::lock_guard g(mu_);
          pongs_.emplace_back(payload);
        }
      });
      beast::error_code ec;
      ws.accept(req_, ec);
      return !ec;
    });
  }

  void decline(http::status status, std::string body) {
    http::response<http::string_body> res{status, 11};
    res.set(http::field::content_type, "application/json");
    res.body() = std::move(body);
    res.prepare_payload();
    with([&](auto& ws) {
      beast::error_code ec;
      http::write(ws.next_layer(), res, ec);
      return true;
    });
  }

  // The next message; nullopt when the connection ended (close_reason() says how, if by a close frame).
  std::optional<std::string> read() {
    std::optional<std::string> out;
    with([&](auto& ws) {
      beast::flat_buffer b;
      beast::error_code ec;
      ws.read(b, ec);
      if (ec) {
        std::lock_guard g(mu_);
        // The client's close frame, even when answering it failed (a client failing the connection
        // may be gone before our answer: EPIPE).
        if (ws.reason().code != websocket::close_code::none) close_reason_ = ws.reason();
        return false;
      }
      out = beast::buffers_to_string(b.data());
      last_binary_ = ws.got_binary();
      return true;
    });
    return out;
  }

  bool write(std::string_view text, bool binary = false) {
    return with([&](auto& ws) {
      beast::error_code ec;
      ws.binary(binary);
      ws.write(asio::buffer(text), ec);
      return !ec;
    });
  }

  bool ping(std::string_view payload) {
    return with([&](auto& ws) {
      beast::error_code ec;
      ws.ping(websocket::ping_data(beast::string_view(payload.data(), payload.size())), ec);
      return !ec;
    });
  }

  bool close(uint16_t code, std::string_view reason) {
    return with([&](auto& ws) {
      beast::error_code ec;
      ws.close(websocket::close_reason(static_cast<websocket::close_code>(code), beast::string_view(reason.data(), reason.size())), ec);
      return !ec;
    });
  }

  // The TCP connection goes, without a close frame (a crashed server, a cut cable).
  void drop() {
    with([&](auto& ws) {
      beast::error_code ec;
      beast::get_lowest_layer(ws).shutdown(tcp::socket::shutdown_both, ec);
      beast::get_lowest_layer(ws).close(ec);
      return true;
    });
  }

  // Stalls, reading nothing (so answering no ping and no close), until the server stops.
  void stall() { stopped_.wait(); }
  bool last_binary() const { return last_binary_; }

  std::vector<std::string> pongs() {
    std::lock_guard g(mu_);
    return pongs_;
  }
  std::optional<websocket::close_reason> close_reason() {
    std::lock_guard g(mu_);
    return close_reason_;
  }

 private:
  template <class F>
  bool with(F&& f) {
    return std::visit([&](auto& p) { return f(*p); }, ws_);
  }

  std::variant<std::unique_ptr<PlainWs>, std::unique_ptr<TlsWs>> ws_;
  http::request<http::string_body> req_;
  beast::flat_buffer buf_;
  Gate& stopped_;
  bool last_binary_ = false;
  std::mutex mu_;
  std::vector<std::string> pongs_;
  std::optional<websocket::close_reason> close_reason_;
};

// A WebSocket server on 127.0.0.1: one thread per connection runs `behaviour` with its Peer.
// With a certificate it speaks TLS. Stopping shuts every connection's socket down, so a behaviour
// blocked in read() returns.
class WsServer {
 public:
  using Behaviour = std::function<void(Peer&)>;
  struct Tls {
    std::filesystem::path cert, key;
  };

  explicit WsServer(Behaviour behaviour, std::optional<Tls> tls = std::nullopt)
      : behaviour_(std::move(behaviour)), acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    if (tls) {
      tls_.emplace(ssl::context::tls_server);
      tls_->use_certificate_chain_file(tls->cert.string());
      tls_->use_private_key_file(tls->key.string(), ssl::context::pem);
    }
    acceptor_.non_blocking(true);
    accept_ = std::thread([this] { accept_loop(); });
  }
  ~WsServer() { stop(); }

  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::string url(std::string_view host = "127.0.0.1", std::string_view path = "/") const {
    return fmt::format("{}://{}:{}{}", tls_ ? "wss" : "ws", host, port(), path);
  }
  std::vector<Peer*> peers() {
    std::lock_guard g(mu_);
    std::vector<Peer*> out;
    for (auto& p : peers_) out.push_back(p.get());
    return out;
  }
  size_t connections() {
    std::lock_guard g(mu_);
    return fds_.size();
  }

  void stop() {
    if (stop_.exchange(true)) return;
    stopped_.open();
    accept_.join();
    {
      std::lock_guard g(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{acceptor_.native_handle(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      beast::error_code ec;
      tcp::socket s(ioc_);
      acceptor_.accept(s, ec);
      if (ec) continue;
      s.non_blocking(false);
      {
        std::lock_guard g(mu_);
        fds_.push_back(s.native_handle());
      }
      threads_.emplace_back([this, s = std::make_shared<tcp::socket>(std::move(s))]() mutable { serve(std::move(*s)); });
    }
  }

  void serve(tcp::socket s) {
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    beast::error_code ec;
    std::unique_ptr<Peer> peer;
    if (tls_) {
      auto ws = std::make_unique<Peer::TlsWs>(std::move(s), *tls_);
      ws->next_layer().handshake(ssl::stream_base::server, ec);
      if (ec) return;
      http::read(ws->next_layer(), buf, req, ec);
      if (ec) return;
      peer = std::make_unique<Peer>(std::move(ws), std::move(req), std::move(buf), stopped_);
    } else {
      auto ws = std::make_unique<Peer::PlainWs>(std::move(s));
      http::read(ws->next_layer(), buf, req, ec);
      if (ec) return;
      peer = std::make_unique<Peer>(std::move(ws), std::move(req), std::move(buf), stopped_);
    }
    Peer* p = peer.get();
    {
      std::lock_guard g(mu_);
      peers_.push_back(std::move(peer));
    }
    behaviour_(*p);
  }

  Behaviour behaviour_;
  asio::io_context ioc_;
  std::optional<ssl::context> tls_;
  tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  Gate stopped_;
  std::thread accept_;
  std::vector<std::thread> threads_;  // only the accept thread adds; joined after it ends
  std::mutex mu_;
  std::vector<int> fds_;
  std::list<std::unique_ptr<Peer>> peers_;
};

// Echoes every message until the client closes.
void echo(Peer& p) {
  if (!p.accept()) return;
  while (auto m = p.read())
    if (!p.write(*m, p.last_binary())) return;
}

// A TLS server with a certificate for localhost and 127.0.0.1 from a throwaway CA.
struct TlsFixture {
  TempDir dir;
  TestCa ca{dir.path()};
  std::unique_ptr<WsServer> server;
  explicit TlsFixture(WsServer::Behaviour b, std::optional<BadCert> bad = std::nullopt) {
    auto cert = bad ? ca.issue_bad("ws", *bad) : ca.issue("ws");
    server = std::make_unique<WsServer>(std::move(b), WsServer::Tls{cert.cert_path, cert.key_path});
  }
};

// A port with nothing behind it: connecting is refused.
uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A listening socket nobody accepts from: the kernel completes TCP handshakes, nothing answers.
struct SilentListener {
  UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  uint16_t port = 0;
  SilentListener() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd.get(), 8);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
};

std::unique_ptr<WebSocket> open_ok(const std::string& url, WebSocketOptions o = {}) {
  auto ws = WebSocket::connect(ws_url(url), std::move(o));
  EXPECT_TRUE(ws) << (ws ? "" : ws.error().error.message);
  return ws ? std::move(*ws) : nullptr;
}

TEST(WebSocket, EchoesTextOverPlainAndTlsWithTheHandshakeHeaders) {
  WsServer plain(echo);
  auto ws = open_ok(plain.url("127.0.0.1", "/gateway?v=10&encoding=json"),
                    {.headers = {{"User-Agent", "DiscordBot (https://moat.dev, 1)"}, {"X-Test", "yes"}}});
  ASSERT_TRUE(ws);
  ASSERT_TRUE(ws->send("hello"));
  ASSERT_TRUE(ws->send_binary(std::string("\0\1\2", 3)));
  auto e = ws->receive(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, Event::Kind::Message);
  EXPECT_EQ(e->data, "hello");
  EXPECT_FALSE(e->binary);
  auto b = ws->receive(5s);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->data, std::string("\0\1\2", 3));
  EXPECT_TRUE(b->binary);
  auto req = plain.peers().at(0)->request();
  EXPECT_EQ(req.target(), "/gateway?v=10&encoding=json");
  EXPECT_EQ(req[http::field::user_agent], "DiscordBot (https://moat.dev, 1)");
  EXPECT_EQ(req["X-Test"], "yes");
  EXPECT_EQ(req[http::field::host], fmt::format("127.0.0.1:{}", plain.port()));
  EXPECT_EQ(ws->stats().sent, 2u);
  EXPECT_EQ(ws->stats().received, 2u);

  TlsFixture tls(echo);
  for (auto host : {"localhost", "127.0.0.1"}) {  // a name (with SNI) and an address (IP SAN)
    auto t = open_ok(tls.server->url(host), {.extra_ca_file = tls.ca.ca_cert_path()});
    ASSERT_TRUE(t) << host;
    ASSERT_TRUE(t->send(fmt::format("over TLS to {}", host)));
    auto m = t->receive(5s);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->data, fmt::format("over TLS to {}", host));
    EXPECT_EQ(tls.server->peers().back()->request()[http::field::user_agent], "moat");
  }
}

TEST(WebSocket, ReadingPausesAtTheBufferLimitAndResumesInOrder) {
  WsServer server([](Peer& p) {
    if (!p.accept()) return;
    for (int i = 0; i < 50; ++i)
      if (!p.write(fmt::format("m{}", i))) return;
    while (p.read()) {
    }
  });
  auto ws = open_ok(server.url(), {.max_buffered_messages = 3});
  ASSERT_TRUE(ws);
  for (int i = 0; i < 50; ++i) {
    auto m = ws->receive(5s);
    ASSERT_TRUE(m) << i;
    ASSERT_EQ(m->kind, Event::Kind::Message) << m->error.message;
    EXPECT_EQ(m->data, fmt::format("m{}", i));
  }
}

TEST(WebSocket, AnswersTheServersPingWhileTheCallerIsNotReading) {
  WsServer server([](Peer& p) {
    if (!p.accept() || !p.ping("are-you-there")) return;
    while (p.read()) {
    }
  });
  auto ws = open_ok(server.url());
  ASSERT_TRUE(ws);
  // Nobody calls receive(): the pong comes from the client's own pending read.
  ASSERT_TRUE(wait_until([&] { return !server.peers().empty() && !server.peers()[0]->pongs().empty(); }, 5s));
  EXPECT_EQ(server.peers()[0]->pongs(), std::vector<std::string>{"are-you-there"});
}

TEST(WebSocket, TheServersCloseCodeAndReasonReachTheCaller) {
  WsServer server([](Peer& p) {
    if (!p.accept()) return;
    p.write("before the close");
    p.close(4004, "Authentication failed.");
  });
  auto ws = open_ok(server.url());
  ASSERT_TRUE(ws);
  auto m = ws->receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->data, "before the close");  // what came first is not lost to the close
  auto c = ws->receive(5s);
  ASSERT_TRUE(c);
  ASSERT_EQ(c->kind, Event::Kind::Closed) << c->error.message;
  EXPECT_EQ(c->close_code, 4004);
  EXPECT_EQ(c->close_reason, "Authentication failed.");
  EXPECT_TRUE(c->closed_by_server);
  // The end stays: every later receive() and end() report it, and nothing more can be sent.
  auto again = ws->receive(0ms);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->close_code, 4004);
  ASSERT_TRUE(ws->end());
  EXPECT_EQ(ws->end()->close_code, 4004);
  auto s = ws->send("too late");
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("has ended"), std::string::npos) << s.error().message;
}

TEST(WebSocket, OurCloseIsSentAfterTheQueueAndAnswered) {
  std::vector<std::string> got;
  std::mutex mu;
  WsServer server([&](Peer& p) {
    if (!p.accept()) return;
    while (auto m = p.read()) {
      std::lock_guard g(mu);
      got.push_back(*m);
    }
  });
  auto ws = open_ok(server.url());
  ASSERT_TRUE(ws);
  ASSERT_TRUE(ws->send("one"));
  ASSERT_TRUE(ws->send("two"));
  ws->close(4000, "resuming later");
  EXPECT_FALSE(ws->send("three"));  // closing: refused, not silently dropped
  auto c = ws->receive(5s);
  ASSERT_TRUE(c);
  ASSERT_EQ(c->kind, Event::Kind::Closed) << c->error.message;
  EXPECT_FALSE(c->closed_by_server);
  EXPECT_EQ(c->close_code, 4000);  // the server echoes our code
  ASSERT_TRUE(wait_until([&] { return server.peers().at(0)->close_reason().has_value(); }, 5s));
  EXPECT_EQ(server.peers()[0]->close_reason()->code, 4000);
  EXPECT_EQ(std::string(server.peers()[0]->close_reason()->reason.c_str()), "resuming later");
  std::lock_guard g(mu);
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two"}));
}

TEST(WebSocket, AMessageOverTheLimitFailsTheConnectionWith1009) {
  WsServer server([](Peer& p) {
    if (!p.accept()) return;
    p.write(std::string(16 * 1024, 'x'));  // small enough to leave the server whole, before the client's 1009
    while (p.read()) {
    }
  });
  auto ws = open_ok(server.url(), {.max_message = 4 * 1024});
  ASSERT_TRUE(ws);
  auto e = ws->receive(5s);
  ASSERT_TRUE(e);
  ASSERT_EQ(e->kind, Event::Kind::Failed);
  EXPECT_EQ(e->error.kind, ErrorKind::ResourceLimit);
  EXPECT_NE(e->error.message.find("over 4096 bytes"), std::string::npos) << e->error.message;
  ASSERT_TRUE(wait_until([&] { return server.peers().at(0)->close_reason().has_value(); }, 5s));
  EXPECT_EQ(server.peers()[0]->close_reason()->code, websocket::close_code::too_big);
}

TEST(WebSocket, ManyQueuedSendsArriveInOrderOneWriteAtATime) {
  std::vector<std::string> got;
  std::mutex mu;
  WsServer server([&](Peer& p) {
    if (!p.accept()) return;
    while (auto m = p.read()) {
      std::lock_guard g(mu);
      got.push_back(*m);
    }
  });
  TlsFixture tls([&](Peer& p) {
    if (!p.accept()) return;
    while (auto m = p.read()) {
      std::lock_guard g(mu);
      got.push_back(*m);
    }
  });
  // Sizes from a few bytes to 48 KiB, so that writes take several syscalls and overlap sends:
  // two writes in flight at once would interleave their frames and corrupt the stream.
  auto message = [](int i) { return fmt::format("{:06}:", i) + std::string(static_cast<size_t>((i * 7919) % (48 * 1024)), 'a' + i % 26); };
  for (std::string url : {server.url(), tls.server->url("localhost")}) {
    {
      std::lock_guard g(mu);
      got.clear();
    }
    auto ws = open_ok(url, {.extra_ca_file = tls.ca.ca_cert_path()});
    ASSERT_TRUE(ws);
    const int n = 600;
    for (int i = 0; i < n; ++i) ASSERT_TRUE(ws->send(message(i)));
    ASSERT_TRUE(wait_until([&] { std::lock_guard g(mu); return got.size() == size_t(n); }, 10s)) << url;
    std::lock_guard g(mu);
    for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], message(i)) << url << " message " << i;
    EXPECT_EQ(ws->stats().sent, uint64_t(n));
  }

  // The queue is bounded: past max_queued_sends, send() says so instead of growing without end.
  WsServer stuck([](Peer& p) {
    p.accept();
    p.stall();
  });
  auto ws = open_ok(stuck.url(), {.max_queued_sends = 8, .close_timeout = 100ms});
  ASSERT_TRUE(ws);
  Status last;
  for (int i = 0; i < 200 && last; ++i) last = ws->send(std::string(256 * 1024, 'z'));
  ASSERT_FALSE(last);
  EXPECT_EQ(last.error().kind, ErrorKind::ResourceLimit);
  EXPECT_NE(last.error().message.find("max_queued_sends"), std::string::npos) << last.error().message;
}

TEST(WebSocket, CertificatesThatDoNotProveTheHostAreRefused) {
  {
    TlsFixture wrong(echo, BadCert::WrongHost);
    auto ws = WebSocket::connect(ws_url(wrong.server->url("localhost")), {.extra_ca_file = wrong.ca.ca_cert_path()});
    ASSERT_FALSE(ws);
    EXPECT_EQ(ws.error().kind, StreamFailure::Kind::Tls);
    EXPECT_NE(ws.error().error.message.find("certificate verification failed"), std::string::npos) << ws.error().error.message;
    EXPECT_TRUE(wrong.server->peers().empty());  // no upgrade request was ever sent
  }
  {
    TlsFixture untrusted(echo, BadCert::UntrustedCa);
    auto ws = WebSocket::connect(ws_url(untrusted.server->url("localhost")), {.extra_ca_file = untrusted.ca.ca_cert_path()});
    ASSERT_FALSE(ws);
    EXPECT_EQ(ws.error().kind, StreamFailure::Kind::Tls);
    EXPECT_NE(ws.error().error.message.find("certificate verification failed"), std::string::npos) << ws.error().error.message;
  }
  {
    TlsFixture good(echo);  // a good certificate, but its CA is not given: a stranger
    auto ws = WebSocket::connect(ws_url(good.server->url("localhost")), {});
    ASSERT_FALSE(ws);
    EXPECT_EQ(ws.error().kind, StreamFailure::Kind::Tls);
  }
}

TEST(WebSocket, ConnectFailuresAreFastClearAndBounded) {
  auto t0 = Clock::now();
  auto refused = WebSocket::connect(ws_url(fmt::format("ws://127.0.0.1:{}/", closed_port())), {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, StreamFailure::Kind::Connect);
  EXPECT_NE(refused.error().error.message.find("cannot connect to 127.0.0.1"), std::string::npos) << refused.error().error.message;
  EXPECT_LT(Clock::now() - t0, 1s);

  // A server that accepts TCP but never answers the upgrade (or the TLS hello): the deadline.
  SilentListener silent;
  for (auto scheme : {"ws", "wss"}) {
    t0 = Clock::now();
    auto r = WebSocket::connect(ws_url(fmt::format("{}://127.0.0.1:{}/", scheme, silent.port)), {.connect_timeout = 300ms});
    auto took = Clock::now() - t0;
    ASSERT_FALSE(r) << scheme;
    EXPECT_EQ(r.error().kind, StreamFailure::Kind::Io) << scheme;
    EXPECT_NE(r.error().error.message.find("handshake within 300 ms"), std::string::npos) << r.error().error.message;
    EXPECT_GE(took, 300ms);
    EXPECT_LT(took, 1500ms) << scheme;
  }

  // Cancellation stops the wait as promptly.
  std::atomic<bool> stop{false};
  std::thread canceller([&] {
    // Cancel once the client is connected and waiting for the handshake's answer: the listener then
    // has a connection in its backlog (it never accepts), which makes it readable.
    pollfd p{silent.fd.get(), POLLIN, 0};
    ::poll(&p, 1, 5000);
    stop = true;
  });
  t0 = Clock::now();
  auto c = WebSocket::connect(ws_url(fmt::format("ws://127.0.0.1:{}/", silent.port)),
                              {.connect_timeout = 10s, .cancelled = [&] { return stop.load(); }});
  canceller.join();
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().kind, StreamFailure::Kind::Cancelled);
  EXPECT_LT(Clock::now() - t0, 1500ms);

  // A server that declines the upgrade: its status and what it said.
  WsServer declining([](Peer& p) { p.decline(http::status::unauthorized, R"({"message": "401: Unauthorized"})"); });
  auto d = WebSocket::connect(ws_url(declining.url()), {});
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().kind, StreamFailure::Kind::Protocol);
  EXPECT_NE(d.error().error.message.find("HTTP 401"), std::string::npos) << d.error().error.message;
  EXPECT_NE(d.error().error.message.find("401: Unauthorized"), std::string::npos) << d.error().error.message;

  // An HTTP URL is not a WebSocket one.
  auto h = WebSocket::connect(*parse_url("http://127.0.0.1:1/"), {});
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().error.kind, ErrorKind::InvalidInput);
}

TEST(WebSocket, APeerThatVanishesOrFallsSilentIsAFailure) {
  WsServer vanishing([](Peer& p) {
    if (!p.accept()) return;
    p.write("last words");
    p.drop();
  });
  auto ws = open_ok(vanishing.url());
  ASSERT_TRUE(ws);
  auto m = ws->receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->data, "last words");
  auto e = ws->receive(5s);
  ASSERT_TRUE(e);
  ASSERT_EQ(e->kind, Event::Kind::Failed);
  EXPECT_NE(e->error.message.find("broke without a close frame"), std::string::npos) << e->error.message;
  EXPECT_NE(e->error.message.find(vanishing.url().substr(5, 9)), std::string::npos) << e->error.message;  // names the peer

  // A connection that goes quiet without a reset (nothing read, no pong to our keep-alive ping).
  WsServer silent([](Peer& p) {
    p.accept();
    p.stall();
  });
  auto t0 = Clock::now();
  auto quiet = open_ok(silent.url(), {.idle_timeout = 400ms, .close_timeout = 100ms});
  ASSERT_TRUE(quiet);
  auto q = quiet->receive(3s);
  ASSERT_TRUE(q);
  ASSERT_EQ(q->kind, Event::Kind::Failed);
  EXPECT_NE(q->error.message.find("is dead"), std::string::npos) << q->error.message;
  EXPECT_GE(Clock::now() - t0, 400ms);
  EXPECT_LT(Clock::now() - t0, 2500ms);
}

TEST(WebSocket, DestroyingItDuringAPendingReadReturnsPromptly) {
  {
    WsServer server([](Peer& p) {
      if (!p.accept()) return;
      while (p.read()) {
      }
    });
    auto ws = open_ok(server.url());
    ASSERT_TRUE(ws);
    EXPECT_FALSE(ws->receive(50ms));  // a read is pending; nothing comes
    auto t0 = Clock::now();
    ws.reset();
    EXPECT_LT(Clock::now() - t0, 500ms);
    ASSERT_TRUE(wait_until([&] { return server.peers().at(0)->close_reason().has_value(); }, 5s));
    EXPECT_EQ(server.peers()[0]->close_reason()->code, websocket::close_code::going_away);
  }
  {
    // A server that never answers our close: the destructor waits close_timeout, no longer.
    WsServer deaf([](Peer& p) {
      p.accept();
      p.stall();
    });
    auto ws = open_ok(deaf.url(), {.close_timeout = 300ms});
    ASSERT_TRUE(ws);
    auto t0 = Clock::now();
    ws.reset();
    auto took = Clock::now() - t0;
    EXPECT_LT(took, 1500ms);
  }
}

TEST(WebSocket, WssGoesThroughTheHttpsProxy) {
  TlsFixture tls(echo);
  ConnectProxy proxy;
  auto ws = open_ok(tls.server->url("localhost"),
                    {.extra_ca_file = tls.ca.ca_cert_path(),
                     .proxy = ProxySettings::parse(fmt::format("http://127.0.0.1:{}", proxy.port()), "")});
  ASSERT_TRUE(ws);
  ASSERT_TRUE(ws->send("through the tunnel"));
  auto m = ws->receive(5s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->data, "through the tunnel");
  EXPECT_EQ(proxy.targets(), std::vector<std::string>{fmt::format("localhost:{}", tls.server->port())});

  // ws:// goes direct, as http:// does (it is a local connection).
  WsServer plain(echo);
  auto direct = open_ok(plain.url(), {.proxy = ProxySettings::parse(fmt::format("http://127.0.0.1:{}", proxy.port()), "")});
  ASSERT_TRUE(direct);
  EXPECT_EQ(proxy.targets().size(), 1u);

  // The address check applies as it does to the HTTP client.
  auto refused = WebSocket::connect(ws_url(plain.url()), {.address_check = [](const IpAddress& a) -> Status {
                                                              return fail(ErrorKind::InvalidInput, "{} is this host's own", format_address(a));
                                                            }});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, StreamFailure::Kind::Refused);
}

// The Discord stand-in (tests/peers/discord.mjs), a Node `ws` server that encodes Discord's Gateway:
// HELLO first, and the fatal close code for a bad token.
TEST(WebSocket, TalksToTheDiscordGatewayStandIn) {
  const std::filesystem::path peers = std::filesystem::path(MOAT_SOURCE_DIR) / "tests/peers";
  auto node = find_program("node");
  if (!node || !std::filesystem::exists(peers / "node_modules/ws"))
    GTEST_SKIP() << "needs node and tests/peers/node_modules (scripts/npm-deps tests/peers)";
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd read_end(out[0]), write_end(out[1]);
  auto child = spawn_process({*node, (peers / "discord.mjs").string(), "--token", "right-token"},
                             {.stdout_fd = write_end.get()});
  ASSERT_TRUE(child) << child.error().message;
  write_end.reset();
  std::string line;
  auto until = Clock::now() + 10s;
  while (line.find('\n') == std::string::npos && Clock::now() < until) {
    pollfd p{read_end.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  ASSERT_NE(line.find('\n'), std::string::npos) << "the stand-in printed no URL: " << line;
  auto gateway = nlohmann::json::parse(line.substr(0, line.find('\n')))["gateway"].get<std::string>();

  auto ws = open_ok(gateway + "/?v=10&encoding=json", {.headers = {{"User-Agent", "DiscordBot (moat, 0.1)"}}});
  ASSERT_TRUE(ws);
  auto hello = ws->receive(5s);
  ASSERT_TRUE(hello);
  ASSERT_EQ(hello->kind, Event::Kind::Message) << hello->error.message;
  auto h = nlohmann::json::parse(hello->data);
  EXPECT_EQ(h["op"], 10);
  EXPECT_GT(h["d"]["heartbeat_interval"].get<int>(), 0);

  // IDENTIFY with the wrong token: Discord's fatal 4004, which the channel must see to stop.
  ASSERT_TRUE(ws->send(R"({"op": 2, "d": {"token": "Bot wrong-token", "intents": 513, "properties": {}}})"));
  auto end = ws->receive(5s);
  ASSERT_TRUE(end);
  ASSERT_EQ(end->kind, Event::Kind::Closed) << end->error.message;
  EXPECT_EQ(end->close_code, 4004);
  EXPECT_EQ(end->close_reason, "Authentication failed.");
  EXPECT_TRUE(end->closed_by_server);
}

}  // namespace
}  // namespace moat::net
