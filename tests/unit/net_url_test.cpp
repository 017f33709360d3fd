// The one URL parser (src/net/url.h): what proxied clients send the gateway, providers' base URLs,
// webhook callbacks, proxy URLs — parsed from hostile input.
#include "net/url.h"

#include <gtest/gtest.h>

using namespace moat::net;

TEST(Url, ParsesAuthorities) {
  auto a = parse_authority("API.Example.COM.:443");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "api.example.com");
  EXPECT_EQ(a->port, 443);
  auto v6 = parse_authority("[::ffff:127.0.0.1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::ffff:127.0.0.1");
  EXPECT_EQ(v6->port, 8080);
  EXPECT_EQ(parse_authority("example.com", 80)->port, 80);
  for (auto bad : {"", "example.com", "example.com:0", "example.com:65536", "example.com:8x", "::1:80", "[::1", "[zz]:1",
                   "exa mple.com:80", "a/b:80", "[::1]x80"})
    EXPECT_FALSE(parse_authority(bad)) << bad;
  // The host's length is limited (253, DNS's), with or without a port (found by the fuzz target fuzz_url).
  std::string longest(253, 'a'), over(254, 'a');
  EXPECT_TRUE(parse_authority(longest, 443));
  EXPECT_TRUE(parse_authority(longest + ":65535"));
  EXPECT_FALSE(parse_authority(over, 443));
  EXPECT_FALSE(parse_authority(over + ":443"));
}

TEST(Url, ParsesAbsoluteUris) {
  auto t = parse_absolute_http_uri("http://Example.com:8080/a/b?c=d#frag");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->host, "example.com");
  EXPECT_EQ(t->port, 8080);
  EXPECT_EQ(t->path, "/a/b?c=d");
  EXPECT_EQ(parse_absolute_http_uri("HTTP://example.com")->path, "/");
  EXPECT_EQ(parse_absolute_http_uri("http://example.com?q")->path, "/?q");
  EXPECT_EQ(parse_absolute_http_uri("http://2130706433/")->host, "2130706433");
  EXPECT_FALSE(parse_absolute_http_uri("https://example.com/"));  // https goes through CONNECT
  EXPECT_FALSE(parse_absolute_http_uri("http://user:pw@example.com/"));
  EXPECT_FALSE(parse_absolute_http_uri("/relative"));
  auto r = parse_https_url("https://api.openai.com/v1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->port, 443);
  EXPECT_EQ(r->path, "/v1");
}

TEST(Url, WritesAuthorities) {
  EXPECT_EQ(authority_text("example.com", 443), "example.com:443");
  EXPECT_EQ(authority_text("fd00::1", 80), "[fd00::1]:80");
}

TEST(Url, ParsesBothSchemes) {
  auto a = parse_url("https://api.anthropic.com");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_TRUE(a->tls());
  EXPECT_EQ(a->host, "api.anthropic.com");
  EXPECT_EQ(a->port, 443);
  EXPECT_EQ(a->path, "/");
  EXPECT_EQ(a->authority(), "api.anthropic.com");
  EXPECT_EQ(a->origin(), "https://api.anthropic.com");
  EXPECT_EQ(a->join("/v1/messages"), "/v1/messages");

  auto o = parse_url("http://127.0.0.1:11434/v1/");
  ASSERT_TRUE(o);
  EXPECT_FALSE(o->tls());
  EXPECT_EQ(o->port, 11434);
  EXPECT_EQ(o->path, "/v1/");
  EXPECT_EQ(o->authority(), "127.0.0.1:11434");
  EXPECT_EQ(o->join("/chat/completions"), "/v1/chat/completions");

  auto v6 = parse_url("HTTPS://[::1]:8443/x?y=1#frag");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->authority(), "[::1]:8443");
  EXPECT_EQ(v6->path, "/x?y=1");
  EXPECT_EQ(parse_url("http://h:80/")->authority(), "h");
  EXPECT_EQ(parse_url("https://h:80/")->authority(), "h:80");

  for (const char* bad : {"ftp://x", "api.openai.com", "https://", "http://h:0", "http://h:99999", "https://u:p@h/",
                          "http://h h/", "http://[::1/", "http://%6c%6f/"}) {
    auto r = parse_url(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().kind, moat::ErrorKind::InvalidInput);
    }
  }
}

TEST(Url, ParsesWebSocketUrlsOnlyWhereAskedFor) {
  auto d = parse_websocket_url("WSS://Gateway.Discord.gg/?v=10&encoding=json");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->scheme, Scheme::Wss);
  EXPECT_TRUE(d->tls());
  EXPECT_EQ(d->host, "gateway.discord.gg");
  EXPECT_EQ(d->port, 443);
  EXPECT_EQ(d->path, "/?v=10&encoding=json");
  EXPECT_EQ(d->origin(), "wss://gateway.discord.gg");

  auto local = parse_websocket_url("ws://127.0.0.1:8080/socket");
  ASSERT_TRUE(local);
  EXPECT_EQ(local->scheme, Scheme::Ws);
  EXPECT_FALSE(local->tls());
  EXPECT_EQ(local->authority(), "127.0.0.1:8080");
  EXPECT_EQ(parse_websocket_url("ws://h:80/")->authority(), "h");
  EXPECT_EQ(parse_url("wss://h/x", Scheme::Wss)->path, "/x");
  EXPECT_FALSE(parse_url("ws://h/x", Scheme::Wss));

  // A WebSocket URL is never taken where an HTTP one is expected, nor the other way round; the
  // fragment a WebSocket URL must not have is refused, not dropped.
  EXPECT_FALSE(parse_url("wss://gateway.discord.gg"));
  for (const char* bad : {"https://h/", "http://h/", "wss://h/#frag", "ws://u@h/", "wss://", "ws://h:0/"}) {
    auto r = parse_websocket_url(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().kind, moat::ErrorKind::InvalidInput);
    }
  }
  EXPECT_NE(parse_websocket_url("https://h/").error().message.find("ws:// or wss://"), std::string::npos);
}

TEST(Url, QueryParameters) {
  EXPECT_EQ(find_query_param("chat=a%20b&after=o1", "chat"), "a b");
  EXPECT_EQ(find_query_param("chat=a+b", "chat"), "a b");
  EXPECT_EQ(find_query_param("x&chat", "chat"), "");
  EXPECT_FALSE(find_query_param("chat=1", "after"));
  EXPECT_EQ(percent_decode("%zz%4"), "%zz%4");  // malformed escapes are kept
  EXPECT_EQ(percent_encode("a b/é"), "a%20b%2F%C3%A9");
}
