// The Anthropic provider against ProviderDouble over real sockets: streaming, tool round trips,
// usage, retries, errors, TLS and credentials.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "agent/providers/provider.h"
#include "net/http_client.h"
#include "support/provider_double.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"

namespace moat::agent {
namespace {

using namespace std::chrono_literals;
using testing::ProviderDouble;
using testing::ProviderWire;
using testing::ScriptedReply;
using Json = nlohmann::json;

constexpr const char* kKey = "sk-ant-api03-provider-test-key-0123456789";

CredentialSource key_source(std::string key, std::atomic<int>* calls = nullptr) {
  return [key, calls](const std::string&, uint16_t) -> Result<std::vector<Credential>> {
    if (calls) ++*calls;
    return std::vector<Credential>{{"x-api-key", key}};
  };
}

ProviderConfig config(const std::string& base_url) {
  ProviderConfig c;
  c.kind = "anthropic";
  c.base_url = base_url;
  c.timeout = 5s;
  c.max_retries = 3;
  c.initial_backoff = 20ms;
  c.max_backoff = 5s;
  return c;
}

std::unique_ptr<Provider> provider(const ProviderConfig& cfg, CredentialSource creds) {
  auto p = make_provider(cfg, std::move(creds));
  EXPECT_TRUE(p) << p.error().message;
  return std::move(*p);
}

ModelRequest hello(std::string text = "Hello there") {
  ModelRequest r;
  r.model = "claude-test-1";
  r.system = "You are a test.";
  r.max_tokens = 256;
  r.messages.push_back({"user", {ContentBlock::text_block(std::move(text))}});
  return r;
}

ToolSpec bash_tool() {
  return {"bash", "Run a shell command",
          Json{{"type", "object"}, {"properties", {{"command", {{"type", "string"}}}}}, {"required", {"command"}}}};
}

TEST(AnthropicProvider, StreamsTextDeltasInOrder) {
  ProviderDouble model({.api_key = kKey});
  model.enqueue(ScriptedReply::say_pieces({"Hel", "lo", ", ", "world", "!"}));
  auto p = provider(config(model.anthropic_base_url()), key_source(kKey));
  std::vector<std::string> deltas;
  auto r = p->complete(hello(), {.on_text = [&](std::string_view d) { deltas.emplace_back(d); }});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(deltas, (std::vector<std::string>{"Hel", "lo", ", ", "world", "!"}));
  ASSERT_EQ(r->content.size(), 1u);
  EXPECT_EQ(r->content[0].kind, ContentBlock::Kind::Text);
  EXPECT_EQ(r->content[0].text, "Hello, world!");
  EXPECT_EQ(r->stop_reason, "end_turn");

  // The request as the wire saw it.
  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 1u);
  const auto& q = reqs[0];
  EXPECT_EQ(q.wire, ProviderWire::Anthropic);
  EXPECT_EQ(q.http.method, "POST");
  EXPECT_EQ(q.http.target, "/v1/messages");
  EXPECT_EQ(q.http.header("anthropic-version"), "2023-06-01");
  EXPECT_EQ(q.http.header("content-type"), "application/json");
  EXPECT_EQ(q.http.header("x-api-key"), kKey);
  EXPECT_EQ(q.body["model"], "claude-test-1");
  EXPECT_EQ(q.body["max_tokens"], 256);
  EXPECT_EQ(q.body["system"], "You are a test.");
  EXPECT_EQ(q.body["stream"], true);
  EXPECT_EQ(q.body["messages"][0]["content"][0], (Json{{"type", "text"}, {"text", "Hello there"}}));
  EXPECT_FALSE(q.body.contains("tools"));
}

TEST(AnthropicProvider, DeltasArriveWhileTheStreamIsStillOpen) {
  ProviderDouble model;
  auto reply = ScriptedReply::say_pieces({"a", "b", "c"});
  reply.delay = 150ms;
  model.enqueue(reply);
  auto p = provider(config(model.anthropic_base_url()), key_source(kKey));
  std::vector<std::chrono::steady_clock::time_point> at;
  auto start = std::chrono::steady_clock::now();
  auto r = p->complete(hello(), {.on_text = [&](std::string_view) { at.push_back(std::chrono::steady_clock::now()); }});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(at.size(), 3u);
  // The first delta must not wait for the end of the answer (~7 events x 150 ms).
  EXPECT_LT(at[0] - start, std::chrono::steady_clock::now() - start - 300ms);
  EXPECT_GE(at[2] - at[0], 250ms);
}

TEST(AnthropicProvider, ToolUseRoundTrip) {
  ProviderDouble model({.api_key = kKey});
  model.enqueue(ScriptedReply::call("bash", {{"command", "ls -la /workspace"}, {"timeout", 30}}, "toolu_01abc", "Let me look."));
  model.set_reply_function([](const testing::ProviderRequest& r) {
    auto results = r.last_tool_results();
    return ScriptedReply::say("Saw " + (results.empty() ? std::string("nothing") : results[0]["content"].get<std::string>()));
  });
  auto p = provider(config(model.anthropic_base_url()), key_source(kKey));

  ModelRequest req = hello("run ls");
  req.tools.push_back(bash_tool());
  std::string streamed;
  auto first = p->complete(req, {.on_text = [&](std::string_view d) { streamed += d; }});
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(streamed, "Let me look.");
  EXPECT_EQ(first->stop_reason, "tool_use");
  ASSERT_EQ(first->content.size(), 2u);
  EXPECT_EQ(first->content[0].text, "Let me look.");
  const ContentBlock& call = first->content[1];
  EXPECT_EQ(call.kind, ContentBlock::Kind::ToolUse);
  EXPECT_EQ(call.id, "toolu_01abc");
  EXPECT_EQ(call.name, "bash");
  EXPECT_EQ(call.input, (Json{{"command", "ls -la /workspace"}, {"timeout", 30}}));

  // Second turn: the assistant message goes back verbatim, then the result.
  req.messages.push_back({"assistant", first->content});
  ContentBlock result;
  result.kind = ContentBlock::Kind::ToolResult;
  result.id = call.id;
  result.text = "3 files";
  ContentBlock failed;
  failed.kind = ContentBlock::Kind::ToolResult;
  failed.id = call.id;
  failed.text = "oops";
  failed.is_error = true;
  req.messages.push_back({"user", {result}});
  auto second = p->complete(req, {});
  ASSERT_TRUE(second) << second.error().message;
  ASSERT_EQ(second->content.size(), 1u);
  EXPECT_EQ(second->content[0].text, "Saw 3 files");

  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].body["tools"][0],
            (Json{{"name", "bash"}, {"description", "Run a shell command"}, {"input_schema", bash_tool().input_schema}}));
  const Json& msgs = reqs[1].body["messages"];
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[1]["role"], "assistant");
  EXPECT_EQ(msgs[1]["content"][1], (Json{{"type", "tool_use"},
                                         {"id", "toolu_01abc"},
                                         {"name", "bash"},
                                         {"input", {{"command", "ls -la /workspace"}, {"timeout", 30}}}}));
  EXPECT_EQ(msgs[2]["role"], "user");
  EXPECT_EQ(msgs[2]["content"][0], (Json{{"type", "tool_result"}, {"tool_use_id", "toolu_01abc"}, {"content", "3 files"}}));

  // An error result carries is_error.
  req.messages.back() = {"user", {failed}};
  ASSERT_TRUE(p->complete(req, {}));
  EXPECT_EQ(model.requests()[2].body["messages"][2]["content"][0]["is_error"], true);
}

