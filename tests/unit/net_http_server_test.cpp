// The one HTTP server (src/net/http_server.h) on a real socket, spoken to in raw bytes: routing by
// longest prefix, slow clients and the connection cap, the body a handler gets being the bytes
// sent (what a platform's signature is computed over), and each route's own body limit.
#include "net/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "support/raw_http.h"
#include "support/wait.h"

namespace moat::net {
namespace {

using moat::testing::http_call;
using moat::testing::raw_call;

// A server on a free port with routes that record what they were handed.
struct Recorder {
  std::mutex mu;
  std::vector<ServerRequest> got;
  std::atomic<int> calls{0};

  RouteHandler handler() {
    return [this](const ServerRequest& r) {
      ++calls;
      std::lock_guard lock(mu);
      got.push_back(r);
      return ServerResponse::json(200, Json{{"bytes", r.body.size()}});
    };
  }
  ServerRequest last() {
    std::lock_guard lock(mu);
    return got.empty() ? ServerRequest{} : got.back();
  }
};

std::string post_head(uint16_t port, std::string_view target, std::string_view extra_headers) {
  return fmt::format("POST {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}Connection: close\r\n\r\n", target, port, extra_headers);
}

std::string chunked(std::string_view body, size_t piece) {
  std::string out;
  for (size_t i = 0; i < body.size(); i += piece) {
    auto part = body.substr(i, piece);
    out += fmt::format("{:x}\r\n", part.size());
    out += part;
    out += "\r\n";
  }
  return out + "0\r\n\r\n";
}

TEST(HttpServerTest, LongestPrefixWinsAndSlowClientsAreDropped) {
  ServerOptions o;
  o.port = 0;
  o.request_timeout = std::chrono::milliseconds(300);
  o.max_connections = 2;
  HttpServer server(o);
  server.add_route("/", [](const ServerRequest&) { return ServerResponse::json(200, Json{{"route", "root"}}); });
  server.add_route("/hooks", [](const ServerRequest& r) {
    return ServerResponse::json(200, Json{{"route", "hooks"}, {"q", r.query_param("x").value_or("")}});
  });
  ASSERT_TRUE(server.start());
  EXPECT_NE(server.port(), 0);
  EXPECT_EQ(server.base_url(), fmt::format("http://127.0.0.1:{}", server.port()));
  EXPECT_EQ(http_call(server.port(), "GET", "/hooks/a?x=a%20b").json()["route"], "hooks");
  EXPECT_EQ(http_call(server.port(), "GET", "/hooks/a?x=a%20b").json()["q"], "a b");
  EXPECT_EQ(http_call(server.port(), "GET", "/hooksy").json()["route"], "root");

  // A client that never finishes its request is cut off after the timeout.
  int fd = testing::connect_loopback(server.port());
  UniqueFd guard(fd);
  testing::send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\n");
  std::string buf;
  auto start = std::chrono::steady_clock::now();
  testing::read_until(fd, buf, [](const std::string&) { return false; }, std::chrono::seconds(5));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));

  // Over the connection cap: 503.
  int a = testing::connect_loopback(server.port()), b = testing::connect_loopback(server.port());
  UniqueFd ga(a), gb(b);
  // The server takes the two idle connections in its own time; until it has, a request is still
  // served. Ask until the cap answers, within a deadline.
  int busy_status = 0;
  EXPECT_TRUE(testing::wait_until([&] { return (busy_status = http_call(server.port(), "GET", "/").status) == 503; },
                                  std::chrono::seconds(5)))
      << "last status " << busy_status;
  server.stop();
}

