// The OpenAI-compatible provider against ProviderDouble over real sockets.
#include <gtest/gtest.h>

#include <atomic>

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

constexpr const char* kKey = "sk-proj-openai-provider-test-key-ABCDEFGHIJ";

CredentialSource bearer(std::string key) {
  return [key](const std::string&, uint16_t) -> Result<std::vector<Credential>> {
    return std::vector<Credential>{{"authorization", "Bearer " + key}};
  };
}

ProviderConfig config(const std::string& base_url) {
  ProviderConfig c;
  c.kind = "openai";
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
  r.model = "gpt-test";
  r.system = "You are a test.";
  r.max_tokens = 300;
  r.messages.push_back({"user", {ContentBlock::text_block(std::move(text))}});
  return r;
}

TEST(OpenAiProvider, StreamsTextAndSendsTheRequestShape) {
  ProviderDouble model({.api_key = kKey});
  auto reply = ScriptedReply::say_pieces({"Hi", " from", " gpt"});
  reply.input_tokens = 42;
  reply.output_tokens = 7;
  model.enqueue(reply);
  auto p = provider(config(model.openai_base_url()), bearer(kKey));
  std::vector<std::string> deltas;
  auto r = p->complete(hello(), {.on_text = [&](std::string_view d) { deltas.emplace_back(d); }});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(deltas, (std::vector<std::string>{"Hi", " from", " gpt"}));
  ASSERT_EQ(r->content.size(), 1u);
  EXPECT_EQ(r->content[0].text, "Hi from gpt");
  EXPECT_EQ(r->stop_reason, "end_turn");
  EXPECT_EQ(r->usage.input_tokens, 42u);  // from the usage-only last chunk
  EXPECT_EQ(r->usage.output_tokens, 7u);

  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 1u);
  const auto& q = reqs[0];
  EXPECT_EQ(q.wire, ProviderWire::OpenAi);
  EXPECT_EQ(q.http.target, "/v1/chat/completions");
  EXPECT_EQ(q.http.header("authorization"), std::string("Bearer ") + kKey);
  EXPECT_EQ(q.http.header("content-type"), "application/json");
  EXPECT_FALSE(q.http.has_header("x-api-key"));
  EXPECT_EQ(q.body["model"], "gpt-test");
  EXPECT_EQ(q.body["stream"], true);
  EXPECT_EQ(q.body["stream_options"], (Json{{"include_usage", true}}));
  EXPECT_EQ(q.body["max_tokens"], 300);
  EXPECT_EQ(q.body["messages"],
            (Json::array({{{"role", "system"}, {"content", "You are a test."}}, {{"role", "user"}, {"content", "Hello there"}}})));
  EXPECT_EQ(q.system(), "You are a test.");
  EXPECT_EQ(q.last_user_text(), "Hello there");
}

TEST(OpenAiProvider, ToolCallRoundTrip) {
  ProviderDouble model({.api_key = kKey});
  ScriptedReply calls;
  calls.text = {"Checking."};
  calls.tool_calls = {{"call_A", "bash", {{"command", "echo hi"}}}, {"call_B", "read_file", {{"path", "/etc/hosts"}}}};
  model.enqueue(calls);
  model.set_reply_function([](const testing::ProviderRequest& r) {
    std::string said;
    for (const auto& t : r.last_tool_results()) said += t["tool_use_id"].get<std::string>() + "=" + t["content"].get<std::string>() + ";";
    return ScriptedReply::say(said);
  });
  auto p = provider(config(model.openai_base_url()), bearer(kKey));

  ModelRequest req = hello("run echo hi");
  req.tools.push_back({"bash", "Run a command", Json{{"type", "object"}, {"properties", {{"command", {{"type", "string"}}}}}}});
  auto first = p->complete(req, {});
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->stop_reason, "tool_use");
  ASSERT_EQ(first->content.size(), 3u);
  EXPECT_EQ(first->content[0].text, "Checking.");
  EXPECT_EQ(first->content[1].kind, ContentBlock::Kind::ToolUse);
  EXPECT_EQ(first->content[1].id, "call_A");
  EXPECT_EQ(first->content[1].name, "bash");
  EXPECT_EQ(first->content[1].input, (Json{{"command", "echo hi"}}));
  EXPECT_EQ(first->content[2].id, "call_B");
  EXPECT_EQ(first->content[2].input, (Json{{"path", "/etc/hosts"}}));

  req.messages.push_back({"assistant", first->content});
  ContentBlock a{ContentBlock::Kind::ToolResult, "hi\n", "call_A"};
  ContentBlock b{ContentBlock::Kind::ToolResult, "permission denied", "call_B"};
  b.is_error = true;
  req.messages.push_back({"user", {a, b, ContentBlock::text_block("and then?")}});
  auto second = p->complete(req, {});
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->content[0].text, "call_A=hi\n;call_B=Error: permission denied;");

  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].body["tools"][0],
            (Json{{"type", "function"},
                  {"function", {{"name", "bash"}, {"description", "Run a command"}, {"parameters", req.tools[0].input_schema}}}}));
  const Json& msgs = reqs[1].body["messages"];
  ASSERT_EQ(msgs.size(), 6u);  // system, user, assistant, tool, tool, user
  EXPECT_EQ(msgs[2]["role"], "assistant");
  EXPECT_EQ(msgs[2]["content"], "Checking.");
  ASSERT_EQ(msgs[2]["tool_calls"].size(), 2u);
  EXPECT_EQ(msgs[2]["tool_calls"][0]["id"], "call_A");
  EXPECT_EQ(msgs[2]["tool_calls"][0]["type"], "function");
  EXPECT_EQ(msgs[2]["tool_calls"][0]["function"]["name"], "bash");
  ASSERT_TRUE(msgs[2]["tool_calls"][0]["function"]["arguments"].is_string());  // a JSON string, not an object
  EXPECT_EQ(Json::parse(msgs[2]["tool_calls"][0]["function"]["arguments"].get<std::string>()), (Json{{"command", "echo hi"}}));
  EXPECT_EQ(msgs[3], (Json{{"role", "tool"}, {"tool_call_id", "call_A"}, {"content", "hi\n"}}));
  EXPECT_EQ(msgs[4], (Json{{"role", "tool"}, {"tool_call_id", "call_B"}, {"content", "Error: permission denied"}}));
  EXPECT_EQ(msgs[5], (Json{{"role", "user"}, {"content", "and then?"}}));
}

