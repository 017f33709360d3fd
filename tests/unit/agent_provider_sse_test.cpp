// Pure unit tests of the providers' parsing helpers: the SSE parser (fed in every possible split),
// URL parsing, retry hints and error-message extraction.
#include <gtest/gtest.h>

#include "agent/providers/http_provider.h"
#include "agent/providers/sse.h"
#include "net/http_client.h"

namespace moat::agent {
namespace {

using namespace std::chrono_literals;

std::vector<SseEvent> parse(std::string_view stream, std::vector<size_t> splits = {}) {
  std::vector<SseEvent> out;
  SseParser p([&](const SseEvent& e) { out.push_back(e); });
  size_t at = 0;
  for (size_t s : splits) {
    p.feed(stream.substr(at, s - at));
    at = s;
  }
  p.feed(stream.substr(at));
  p.finish();
  return out;
}

TEST(SseParser, EventAndData) {
  auto ev = parse("event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\n");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].event, "message_start");
  EXPECT_EQ(ev[0].data, "{\"a\":1}");
  EXPECT_EQ(ev[1].event, "ping");
}

TEST(SseParser, DefaultsToMessageAndJoinsMultiLineData) {
  auto ev = parse("data: first\ndata: second\ndata:third\n\n");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].event, "message");
  EXPECT_EQ(ev[0].data, "first\nsecond\nthird");  // one space after the colon is dropped, no more
}

TEST(SseParser, CommentsAndUnknownFieldsAreIgnored) {
  auto ev = parse(": keep-alive\n\nretry: 100\nfoo: bar\ndata: x\nid: 7\n\n:tail\n");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].data, "x");
  EXPECT_EQ(ev[0].id, "7");
}

TEST(SseParser, CrLfAndLoneCrLineEndings) {
  auto crlf = parse("event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r");
  ASSERT_EQ(crlf.size(), 2u);
  EXPECT_EQ(crlf[0].event, "a");
  EXPECT_EQ(crlf[0].data, "1");
  EXPECT_EQ(crlf[1].event, "b");
  EXPECT_EQ(crlf[1].data, "2");
}

TEST(SseParser, EverySplitPointGivesTheSameEvents) {
  const std::string stream =
      "\xEF\xBB\xBF"
      "event: content_block_delta\r\ndata: {\"text\":\"he\"}\r\n\r\n: c\r\ndata: a\r\ndata: b\r\n\r\n"
      "event: x\ndata:\n\n";
  auto whole = parse(stream);
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(whole[0].event, "content_block_delta");  // the byte-order mark is not part of the name
  EXPECT_EQ(whole[1].data, "a\nb");
  EXPECT_EQ(whole[2].data, "");  // an empty data line still makes an event
  for (size_t i = 0; i <= stream.size(); ++i) {
    for (size_t j = i; j <= stream.size(); j += 7) {
      auto split = parse(stream, {i, j});
      ASSERT_EQ(split.size(), whole.size()) << "split at " << i << "," << j;
      for (size_t k = 0; k < whole.size(); ++k) {
        EXPECT_EQ(split[k].event, whole[k].event) << i << "," << j;
        EXPECT_EQ(split[k].data, whole[k].data) << i << "," << j;
      }
    }
  }
}

TEST(SseParser, ByteAtATime) {
  const std::string stream = "data: {\"x\": [1, 2]}\r\n\r\ndata: [DONE]\n\n";
  std::vector<SseEvent> out;
  SseParser p([&](const SseEvent& e) { out.push_back(e); });
  for (char c : stream) p.feed(std::string_view(&c, 1));
  EXPECT_TRUE(p.finish());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, "{\"x\": [1, 2]}");
  EXPECT_EQ(out[1].data, "[DONE]");
}

TEST(SseParser, UnterminatedEventIsNotDispatched) {
  std::vector<SseEvent> out;
  SseParser p([&](const SseEvent& e) { out.push_back(e); });
  p.feed("data: complete\n\ndata: half");
  EXPECT_FALSE(p.finish());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "complete");
}

