// Self-test of the upstream doubles (tests/support/upstream_server.h, test_ca.h): before gateway
// tests trust them, check with an independent client (raw sockets + OpenSSL, no code shared with
// the doubles) that they speak HTTP/1.1 and TLS correctly and stream without buffering.
#include "support/upstream_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <charconv>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/json.h"
#include "base/unique_fd.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

template <auto Fn>
struct Free {
  template <class T>
  void operator()(T* p) const { Fn(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, Free<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Free<SSL_free>>;

struct Response {
  int status = 0;
  HttpHeaders headers;
  std::string body;
  std::optional<std::string> header(std::string_view n) const { return find_header(headers, n); }
};

// A minimal HTTP/1.1 client over a real socket, optionally TLS with full verification
// (CA file + host name or IP check), written independently of the server it tests.
class Client {
 public:
  struct TlsOptions {
    std::string ca_file;
    std::string sni = "localhost";     // also the name checked against the certificate
    std::string check_ip;              // when set, check this IP SAN instead of the name
  };

  explicit Client(uint16_t port, std::optional<TlsOptions> tls = std::nullopt) {
    fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      error_ = "connect failed";
      return;
    }
    if (!tls) return;
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx_.get(), tls->ca_file.c_str(), nullptr) != 1) {
      error_ = "cannot load CA file";
      return;
    }
    ssl_.reset(SSL_new(ctx_.get()));
    SSL_set_fd(ssl_.get(), fd_.get());
    SSL_set_tlsext_host_name(ssl_.get(), tls->sni.c_str());
    if (tls->check_ip.empty())
      SSL_set1_host(ssl_.get(), tls->sni.c_str());
    else
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), tls->check_ip.c_str());
    if (SSL_connect(ssl_.get()) != 1) {
      verify_result_ = SSL_get_verify_result(ssl_.get());
      error_ = fmt::format("TLS handshake failed: {}", X509_verify_cert_error_string(verify_result_));
      ERR_clear_error();
      return;
    }
    verify_result_ = SSL_get_verify_result(ssl_.get());
  }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  long verify_result() const { return verify_result_; }

  bool send(std::string_view data) {
    while (!data.empty()) {
      long n = ssl_ ? SSL_write(ssl_.get(), data.data(), static_cast<int>(data.size()))
                    : ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads more bytes into the buffer; false at end of stream.
  bool fill() {
    char tmp[65536];
    long n = ssl_ ? SSL_read(ssl_.get(), tmp, sizeof tmp) : ::recv(fd_.get(), tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  std::optional<std::string> line() {
    for (;;) {
      auto e = buf_.find("\r\n");
      if (e != std::string::npos) {
        std::string l = buf_.substr(0, e);
        buf_.erase(0, e + 2);
        return l;
      }
      if (!fill()) return std::nullopt;
    }
  }

  std::optional<std::string> exact(size_t n) {
    while (buf_.size() < n)
      if (!fill()) return std::nullopt;
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }

  // Status line and headers (skipping 1xx interim responses).
  std::optional<Response> head() {
    for (;;) {
      auto status = line();
      if (!status || status->size() < 12) return std::nullopt;
      Response r;
      r.status = std::stoi(status->substr(9, 3));
      for (;;) {
        auto h = line();
        if (!h) return std::nullopt;
        if (h->empty()) break;
        auto c = h->find(':');
        r.headers.emplace_back(h->substr(0, c), h->substr(c + 2));
      }
      if (r.status >= 200) return r;
    }
  }

  // One decoded chunk of a chunked body; empty string = the last chunk (trailers consumed).
  std::optional<std::string> chunk() {
    auto size_line = line();
    if (!size_line) return std::nullopt;
    size_t size = 0;
    std::from_chars(size_line->data(), size_line->data() + size_line->size(), size, 16);
    if (size == 0) {
      while (auto t = line())
        if (t->empty()) return std::string();
      return std::nullopt;
    }
    auto data = exact(size);
    if (!data || line() != std::string()) return std::nullopt;
    return data;
  }

  std::optional<Response> response(bool head_request = false) {
    auto r = head();
    if (!r) return std::nullopt;
    if (head_request) return r;
    if (auto cl = r->header("content-length")) {
      auto body = exact(std::stoull(*cl));
      if (!body) return std::nullopt;
      r->body = *body;
    } else if (r->header("transfer-encoding")) {
      for (;;) {
        auto c = chunk();
        if (!c) return std::nullopt;
        if (c->empty()) break;
        r->body += *c;
      }
    } else {
      while (fill()) {
      }
      r->body = std::move(buf_);
      buf_.clear();
    }
    return r;
  }

 private:
  UniqueFd fd_;
  SslCtxPtr ctx_;
  SslPtr ssl_;  // declared after ctx_ so it is freed first
  std::string buf_;
  std::string error_;
  long verify_result_ = -1;
};

std::string get(std::string_view target, std::string_view extra = "") {
  return fmt::format("GET {} HTTP/1.1\r\nHost: upstream.test\r\n{}\r\n", target, extra);
}

}  // namespace

TEST(UpstreamServer, PlainRequestGetsDefaultAnswerAndIsRecorded) {
  UpstreamServer up;
  ASSERT_NE(up.port(), 0);
  EXPECT_EQ(up.origin(), fmt::format("http://127.0.0.1:{}", up.port()));
  Client c(up.port());
  ASSERT_TRUE(c.ok()) << c.error();
  ASSERT_TRUE(c.send(get("/some/path?q=1", "X-Custom-Thing: Value 1\r\n")));
  auto r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, fmt::format("hello from upstream {}\n", up.port()));

  ASSERT_TRUE(up.wait_for_requests(1, 5s));
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "GET");
  EXPECT_EQ(reqs[0].target, "/some/path?q=1");
  EXPECT_EQ(reqs[0].path(), "/some/path");
  EXPECT_EQ(reqs[0].version, "HTTP/1.1");
  EXPECT_EQ(reqs[0].header("x-custom-thing"), "Value 1");  // case-insensitive
  EXPECT_EQ(reqs[0].header("HOST"), "upstream.test");
  EXPECT_FALSE(reqs[0].has_header("authorization"));
  EXPECT_EQ(reqs[0].connection, 0u);
  EXPECT_EQ(reqs[0].sequence, 0u);
  EXPECT_TRUE(reqs[0].sni.empty());
  EXPECT_FALSE(up.wait_for_requests(2, 50ms));
}