// Signatures (Slack's, WhatsApp's HMACs) are computed over the body's bytes: the handler must get
// exactly those, whatever they contain, and the headers that carry the signature.
TEST(HttpServerTest, AHandlerGetsTheBodyBytesExactlyAsSentAndTheHeaders) {
  ServerOptions o;
  o.port = 0;
  HttpServer server(o);
  Recorder rec;
  server.add_route("/hook", rec.handler());
  ASSERT_TRUE(server.start());

  std::string body = "{\"a\":1}\r\n\r\nPOST / HTTP/1.1\r\n";
  body += std::string("\0nul\0", 5);
  body += "\xff\xfe\x80 \t\r\n  trailing spaces  \r\n";
  ASSERT_NE(body.find('\0'), std::string::npos);

  // With a Content-Length.
  auto head = post_head(server.port(), "/hook?x=1",
                        fmt::format("X-Telegram-Bot-Api-Secret-Token: s3cr3t\r\nX-Hub-Signature-256: sha256=ab\r\n"
                                    "Content-Length: {}\r\n",
                                    body.size()));
  auto r = raw_call(server.port(), head + body);
  ASSERT_EQ(r.status, 200) << r.body;
  auto got = rec.last();
  EXPECT_EQ(got.body, body);
  EXPECT_EQ(got.body.size(), body.size());
  EXPECT_EQ(got.method, "POST");
  EXPECT_EQ(got.path, "/hook");
  EXPECT_EQ(got.query, "x=1");
  // Names as sent, looked up without case.
  EXPECT_EQ(got.header("x-telegram-bot-api-secret-token"), "s3cr3t");
  EXPECT_EQ(got.header("X-HUB-SIGNATURE-256"), "sha256=ab");
  EXPECT_NE(std::find(got.headers.begin(), got.headers.end(),
                      std::pair<std::string, std::string>{"X-Telegram-Bot-Api-Secret-Token", "s3cr3t"}),
            got.headers.end());

  // Chunked, split mid-"\r\n" and mid-NUL: the handler gets the payload without the framing.
  r = raw_call(server.port(), post_head(server.port(), "/hook", "Transfer-Encoding: chunked\r\n") + chunked(body, 7));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rec.last().body, body);
  EXPECT_EQ(rec.calls.load(), 2);
  server.stop();
}

TEST(HttpServerTest, ABodyOverItsRoutesLimitIs413AndNeverReachesTheHandler) {
  ServerOptions o;
  o.port = 0;
  o.body_limit = 1024;
  HttpServer server(o);
  Recorder small, roomy, plain;
  server.add_route("/small", small.handler(), {.body_limit = 64});
  server.add_route("/roomy", roomy.handler(), {.body_limit = 4096});  // above the server's default
  server.add_route("/", plain.handler());
  ASSERT_TRUE(server.start());
  auto port = server.port();
  auto post = [&](std::string_view target, const std::string& body) {
    return raw_call(port, post_head(port, target, fmt::format("Content-Length: {}\r\n", body.size())) + body);
  };

  // Content-Length one over: refused from the head alone.
  auto r = post("/small", std::string(65, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.json()["error"], "request body larger than 64 bytes");
  // Chunked, one over: refused once the chunks pass the limit.
  r = raw_call(port, post_head(port, "/small/sub", "Transfer-Encoding: chunked\r\n") + chunked(std::string(65, 'y'), 10));
  EXPECT_EQ(r.status, 413);
  // Expect: 100-continue with a length over the limit: 413 at once, never "100 Continue".
  std::string raw;
  r = raw_call(port, post_head(port, "/small", "Expect: 100-continue\r\nContent-Length: 100000\r\n"), &raw);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(raw.find("100 Continue"), std::string::npos) << raw;
  EXPECT_EQ(small.calls.load(), 0);

  // At the limit it goes through, and the other routes keep theirs.
  EXPECT_EQ(post("/small", std::string(64, 'x')).status, 200);
  EXPECT_EQ(small.calls.load(), 1);
  EXPECT_EQ(post("/roomy", std::string(3000, 'x')).status, 200);
  EXPECT_EQ(roomy.last().body.size(), 3000u);
  EXPECT_EQ(post("/", std::string(1024, 'x')).status, 200);
  r = post("/other", std::string(1025, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.json()["error"], "request body larger than 1024 bytes");
  EXPECT_EQ(plain.calls.load(), 1);
  server.stop();
}

TEST(HttpHeaders, LookupAndCompareIgnoreAsciiCaseOnly) {
  HeaderList h{{"Content-Type", "a"}, {"content-type", "b"}, {"X-Empty", ""}};
  EXPECT_EQ(header_value(h, "CONTENT-TYPE"), "a");  // the first one
  EXPECT_EQ(header_value(h, "x-empty"), "");
  EXPECT_EQ(header_value(h, "Content-Typ"), std::nullopt);
  EXPECT_TRUE(iequals("Bearer", "bEARER"));
  EXPECT_FALSE(iequals("Bearer", "Bearer "));
  EXPECT_FALSE(iequals("\xc3\x89", "\xc3\xa9"));  // É and é: ASCII only, no locale
  EXPECT_TRUE(istarts_with("Bearer abc", "bearer "));
  EXPECT_FALSE(istarts_with("Bear", "bearer "));
  EXPECT_TRUE(istarts_with("anything", ""));
}

}  // namespace
}  // namespace moat::net