TEST(AnthropicProvider, SeveralToolCallsAndUsage) {
  ProviderDouble model;
  ScriptedReply reply;
  reply.tool_calls = {{"", "read_file", {{"path", "a.txt"}}}, {"", "read_file", {{"path", "b.txt"}}}, {"", "noargs", Json::object()}};
  reply.input_tokens = 1234;
  reply.output_tokens = 56;
  model.enqueue(reply);
  auto p = provider(config(model.anthropic_base_url()), key_source(kKey));
  auto r = p->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->content.size(), 3u);
  EXPECT_EQ(r->content[0].input, (Json{{"path", "a.txt"}}));
  EXPECT_EQ(r->content[1].input, (Json{{"path", "b.txt"}}));
  EXPECT_EQ(r->content[2].input, Json::object());
  EXPECT_TRUE(r->content[0].id.starts_with("toolu_"));
  EXPECT_NE(r->content[0].id, r->content[1].id);
  EXPECT_EQ(r->usage.input_tokens, 1234u);
  EXPECT_EQ(r->usage.output_tokens, 56u);
  EXPECT_EQ(r->stop_reason, "tool_use");
}

TEST(AnthropicProvider, MaxTokensStopReason) {
  ProviderDouble model;
  auto reply = ScriptedReply::say("cut short");
  reply.stop_reason = "max_tokens";
  model.enqueue(reply);
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stop_reason, "max_tokens");
}