TEST(OpenAiProvider, AssistantWithOnlyToolCallsSendsNullContent) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::call("t", {{"x", 1}}, "call_1"));
  model.enqueue(ScriptedReply::say("done"));
  auto p = provider(config(model.openai_base_url()), nullptr);
  auto req = hello();
  auto first = p->complete(req, {});
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_EQ(first->content.size(), 1u);
  req.messages.push_back({"assistant", first->content});
  req.messages.push_back({"user", {ContentBlock{ContentBlock::Kind::ToolResult, "1", "call_1"}}});
  ASSERT_TRUE(p->complete(req, {}));
  auto reqs = model.requests();
  const Json& msgs = reqs[1].body["messages"];
  EXPECT_TRUE(msgs[2]["content"].is_null());
  EXPECT_EQ(msgs.size(), 4u);  // no empty user message after the tool result
  EXPECT_FALSE(reqs[0].http.has_header("authorization"));  // no credentials, none sent
}

TEST(OpenAiProvider, FinishReasonLengthIsMaxTokens) {
  ProviderDouble model;
  auto reply = ScriptedReply::say("long");
  reply.stop_reason = "max_tokens";
  model.enqueue(reply);
  auto r = provider(config(model.openai_base_url()), bearer(kKey))->complete(hello(), {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->stop_reason, "max_tokens");
}

TEST(OpenAiProvider, HonoursRetryAfterOn429) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::rate_limited("1"));
  auto hinted = ScriptedReply::rate_limited("");
  hinted.extra_headers = {{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "600ms"}};
  model.enqueue(hinted);
  model.enqueue(ScriptedReply::say("ok"));
  auto r = provider(config(model.openai_base_url()), bearer(kKey))->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_GE(reqs[1].http.received_at - reqs[0].http.received_at, 1s);
  EXPECT_GE(reqs[2].http.received_at - reqs[1].http.received_at, 600ms);
}

TEST(OpenAiProvider, BacksOffOn5xxThenSucceeds) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::server_error(500));
  model.enqueue(ScriptedReply::overloaded());  // 503 on this wire
  model.enqueue(ScriptedReply::say("ok"));
  auto cfg = config(model.openai_base_url());
  cfg.initial_backoff = 100ms;
  auto r = provider(cfg, bearer(kKey))->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_GE(reqs[1].http.received_at - reqs[0].http.received_at, 50ms);
  EXPECT_GE(reqs[2].http.received_at - reqs[1].http.received_at, 100ms);
}