TEST(ParseBaseUrl, JoinsPathsAndRefusesQueries) {
  // The URL syntax itself is net::parse_url's (tests/unit/net_url_test.cpp); a base URL adds that
  // its path is a prefix.
  auto o = parse_base_url("http://127.0.0.1:11434/v1/");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->join("/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(parse_base_url("https://api.anthropic.com")->join("/v1/messages"), "/v1/messages");
  for (const char* bad : {"ftp://x", "api.openai.com", "https://", "http://h:0", "https://u:p@h/", "http://h/?q=1",
                          "http://h/#x"}) {
    auto r = parse_base_url(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
      EXPECT_NE(r.error().message.find("base_url"), std::string::npos) << r.error().message;
    }
  }
}

TEST(RetryHint, HeadersInOrderOfPreference) {
  auto now = std::chrono::system_clock::from_time_t(1'700'000'000);
  net::HttpResponseHead h;
  EXPECT_FALSE(detail::retry_hint(h, now));
  h.headers = {{"Retry-After", "3"}};
  EXPECT_EQ(detail::retry_hint(h, now), 3000ms);
  h.headers = {{"retry-after", "1.5"}, {"retry-after-ms", "250"}};
  EXPECT_EQ(detail::retry_hint(h, now), 250ms);
  // 1700000000 = Tue, 14 Nov 2023 22:13:20 GMT
  h.headers = {{"retry-after", "Tue, 14 Nov 2023 22:13:27 GMT"}};
  EXPECT_EQ(detail::retry_hint(h, now), 7000ms);
  h.headers = {{"retry-after", "Tue, 14 Nov 2023 22:00:00 GMT"}};  // in the past: now
  EXPECT_EQ(detail::retry_hint(h, now), 0ms);
  h.headers = {{"anthropic-ratelimit-requests-remaining", "0"},
               {"anthropic-ratelimit-requests-reset", "2023-11-14T22:13:25Z"},
               {"anthropic-ratelimit-tokens-remaining", "5000"},
               {"anthropic-ratelimit-tokens-reset", "2023-11-14T22:15:00Z"}};
  EXPECT_EQ(detail::retry_hint(h, now), 5000ms);
  h.headers = {{"x-ratelimit-remaining-tokens", "0"}, {"x-ratelimit-reset-tokens", "1m2.5s"}};
  EXPECT_EQ(detail::retry_hint(h, now), 62500ms);
}

TEST(GoDuration, Parses) {
  EXPECT_EQ(detail::parse_go_duration("6m0s"), 360000ms);
  EXPECT_EQ(detail::parse_go_duration("20ms"), 20ms);
  EXPECT_EQ(detail::parse_go_duration("1h"), 3600000ms);
  EXPECT_EQ(detail::parse_go_duration("0.5s"), 500ms);
  EXPECT_FALSE(detail::parse_go_duration("soon"));
  EXPECT_FALSE(detail::parse_go_duration(""));
}

TEST(ProviderErrorMessage, Shapes) {
  EXPECT_EQ(detail::provider_error_message(
                R"({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}})"),
            "invalid x-api-key (authentication_error)");
  EXPECT_EQ(detail::provider_error_message(R"({"error":{"message":"bad model","type":"invalid_request_error","code":null}})"),
            "bad model (invalid_request_error)");
  EXPECT_EQ(detail::provider_error_message(R"({"error":"model 'x' not found"})"), "model 'x' not found");
  EXPECT_EQ(detail::provider_error_message("<html>\nBad Gateway</html>"), "<html> Bad Gateway</html>");
  EXPECT_EQ(detail::provider_error_message(""), "(empty body)");
}

TEST(Redact, ScrubsKeysAndBearerTokens) {
  std::vector<Credential> creds = {{"authorization", "Bearer sk-secret-123456"}, {"x-api-key", "sk-ant-abcdef"}};
  EXPECT_EQ(detail::redact("key sk-secret-123456 and sk-ant-abcdef!", creds), "key [redacted] and [redacted]!");
}

TEST(MakeProvider, ValidatesKindAndUrl) {
  auto none = [](const std::string&, uint16_t) -> Result<std::vector<Credential>> { return std::vector<Credential>{}; };
  auto bad_kind = make_provider({.kind = "gemini", .base_url = "https://x"}, none);
  ASSERT_FALSE(bad_kind);
  EXPECT_EQ(bad_kind.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(bad_kind.error().message.find("gemini"), std::string::npos);
  auto bad_url = make_provider({.kind = "openai", .base_url = "localhost:11434"}, none);
  ASSERT_FALSE(bad_url);
  EXPECT_EQ(bad_url.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(bad_url.error().message.find("localhost:11434"), std::string::npos);
  EXPECT_TRUE(make_provider({.kind = "anthropic", .base_url = "https://api.anthropic.com"}, none));
  EXPECT_TRUE(make_provider({.kind = "openai", .base_url = "http://127.0.0.1:11434/v1"}, nullptr));
}

}  // namespace
}  // namespace moat::agent