TEST(AnthropicProvider, HonoursRetryAfterOn429) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::rate_limited("1"));
  model.enqueue(ScriptedReply::say("finally"));
  auto p = provider(config(model.anthropic_base_url()), key_source(kKey));
  auto r = p->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->content[0].text, "finally");
  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_GE(reqs[1].http.received_at - reqs[0].http.received_at, 1s);
}

TEST(AnthropicProvider, RateLimitedUntilRetriesRunOut) {
  ProviderDouble model;
  for (int i = 0; i < 5; ++i) model.enqueue(ScriptedReply::rate_limited("0"));
  auto cfg = config(model.anthropic_base_url());
  cfg.max_retries = 2;
  auto r = provider(cfg, key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::ResourceLimit);
  EXPECT_NE(r.error().message.find("rate_limit_error"), std::string::npos) << r.error().message;
  EXPECT_EQ(model.requests().size(), 3u);
}

TEST(AnthropicProvider, RetryAfterLongerThanMaxBackoffGivesUpAtOnce) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::rate_limited("120"));
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::ResourceLimit);
  EXPECT_EQ(model.requests().size(), 1u);
}

TEST(AnthropicProvider, BacksOffOn5xxAndOverloadThenSucceeds) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::server_error(500));
  model.enqueue(ScriptedReply::overloaded());
  model.enqueue(ScriptedReply::server_error(502));
  model.enqueue(ScriptedReply::say("ok"));
  std::atomic<int> credential_calls{0};
  auto cfg = config(model.anthropic_base_url());
  cfg.initial_backoff = 100ms;
  auto p = provider(cfg, key_source(kKey, &credential_calls));
  auto r = p->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->content[0].text, "ok");
  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(credential_calls.load(), 4);  // fetched afresh for every attempt
  // Exponential with jitter in [50%, 100%]: >= 50, 100, 200 ms.
  EXPECT_GE(reqs[1].http.received_at - reqs[0].http.received_at, 50ms);
  EXPECT_GE(reqs[2].http.received_at - reqs[1].http.received_at, 100ms);
  EXPECT_GE(reqs[3].http.received_at - reqs[2].http.received_at, 200ms);
}

