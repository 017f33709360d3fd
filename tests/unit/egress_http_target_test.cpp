// Where a proxied request wants to go, parsed from hostile input.
#include "egress/http_target.h"

#include <gtest/gtest.h>

using namespace moat::egress;

TEST(HttpTarget, ParsesAuthorities) {
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
  // The host's length is limited (253, DNS's), with or without a port (found by fuzz_http_target).
  std::string longest(253, 'a'), over(254, 'a');
  EXPECT_TRUE(parse_authority(longest, 443));
  EXPECT_TRUE(parse_authority(longest + ":65535"));
  EXPECT_FALSE(parse_authority(over, 443));
  EXPECT_FALSE(parse_authority(over + ":443"));
}

TEST(HttpTarget, ParsesAbsoluteUris) {
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

TEST(HttpTarget, WritesAuthorities) {
  EXPECT_EQ(authority_text("example.com", 443), "example.com:443");
  EXPECT_EQ(authority_text("fd00::1", 80), "[fd00::1]:80");
}