TEST(UpstreamServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  UpstreamServer up;
  Client c(up.port());
  ASSERT_TRUE(c.ok());
  // Pipelined in one write: a Content-Length body, then a chunked body with an extension and a
  // trailer, then a plain GET. All must be answered in order on this one connection.
  ASSERT_TRUE(c.send("POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                     "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n" +
                     get("/third")));
  auto r1 = c.response();
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->body, "5\n");
  auto r2 = c.response();
  ASSERT_TRUE(r2);
  auto echo = Json::parse(r2->body);
  EXPECT_EQ(echo["body"], "abcdefg");
  EXPECT_EQ(echo["method"], "POST");
  auto r3 = c.response();
  ASSERT_TRUE(r3);
  EXPECT_EQ(r3->status, 200);

  ASSERT_TRUE(up.wait_for_requests(3, 5s));
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(reqs[i].connection, 0u);
    EXPECT_EQ(reqs[i].sequence, i);
  }
  EXPECT_EQ(reqs[0].body, "hello");
  EXPECT_FALSE(reqs[0].chunked);
  EXPECT_EQ(reqs[1].body, "abcdefg");
  EXPECT_EQ(reqs[1].body_size, 7u);
  EXPECT_TRUE(reqs[1].chunked);
  EXPECT_EQ(reqs[1].header("x-trailer"), "t");
  EXPECT_EQ(up.connections_accepted(), 1u);

  // A second connection gets the next index; Connection: close is honoured.
  Client c2(up.port());
  ASSERT_TRUE(c2.send(get("/", "Connection: close\r\n")));
  auto r4 = c2.response();
  ASSERT_TRUE(r4);
  EXPECT_EQ(r4->header("connection"), "close");
  EXPECT_FALSE(c2.fill());  // the server closed
  ASSERT_TRUE(up.wait_for_requests(4, 5s));
  EXPECT_EQ(up.requests()[3].connection, 1u);
}