TEST(AnthropicProvider, ServerErrorsUntilRetriesRunOut) {
  ProviderDouble model;
  for (int i = 0; i < 4; ++i) model.enqueue(ScriptedReply::overloaded());
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(r.error().message.find("529"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("Overloaded"), std::string::npos) << r.error().message;
  EXPECT_EQ(model.requests().size(), 4u);
}

TEST(AnthropicProvider, BadKeyIsInvalidInputQuotingTheProviderWithoutTheKey) {
  ProviderDouble model({.api_key = kKey});
  const std::string wrong = "sk-ant-api03-WRONG-key-do-not-leak-987654321";
  auto r = provider(config(model.anthropic_base_url()), key_source(wrong))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().message.find("invalid x-api-key"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("anthropic"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("claude-test-1"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("401"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find(wrong), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("WRONG"), std::string::npos) << r.error().message;
  EXPECT_EQ(model.requests().size(), 1u);  // never retried
}

TEST(AnthropicProvider, EchoedKeyIsRedacted) {
  ProviderDouble model;
  model.set_reply_function([](const testing::ProviderRequest& r) {
    return ScriptedReply::http_error(403, "key " + r.api_key().value_or("") + " may not use this model");
  });
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_EQ(r.error().message.find(kKey), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("[redacted] may not use this model"), std::string::npos) << r.error().message;
}

TEST(AnthropicProvider, UnknownModelIsInvalidInput) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::http_error(404, "model: claude-test-1"));
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().message.find("not_found_error"), std::string::npos) << r.error().message;
}

TEST(AnthropicProvider, CredentialFailureStopsTheCall) {
  ProviderDouble model;
  auto r = provider(config(model.anthropic_base_url()),
                    [](const std::string& host, uint16_t port) -> Result<std::vector<Credential>> {
                      return fail(ErrorKind::NotFound, "no secret bound for {}:{}", host, port);
                    })
               ->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::NotFound);
  EXPECT_NE(r.error().message.find("127.0.0.1"), std::string::npos);
  EXPECT_TRUE(model.requests().empty());
}

TEST(AnthropicProvider, CredentialsAreAskedForTheProvidersHostAndPort) {
  ProviderDouble model;
  std::string seen;
  auto r = provider(config(model.anthropic_base_url()),
                    [&](const std::string& host, uint16_t port) -> Result<std::vector<Credential>> {
                      seen = fmt::format("{}:{}", host, port);
                      return std::vector<Credential>{{"x-api-key", kKey}, {"anthropic-beta", "tools-2024"}};
                    })
               ->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(seen, fmt::format("127.0.0.1:{}", model.port()));
  EXPECT_EQ(model.requests()[0].http.header("anthropic-beta"), "tools-2024");
}

TEST(AnthropicProvider, TlsWithATestCa) {
  testing::TempDir dir;
  testing::TestCa ca(dir.path());
  auto cert = ca.issue("provider", {"localhost", "127.0.0.1"});
  ProviderDouble model({.api_key = kKey, .tls = testing::UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  ASSERT_TRUE(model.anthropic_base_url().starts_with("https://"));

  auto cfg = config(model.anthropic_base_url());
  cfg.extra_ca_file = ca.ca_cert_path();
  auto r = provider(cfg, key_source(kKey))->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(model.requests()[0].http.header("x-api-key"), kKey);

  // By host name: SNI is sent and the name is checked.
  cfg.base_url = fmt::format("https://localhost:{}", model.port());
  auto by_name = provider(cfg, key_source(kKey))->complete(hello(), {});
  ASSERT_TRUE(by_name) << by_name.error().message;
  EXPECT_EQ(model.requests().back().http.sni, "localhost");

  // Without the CA the certificate is refused, and that is not retried.
  size_t before = model.server().connections_accepted();
  cfg.extra_ca_file.clear();
  auto refused = provider(cfg, key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(refused.error().message.find("certificate"), std::string::npos) << refused.error().message;
  EXPECT_EQ(model.server().connections_accepted(), before + 1);
}

TEST(AnthropicProvider, WrongHostCertificateIsRefused) {
  testing::TempDir dir;
  testing::TestCa ca(dir.path());
  auto cert = ca.issue_bad("wrong", testing::BadCert::WrongHost);
  ProviderDouble model({.tls = testing::UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  auto cfg = config(fmt::format("https://localhost:{}", model.port()));
  cfg.extra_ca_file = ca.ca_cert_path();
  auto r = provider(cfg, key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("certificate"), std::string::npos) << r.error().message;
  EXPECT_TRUE(model.requests().empty());
}

TEST(AnthropicProvider, MalformedStreamBeforeAnyTextIsRetried) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::malformed_stream());
  model.enqueue(ScriptedReply::say("recovered"));
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->content[0].text, "recovered");
  EXPECT_EQ(model.requests().size(), 2u);
}

TEST(AnthropicProvider, StreamErrorAfterTextIsNotRetried) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::stream_error("Overloaded"));
  model.enqueue(ScriptedReply::say("should not be asked"));
  std::string shown;
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))
               ->complete(hello(), {.on_text = [&](std::string_view d) { shown += d; }});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(r.error().message.find("Overloaded"), std::string::npos) << r.error().message;
  EXPECT_EQ(shown, "Partial");
  EXPECT_EQ(model.requests().size(), 1u);
}