TEST(OpenAiProvider, BadKeyIsInvalidInputWithoutTheKey) {
  ProviderDouble model({.api_key = kKey});
  const std::string wrong = "sk-proj-WRONGWRONGWRONG-0000";
  auto r = provider(config(model.openai_base_url()), bearer(wrong))->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().message.find("Incorrect API key provided"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("openai"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("gpt-test"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find(wrong), std::string::npos) << r.error().message;
  EXPECT_EQ(model.requests().size(), 1u);
}

TEST(OpenAiProvider, MissingKeyIsInvalidInput) {
  ProviderDouble model({.api_key = kKey});
  auto r = provider(config(model.openai_base_url()), nullptr)->complete(hello(), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().message.find("didn't provide an API key"), std::string::npos) << r.error().message;
}

TEST(OpenAiProvider, TlsWithATestCa) {
  testing::TempDir dir;
  testing::TestCa ca(dir.path());
  auto cert = ca.issue("openai", {"localhost", "127.0.0.1"});
  ProviderDouble model({.api_key = kKey, .tls = testing::UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  auto cfg = config(fmt::format("https://localhost:{}/v1", model.port()));
  cfg.extra_ca_file = ca.ca_cert_path();
  auto r = provider(cfg, bearer(kKey))->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(model.requests()[0].http.sni, "localhost");
  EXPECT_EQ(model.requests()[0].http.header("authorization"), std::string("Bearer ") + kKey);

  cfg.extra_ca_file = dir.path() / "missing.pem";
  auto bad = make_provider(cfg, bearer(kKey));
  ASSERT_TRUE(bad);
  auto r2 = (*bad)->complete(hello(), {});
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r2.error().message.find("missing.pem"), std::string::npos) << r2.error().message;
}

TEST(OpenAiProvider, MalformedStreamIsRetriedAndCutStreamIsNot) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::malformed_stream());
  model.enqueue(ScriptedReply::say("fine"));
  auto p = provider(config(model.openai_base_url()), bearer(kKey));
  auto r = p->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->content[0].text, "fine");

  model.enqueue(ScriptedReply::cut_stream());
  auto cut = p->complete(hello(), {});
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().kind, ErrorKind::Unavailable);
  EXPECT_EQ(model.requests().size(), 3u);

  model.enqueue(ScriptedReply::stream_error("boom"));
  auto err = p->complete(hello(), {});
  ASSERT_FALSE(err);
  EXPECT_NE(err.error().message.find("boom"), std::string::npos) << err.error().message;
}

TEST(OpenAiProvider, SlowChunksStillComplete) {
  ProviderDouble model;
  auto reply = ScriptedReply::say("one two three");
  reply.delay = 100ms;
  model.enqueue(reply);
  auto cfg = config(model.openai_base_url());
  cfg.timeout = 1s;  // an idle limit: the answer as a whole takes longer, but no gap does
  auto r = provider(cfg, bearer(kKey))->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->content[0].text, "one two three");

  auto stalled = ScriptedReply::say("a b");
  stalled.delay = 1500ms;
  model.enqueue(stalled);
  cfg.max_retries = 0;
  auto timed_out = provider(cfg, bearer(kKey))->complete(hello(), {});
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.error().kind, ErrorKind::Unavailable);
}

TEST(OpenAiProvider, NonStreamingAnswerIsAccepted) {
  testing::UpstreamServer::Options so;
  so.handler = [](const testing::RecordedRequest&, testing::ResponseWriter& w) {
    w.send(testing::HttpResponse::json(
        200, R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,)"
             R"("tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{\"k\":2}"}}]},)"
             R"("finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}})"));
  };
  testing::UpstreamServer server(so);
  auto r = provider(config(server.origin() + "/v1"), nullptr)->complete(hello(), {});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->content.size(), 1u);
  EXPECT_EQ(r->content[0].id, "call_9");
  EXPECT_EQ(r->content[0].input, (Json{{"k", 2}}));
  EXPECT_EQ(r->stop_reason, "tool_use");
  EXPECT_EQ(r->usage.input_tokens, 9u);
}

TEST(OpenAiProvider, DoubleAnswersChatCompletionsWithoutV1AndWithoutStreaming) {
  ProviderDouble model;
  model.enqueue(ScriptedReply::call("f", {{"a", "b"}}, "call_z", "text"));
  auto url = parse_base_url(model.origin());
  ASSERT_TRUE(url);
  net::HttpRequest req{"POST", "/chat/completions", {{"content-type", "application/json"}},
                  R"({"model":"m","messages":[{"role":"user","content":"hi"}]})"};
  std::string body;
  auto head = net::HttpClient().send(*url, req, {}, nullptr, [&](std::string_view b) {
    body += b;
    return true;
  });
  ASSERT_TRUE(head) << head.error().error.message;
  EXPECT_EQ(head->status, 200);
  Json doc = Json::parse(body);
  EXPECT_EQ(doc["object"], "chat.completion");
  EXPECT_EQ(doc["choices"][0]["message"]["content"], "text");
  EXPECT_EQ(doc["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], R"({"a":"b"})");
  EXPECT_EQ(doc["choices"][0]["finish_reason"], "tool_calls");
}

TEST(OpenAiProvider, DoubleRejectsUnansweredToolCalls) {
  // The double checks conversations like the real service: a tool call without its result is a 400.
  ProviderDouble model;
  auto req = hello();
  ContentBlock call{ContentBlock::Kind::ToolUse, "", "call_1", "t", Json::object()};
  req.messages.push_back({"assistant", {call}});
  req.messages.push_back({"user", {ContentBlock::text_block("next")}});
  auto r = provider(config(model.openai_base_url()), nullptr)->complete(req, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(r.error().message.find("call_1"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace moat::agent