TEST(UpstreamServer, ExpectContinueAndHeadAndCustomHandler) {
  UpstreamServer up;
  Client c(up.port());
  ASSERT_TRUE(c.send("POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  ASSERT_EQ(c.line(), "HTTP/1.1 100 Continue");  // sent before the body is read, as curl waits for it
  ASSERT_EQ(c.line(), "");
  ASSERT_TRUE(c.send("abc"));
  auto r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "3\n");

  ASSERT_TRUE(c.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"));
  auto h = c.response(true);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_NE(h->header("content-length"), std::nullopt);

  up.set_handler([](const RecordedRequest& req, ResponseWriter& w) {
    w.send({418, {{"X-Seen", req.target}}, "teapot"});
  });
  ASSERT_TRUE(c.send(get("/custom")));
  auto t = c.response();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->status, 418);
  EXPECT_EQ(t->header("x-seen"), "/custom");
  EXPECT_EQ(t->body, "teapot");
}

TEST(UpstreamServer, TlsWithTestCaPassesFullVerification) {
  TempDir dir("moat-upstream-tls");
  TestCa ca(dir.path());
  EXPECT_TRUE(std::filesystem::exists(ca.ca_cert_path()));
  EXPECT_EQ((std::filesystem::status(ca.ca_key_path()).permissions() & std::filesystem::perms::all),
            std::filesystem::perms(0600));
  auto cert = ca.issue("upstream", {"localhost", "api.anthropic.com", "127.0.0.1"});
  UpstreamServer up({.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  EXPECT_TRUE(up.origin().starts_with("https://127.0.0.1:"));

  for (std::string name : {"localhost", "api.anthropic.com"}) {
    Client c(up.port(), Client::TlsOptions{ca.ca_cert_path(), name});
    ASSERT_TRUE(c.ok()) << name << ": " << c.error();
    EXPECT_EQ(c.verify_result(), X509_V_OK);
    ASSERT_TRUE(c.send(get("/tls")));
    auto r = c.response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  Client by_ip(up.port(), Client::TlsOptions{ca.ca_cert_path(), "localhost", "127.0.0.1"});
  ASSERT_TRUE(by_ip.ok()) << by_ip.error();

  ASSERT_TRUE(up.wait_for_requests(2, 5s));
  auto reqs = up.requests();
  EXPECT_EQ(reqs[0].sni, "localhost");
  EXPECT_EQ(reqs[1].sni, "api.anthropic.com");
  EXPECT_EQ(up.tls_handshake_failures(), 0u);
}

TEST(UpstreamServer, BadCertificatesFailVerification) {
  TempDir dir("moat-upstream-badcert");
  TestCa ca(dir.path());
  struct Case {
    BadCert kind;
    long expected;
  };
  for (auto [kind, expected] : {Case{BadCert::Expired, X509_V_ERR_CERT_HAS_EXPIRED},
                                Case{BadCert::WrongHost, X509_V_ERR_HOSTNAME_MISMATCH},
                                Case{BadCert::SelfSigned, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT},
                                Case{BadCert::UntrustedCa, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY}}) {
    auto cert = ca.issue_bad(fmt::format("bad{}", static_cast<int>(kind)), kind);
    UpstreamServer up({.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
    Client c(up.port(), Client::TlsOptions{ca.ca_cert_path(), "localhost"});
    EXPECT_FALSE(c.ok()) << "bad cert kind " << static_cast<int>(kind) << " was accepted";
    EXPECT_EQ(c.verify_result(), expected) << X509_verify_cert_error_string(c.verify_result());
    // The double saw the refusal as a failed handshake and never a request.
    for (int i = 0; i < 200 && up.tls_handshake_failures() == 0; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(up.tls_handshake_failures(), 1u);
    EXPECT_TRUE(up.requests().empty());
  }
}

TEST(UpstreamServer, BytesSourceAndSinkMoveExactCounts) {
  UpstreamServer up({.max_recorded_body = 1024});
  Client c(up.port());
  constexpr size_t kSize = 10'000'003;  // not a multiple of the server's write size
  ASSERT_TRUE(c.send(get(fmt::format("/bytes/{}", kSize))));
  auto r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("content-length"), std::to_string(kSize));
  ASSERT_EQ(r->body.size(), kSize);
  EXPECT_EQ(r->body.find_first_not_of('x'), std::string::npos);

  std::string big(5'000'000, 'y');
  ASSERT_TRUE(c.send(fmt::format("POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", big.size()) + big));
  auto s = c.response();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->body, "5000000\n");
  ASSERT_TRUE(up.wait_for_requests(2, 5s));
  EXPECT_EQ(up.requests()[1].body.size(), 1024u);  // recording capped, count exact
  EXPECT_EQ(up.requests()[1].body_size, 5'000'000u);
}

TEST(UpstreamServer, RawEchoAndSinkModes) {
  UpstreamServer echo({.mode = UpstreamServer::Mode::Echo});
  Client c(echo.port());
  ASSERT_TRUE(c.send("not http at all\r\n"));
  EXPECT_EQ(c.line(), "not http at all");

  UpstreamServer sink({.mode = UpstreamServer::Mode::Sink});
  {
    Client s(sink.port());
    ASSERT_TRUE(s.send(std::string(1 << 20, 'z')));
  }
  for (int i = 0; i < 200 && sink.raw_bytes_received() < (1u << 20); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(sink.raw_bytes_received(), 1u << 20);
}

TEST(UpstreamServer, ChunkedStreamArrivesAsWrittenAndStopIsPrompt) {
  UpstreamServer up;
  Client c(up.port());
  ASSERT_TRUE(c.send(get("/chunks/3?delay_ms=80")));
  auto h = c.head();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->header("transfer-encoding"), "chunked");
  std::vector<Clock::time_point> at;
  for (int i = 0; i < 3; ++i) {
    auto ch = c.chunk();
    ASSERT_TRUE(ch);
    EXPECT_EQ(*ch, fmt::format("chunk {}\n", i));
    at.push_back(Clock::now());
  }
  EXPECT_GE(at[1] - at[0], 60ms);
  EXPECT_GE(at[2] - at[1], 60ms);
  EXPECT_EQ(c.chunk(), std::string());

  // HTTP/1.0 knows no chunked encoding: the same stream comes unframed, ended by closing.
  Client old(up.port());
  ASSERT_TRUE(old.send("GET /chunks/2 HTTP/1.0\r\n\r\n"));
  auto r10 = old.response();
  ASSERT_TRUE(r10);
  EXPECT_EQ(r10->header("transfer-encoding"), std::nullopt);
  EXPECT_EQ(r10->body, "chunk 0\nchunk 1\n");

  // A handler in the middle of a long stream must not hold stop() up.
  Client slow(up.port());
  ASSERT_TRUE(slow.send(get("/chunks/1000?delay_ms=1000")));
  ASSERT_TRUE(slow.head());
  auto t0 = Clock::now();
  up.stop();
  EXPECT_LT(Clock::now() - t0, 2s);
}

// ---------------------------------------------------------------------------------------------
// Anthropic double

namespace {

std::string messages_request(std::string_view key, bool stream, std::string_view version = "2023-06-01") {
  std::string body = Json{{"model", "claude-sonnet-4-5"},
                          {"max_tokens", 64},
                          {"stream", stream},
                          {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}}
                         .dump();
  std::string headers = "Host: api.anthropic.com\r\ncontent-type: application/json\r\n";
  if (!key.empty()) headers += fmt::format("x-api-key: {}\r\n", key);
  if (!version.empty()) headers += fmt::format("anthropic-version: {}\r\n", version);
  return fmt::format("POST /v1/messages HTTP/1.1\r\n{}Content-Length: {}\r\n\r\n{}", headers, body.size(), body);
}

struct ArrivedEvent {
  std::string name;
  Json data;
  Clock::time_point at;
};

}  // namespace

TEST(AnthropicDouble, RejectsMissingOrWrongKeyAndVersionWithRealErrorShape) {
  AnthropicDouble api({.api_key = "sk-right"});
  UpstreamServer up({.handler = api.handler()});
  Client c(up.port());

  ASSERT_TRUE(c.send(messages_request("sk-wrong", false)));
  auto r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->header("content-type"), "application/json");
  auto err = Json::parse(r->body);
  EXPECT_EQ(err["type"], "error");
  EXPECT_EQ(err["error"]["type"], "authentication_error");
  EXPECT_EQ(err["error"]["message"], "invalid x-api-key");
  EXPECT_TRUE(err["request_id"].get<std::string>().starts_with("req_"));

  ASSERT_TRUE(c.send(messages_request("", false)));
  r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(Json::parse(r->body)["error"]["message"], "x-api-key header is required");

  ASSERT_TRUE(c.send(messages_request("sk-right", false, "")));
  r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(Json::parse(r->body)["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Json::parse(r->body)["error"]["message"], "anthropic-version: header is required");

  ASSERT_TRUE(c.send(get("/v1/other")));
  r = c.response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(Json::parse(r->body)["error"]["type"], "not_found_error");
  EXPECT_EQ(api.messages_served(), 0u);
}

TEST(AnthropicDouble, NonStreamingAnswerHasTheMessageShape) {
  AnthropicDouble api({.api_key = "sk-right", .text = {"Hi", " there"}});
  UpstreamServer up({.handler = api.handler()});
  Client c(up.port());
  ASSERT_TRUE(c.send(messages_request("sk-right", false)));
  auto r = c.response();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(r->header("request-id")->starts_with("req_"));
  auto m = Json::parse(r->body);
  EXPECT_TRUE(m["id"].get<std::string>().starts_with("msg_"));
  EXPECT_EQ(m["type"], "message");
  EXPECT_EQ(m["role"], "assistant");
  EXPECT_EQ(m["model"], "claude-sonnet-4-5");
  ASSERT_EQ(m["content"].size(), 1u);
  EXPECT_EQ(m["content"][0]["type"], "text");
  EXPECT_EQ(m["content"][0]["text"], "Hi there");
  EXPECT_EQ(m["stop_reason"], "end_turn");
  EXPECT_TRUE(m["stop_sequence"].is_null());
  EXPECT_EQ(m["usage"]["output_tokens"], 2);
  EXPECT_TRUE(r->body.starts_with("{\"id\":"));  // field order as the real API sends it
  EXPECT_EQ(api.messages_served(), 1u);
}

TEST(AnthropicDouble, StreamingEventsOverTlsArriveAsTheyAreSent) {
  TempDir dir("moat-upstream-sse");
  TestCa ca(dir.path());
  auto cert = ca.issue("api", {"api.anthropic.com"});
  AnthropicDouble api({.api_key = "sk-right", .text = {"one", " two", " three"}, .event_delay = 100ms});
  UpstreamServer up({.tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}, .handler = api.handler()});

  Client c(up.port(), Client::TlsOptions{ca.ca_cert_path(), "api.anthropic.com"});
  ASSERT_TRUE(c.ok()) << c.error();
  ASSERT_TRUE(c.send(messages_request("sk-right", true)));
  auto h = c.head();
  ASSERT_TRUE(h);
  ASSERT_EQ(h->status, 200);
  EXPECT_EQ(h->header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(h->header("transfer-encoding"), "chunked");

  // Parse SSE from the decoded body regardless of chunk boundaries; stamp each event when its
  // blank line arrives.
  std::vector<ArrivedEvent> got;
  std::string sse;
  for (;;) {
    auto ch = c.chunk();
    ASSERT_TRUE(ch) << "stream cut short";
    if (ch->empty()) break;
    sse += *ch;
    for (size_t end; (end = sse.find("\n\n")) != std::string::npos;) {
      std::string ev = sse.substr(0, end);
      sse.erase(0, end + 2);
      ASSERT_TRUE(ev.starts_with("event: ")) << ev;
      auto nl = ev.find('\n');
      ASSERT_EQ(ev.substr(nl + 1, 6), "data: ") << ev;
      got.push_back({ev.substr(7, nl - 7), Json::parse(ev.substr(nl + 7)), Clock::now()});
    }
  }
  EXPECT_TRUE(sse.empty());

  std::vector<std::string> names;
  for (const auto& e : got) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start", "ping", "content_block_delta",
                                             "content_block_delta", "content_block_delta", "content_block_stop",
                                             "message_delta", "message_stop"}));
  ASSERT_EQ(got.size(), 9u);
  for (const auto& e : got) EXPECT_EQ(e.data["type"], e.name);  // event name and JSON type agree
  EXPECT_TRUE(got[0].data["message"]["id"].get<std::string>().starts_with("msg_"));
  EXPECT_EQ(got[0].data["message"]["content"], Json::array());
  EXPECT_TRUE(got[0].data["message"]["stop_reason"].is_null());
  EXPECT_EQ(got[1].data["content_block"], (Json{{"type", "text"}, {"text", ""}}));
  std::string text;
  for (size_t i = 3; i < 6; ++i) {
    EXPECT_EQ(got[i].data["index"], 0);
    EXPECT_EQ(got[i].data["delta"]["type"], "text_delta");
    text += got[i].data["delta"]["text"].get<std::string>();
  }
  EXPECT_EQ(text, api.answer_text());
  EXPECT_EQ(got[7].data["delta"]["stop_reason"], "end_turn");
  EXPECT_EQ(got[7].data["usage"]["output_tokens"], 3);

  // Timing: each event reached the client within a few ms of being sent, and they came spaced by
  // the configured delay (a buffering hop would deliver them together at the end).
  auto sent = api.sent_events();
  ASSERT_EQ(sent.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(sent[i].name, got[i].name);
    EXPECT_EQ(sent[i].stream, 0u);
    EXPECT_LT(got[i].at - sent[i].sent_at, 75ms) << "event " << i << " was held back";
    if (i > 0) {
      EXPECT_GE(got[i].at - got[i - 1].at, 50ms) << "events " << i - 1 << " and " << i << " came together";
    }
  }
  ASSERT_TRUE(up.wait_for_requests(1));
  EXPECT_EQ(up.requests()[0].sni, "api.anthropic.com");
  EXPECT_EQ(up.requests()[0].header("x-api-key"), "sk-right");
}