TEST(AnthropicProvider, CutStreamIsAnError) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::cut_stream());
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::Unavailable);
  EXPECT_EQ(model.requests().size(), 1u);  // text was shown already: no retry
}

TEST(AnthropicProvider, ConnectionRefusedIsRetriedThenUnavailable) {
  uint16_t port;
  {
    ProviderDouble gone;
    port = gone.port();
  }
  auto cfg = config(fmt::format("http://127.0.0.1:{}", port));
  cfg.max_retries = 2;
  auto start = std::chrono::steady_clock::now();
  auto r = provider(cfg, key_source(kKey))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(r.error().message.find("3 attempts"), std::string::npos) << r.error().message;
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);  // 10 + 20 ms at least
}

TEST(AnthropicProvider, CancelStopsTheWaitAndTheStream) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::rate_limited("4"));
  std::atomic<bool> stop{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(300ms);
    stop = true;
  });
  auto start = std::chrono::steady_clock::now();
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))
               ->complete(hello(), {.cancelled = [&] { return stop.load(); }});
  canceller.join();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("cancelled"), std::string::npos) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);

  // Mid-stream: a slow answer is abandoned.
  auto slow = ScriptedReply::say_pieces({"a", "b", "c", "d", "e", "f"});
  slow.delay = 400ms;
  model.enqueue(slow);
  int seen = 0;
  start = std::chrono::steady_clock::now();
  auto r2 = provider(config(model.anthropic_base_url()), key_source(kKey))
                ->complete(hello(), {.on_text = [&](std::string_view) { ++seen; }, .cancelled = [&] { return seen >= 1; }});
  ASSERT_FALSE(r2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(AnthropicProvider, NonStreamingAnswerIsAccepted) {
  // A proxy that ignores "stream" and answers with a whole Message still works.
  testing::UpstreamServer::Options so;
  so.handler = [](const testing::RecordedRequest&, testing::ResponseWriter& w) {
    w.send(testing::HttpResponse::json(
        200, R"({"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"whole"},)"
             R"({"type":"tool_use","id":"toolu_1","name":"t","input":{"a":1}}],"stop_reason":"tool_use",)"
             R"("stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}})"));
  };
  testing::UpstreamServer server(so);
  std::string shown;
  auto r = provider(config(server.origin()), key_source(kKey))
               ->complete(hello(), {.on_text = [&](std::string_view d) { shown += d; }});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(shown, "whole");
  ASSERT_EQ(r->content.size(), 2u);
  EXPECT_EQ(r->content[1].input, (Json{{"a", 1}}));
  EXPECT_EQ(r->usage.input_tokens, 15u);
  EXPECT_EQ(r->usage.output_tokens, 3u);
}

TEST(AnthropicProvider, DoubleServesNonStreamingJsonToo) {
  // The double's own non-streaming path, as a plain client would see it.
  ProviderDouble model;
  model.enqueue(ScriptedReply::call("bash", {{"command", "pwd"}}, "toolu_x", "hi"));
  // The HTTP client directly, with no "stream" in the body.
  auto url = parse_base_url(model.anthropic_base_url());
  ASSERT_TRUE(url);
  net::HttpRequest req{"POST", "/v1/messages", {{"anthropic-version", "2023-06-01"}, {"content-type", "application/json"}},
                  R"({"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]})"};
  std::string body;
  auto head = net::HttpClient().send(*url, req, {}, nullptr, [&](std::string_view b) {
    body += b;
    return true;
  });
  ASSERT_TRUE(head) << head.error().error.message;
  EXPECT_EQ(head->status, 200);
  Json msg = Json::parse(body);
  EXPECT_EQ(msg["type"], "message");
  EXPECT_EQ(msg["content"][0]["text"], "hi");
  EXPECT_EQ(msg["content"][1]["input"]["command"], "pwd");
  EXPECT_EQ(msg["stop_reason"], "tool_use");
}

TEST(AnthropicProvider, DoubleAnswersFromTheConversation) {
  // The agent-loop style script: "run X" makes a tool call, a tool result is summarised.
  ProviderDouble model;
  model.set_reply_function([](const testing::ProviderRequest& r) {
    auto results = r.last_tool_results();
    if (!results.empty()) return ScriptedReply::say("output: " + results[0]["content"].get<std::string>());
    std::string said = r.last_user_text();
    if (said.starts_with("run ")) return ScriptedReply::call("bash", {{"command", said.substr(4)}});
    return ScriptedReply::say("You said: " + said);
  });
  auto p = provider(config(model.anthropic_base_url()), key_source(kKey));
  ModelRequest req = hello("run uname -a");
  auto turn = p->complete(req, {});
  ASSERT_TRUE(turn) << turn.error().message;
  ASSERT_EQ(turn->content.size(), 1u);
  EXPECT_EQ(turn->content[0].input, (Json{{"command", "uname -a"}}));
  req.messages.push_back({"assistant", turn->content});
  req.messages.push_back({"user", {ContentBlock{ContentBlock::Kind::ToolResult, "Linux", turn->content[0].id}}});
  turn = p->complete(req, {});
  ASSERT_TRUE(turn) << turn.error().message;
  EXPECT_EQ(turn->content[0].text, "output: Linux");
  EXPECT_EQ(turn->stop_reason, "end_turn");
}

TEST(AnthropicProvider, DoubleRejectsAToolResultWithoutItsToolUse) {
  ProviderDouble model;
  ModelRequest req = hello();
  req.messages.push_back({"assistant", {ContentBlock::text_block("no call here")}});
  req.messages.push_back({"user", {ContentBlock{ContentBlock::Kind::ToolResult, "x", "toolu_nope"}}});
  auto r = provider(config(model.anthropic_base_url()), key_source(kKey))->complete(req, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().message.find("toolu_nope"), std::string::npos) << r.error().message;
  EXPECT_EQ(model.requests().size(), 1u);
}

}  // namespace
}  // namespace moat::agent

namespace moat::agent {
namespace {

// A credential never travels in the clear: a provider whose base_url is plain http:// to anything
// but loopback refuses a call that would carry one, before connecting (192.0.2.1 is reserved for
// documentation: nothing would answer, and nothing is tried), while the same provider without a
// bound credential is not refused for that.
TEST(AnthropicProvider, ACredentialIsNeverSentOverPlainHttpBeyondLoopback) {
  std::atomic<int> calls{0};
  auto p = provider(config("http://192.0.2.1:80"), key_source(kKey, &calls));
  auto t0 = std::chrono::steady_clock::now();
  auto r = p->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("plain http://"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("https://"), std::string::npos) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "it tried to connect first";
  EXPECT_EQ(calls.load(), 1);
  // Loopback is the exception (a local Ollama or vLLM): the key reaches the double.
  ProviderDouble model({.api_key = kKey});
  model.enqueue(ScriptedReply::say_pieces({"ok"}));
  auto local = provider(config(model.anthropic_base_url()), key_source(kKey));
  auto ok = local->complete(hello(), {});
  EXPECT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(model.requests().at(0).http.header("x-api-key"), kKey);
}

}  // namespace
}  // namespace moat::agent
