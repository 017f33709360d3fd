// Agents end to end through a real moatd: the terminal channel (`moat chat`), the agent loop calling
// a provider double over real HTTP, tools running in the agent's real sandbox, memory and history
// surviving a restart, a command agent reaching its model through the egress gateway with a
// placeholder key, senders held until the owner approves a pairing code (webhook channel), and the
// web chat's conversations and the webhook's polled replies surviving a moatd crash.
#include <gtest/gtest.h>

#include <thread>

#include "base/json.h"
#include "base/subprocess.h"
#include "support/moat_env.h"
#include "support/provider_double.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"

namespace moat::testing {
namespace {

using namespace std::chrono_literals;

// The model: runs a command when asked to "run", remembers when asked to "remember", and otherwise
// echoes; after a tool result it reports the result.
ScriptedReply scripted_assistant(const ProviderRequest& r) {
  auto results = r.last_tool_results();
  if (!results.empty()) {
    std::string content = results[0]["content"].is_string() ? results[0]["content"].get<std::string>() : results[0]["content"].dump();
    return ScriptedReply::say("tool said: " + content);
  }
  std::string text = r.last_user_text();
  if (text.find("please run") != std::string::npos)
    return ScriptedReply::call("bash", {{"command", "echo hello-from-$(cat /proc/sys/kernel/hostname); id -u"}});
  if (auto at = text.find("remember that "); at != std::string::npos)
    return ScriptedReply::call("remember", {{"note", text.substr(at + 14)}});
  if (text.find("what do you know") != std::string::npos) return ScriptedReply::say("my prompt says: " + r.system());
  return ScriptedReply::say("echo: " + text);
}

Json audit_events(const MoatEnv& env, std::string_view kind) {
  Json out = Json::array();
  std::string all = env.ok({"audit", "export"});
  size_t pos = 0;
  while (pos < all.size()) {
    auto end = all.find('\n', pos);
    auto j = Json::parse(all.substr(pos, end - pos), nullptr, false);
    if (!j.is_discarded() && j.value("kind", std::string()) == kind) out.push_back(j);
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return out;
}

// Done-when 1 of issue 4, as a person does it: `make up` (scripts/up) with a provider key in the
// environment, then `moat chat assistant`. The provider is the double, reached through
// ANTHROPIC_BASE_URL as the real SDKs do; the image `make up` would build is the busybox one here.
TEST(AgentChat, MakeUpsAssistantAnswersRunsBashInItsSandboxAndRemembersAcrossRestart) {
  MOAT_REQUIRE_ROOT();
  const std::string key = "sk-ant-chat-" + std::to_string(::getpid());
  ProviderDouble model({.api_key = key});
  model.set_reply_function(scripted_assistant);
  MoatEnv env;
  env.ok({"image", "import", "default", busybox_tarball().string()});  // so up does not build Debian
  std::vector<std::string> up_cmd{"bash", std::string(MOAT_SOURCE_DIR) + "/scripts/up", MOAT_BUILD_DIR,
                                  env.state_dir().string()};
  // First with no provider in the environment: the assistant is made, and up says what is missing.
  // (OLLAMA_HOST: a port nothing listens on, so a machine running Ollama gives the same answer.)
  auto bare = run_process(up_cmd, {.env_extra = {{"ANTHROPIC_API_KEY", ""}, {"OPENAI_API_KEY", ""},
                                                 {"OLLAMA_HOST", "127.0.0.1:1"}}});
  ASSERT_TRUE(bare && bare->ok()) << (bare ? bare->out + bare->err : bare.error().message);
  EXPECT_NE(bare->out.find("no model provider found"), std::string::npos) << bare->out;
  EXPECT_NE(bare->out.find(fmt::format("web chat        : {}/\n", env.web_url())), std::string::npos) << bare->out;
  // Then again with a key: the same assistant now thinks with it, and the image is not built again.
  auto up = run_process(up_cmd, {.env_extra = {{"ANTHROPIC_API_KEY", key}, {"ANTHROPIC_BASE_URL", model.anthropic_base_url()}}});
  ASSERT_TRUE(up && up->ok()) << (up ? up->out + up->err : up.error().message);
  EXPECT_NE(up->out.find(fmt::format("assistant, thinking with anthropic (claude-sonnet-4-5) at {}", model.anthropic_base_url())),
            std::string::npos)
      << up->out;
  for (const auto& run : {bare->out, up->out})
    EXPECT_EQ(run.find("building the default image"), std::string::npos) << "the imported default image was built again:\n" << run;
  auto secrets = env.ok({"secret", "ls"});
  EXPECT_NE(secrets.find("anthropic-api-key"), std::string::npos) << secrets;
  EXPECT_EQ(secrets.find(key), std::string::npos) << "secret ls shows the value";

  EXPECT_EQ(env.ok({"chat", "assistant", "-m", "hello there"}), "echo: owner: hello there\n");

  // A command, run by the bash tool in the agent's own sandbox (created on first use).
  std::string ran = env.ok({"chat", "assistant", "-m", "please run it"});
  EXPECT_NE(ran.find("tool said: "), std::string::npos) << ran;
  EXPECT_NE(ran.find("hello-from-"), std::string::npos) << ran;
  EXPECT_NE(ran.find("\n0"), std::string::npos) << ran;  // `id -u`: root inside (mapped on the host)
  auto sandbox = Json::parse(env.ok({"--json", "sandbox", "inspect", "assistant"}));
  EXPECT_EQ(sandbox["state"], "running");
  auto calls = audit_events(env, "tool.call");
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back()["subject"], "bash");

  // Memory: the remember tool writes MEMORY.md inside the sandbox...
  env.ok({"chat", "assistant", "-m", "remember that the build server is named kestrel"});
  EXPECT_NE(env.ok({"exec", "assistant", "--", "cat", "/workspace/MEMORY.md"}).find("the build server is named kestrel"),
            std::string::npos);

  // ...and after a restart of moatd both the memory file and the history are still there.
  env.stop_daemon();
  env.start_daemon();
  model.clear_requests();
  std::string known = env.ok({"chat", "assistant", "-m", "what do you know?"});
  EXPECT_NE(known.find("the build server is named kestrel"), std::string::npos) << known;
  auto reqs = model.requests();
  ASSERT_FALSE(reqs.empty());
  std::string history = reqs.back().body["messages"].dump();
  EXPECT_NE(history.find("hello there"), std::string::npos) << history;
  EXPECT_NE(history.find("please run it"), std::string::npos) << history;
  for (auto& r : reqs) EXPECT_EQ(r.api_key(), key);  // moatd used the vault's key on the host side

  // The key never entered the sandbox: not in its environment, not in its files.
  EXPECT_EQ(env.moat({"exec", "assistant", "--", "sh", "-c", "env; cat /workspace/* 2>/dev/null"}).out.find(key),
            std::string::npos);
  auto usage = Json::parse(env.ok({"--json", "agent", "usage", "assistant"}));
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_GE(usage[0]["turns"].get<int>(), 4);
  EXPECT_GE(usage[0]["tool_calls"].get<int>(), 2);
  EXPECT_GT(usage[0]["input_tokens"].get<int>(), 0);

  // Editing the agent's limits leaves its sandbox (a persistent machine) as it is and says so; once
  // the owner removes it, the next turn makes one with the new limits, not those of the first turn.
  auto limit_of = [&] {
    return Json::parse(env.ok({"--json", "sandbox", "inspect", "assistant"}))["limits"]["memory_bytes"].get<int64_t>();
  };
  int64_t old_limit = limit_of();
  ASSERT_NE(old_limit, 200ll << 20);
  std::string edited = env.ok({"agent", "edit", "assistant", "--memory", "200MiB"});
  EXPECT_NE(edited.find("note: agent 'assistant' already has a sandbox"), std::string::npos) << edited;
  EXPECT_NE(edited.find("moat sandbox rm -f assistant"), std::string::npos) << edited;
  EXPECT_EQ(limit_of(), old_limit);
  auto same = Json::parse(env.ok({"--json", "agent", "edit", "assistant", "--system-prompt", "still you"}));
  EXPECT_FALSE(same.contains("sandbox_note")) << "a prompt edit does not touch the sandbox: " << same.dump();
  env.ok({"sandbox", "rm", "-f", "assistant"});
  EXPECT_NE(env.ok({"chat", "assistant", "-m", "please run it"}).find("hello-from-"), std::string::npos);
  EXPECT_EQ(limit_of(), 200ll << 20);
}

TEST(AgentChat, WithoutAProviderTheAnswerSaysHowToConfigureOne) {
  MOAT_REQUIRE_ROOT();
  MoatEnv env;
  env.ok({"agent", "create", "lonely", "--provider", "none"});
  std::string out = env.ok({"chat", "lonely", "-m", "hi"});
  EXPECT_NE(out.find("No model provider is configured for agent 'lonely'"), std::string::npos) << out;
  EXPECT_NE(out.find("moat secret set"), std::string::npos) << out;
  // Bad input gets one clear error and a non-zero exit.
  auto unknown = env.moat({"chat", "nobody", "-m", "hi"});
  EXPECT_NE(unknown.code, 0);
  EXPECT_NE(unknown.err.find("no agent named 'nobody'"), std::string::npos) << unknown.err;
  auto bad = env.moat({"agent", "create", "Bad_Name"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("Bad_Name"), std::string::npos) << bad.err;
  auto dup = env.moat({"agent", "create", "lonely"});
  EXPECT_NE(dup.code, 0);
  EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;
}

// The command agent's script: the conversation on stdin, one call to the model through the gateway's
// base-URL route with the placeholder key, the model's text on stdout.
// (busybox wget ignores NO_PROXY, so -Y off: the base URL is the gateway's own listener, not a proxy.)
constexpr const char* kCommandAgent = R"SH(#!/bin/sh
input=$(cat | tr -d '"\\' | tr '\n' ' ')
body="{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"$input\"}]}"
wget -q -Y off -O - --header "x-api-key: $ANTHROPIC_API_KEY" --header "anthropic-version: 2023-06-01" \
  --header "content-type: application/json" --post-data "$body" "$ANTHROPIC_BASE_URL/v1/messages" |
  sed -n 's/.*"text":"\([^"]*\)".*/\1/p'
)SH";

TEST(AgentChat, CommandAgentReachesItsModelThroughTheGatewayWithAPlaceholder) {
  MOAT_REQUIRE_ROOT();
  TempDir pki("moat-agent-pki");
  TestCa ca(pki.path());
  auto cert = ca.issue("model", {"localhost"});
  const std::string key = "sk-ant-cmd-" + std::to_string(::getpid());
  ProviderDouble model({.api_key = key, .tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("scripted says hi"); });
  MoatEnv env(fmt::format("[egress]\nupstream_ca_file = \"{}\"\n[egress.routes.anthropic]\nupstream = \"https://localhost:{}\"\n"
                          "env = \"ANTHROPIC_BASE_URL\"\n[agents.scripted]\ncommand = [\"/bin/sh\", \"/workspace/agent.sh\"]\n"
                          "[agents.scripted.egress]\nallow = [\"localhost:{}\", \"127.0.0.1:{}\"]\n",
                          ca.ca_cert_path().string(), model.port(), model.port(), model.port()));
  env.ok({"secret", "set", "ANTHROPIC_API_KEY", "--host", fmt::format("localhost:{}", model.port()), "--agent", "scripted",
          "--header", "x-api-key: {}", "--env", "ANTHROPIC_API_KEY"},
         key);
  env.ok({"sandbox", "create", "scripted"});
  env.ok({"exec", "-i", "scripted", "--", "sh", "-c", "cat > /workspace/agent.sh"}, kCommandAgent);

  std::string reply = env.ok({"chat", "scripted", "-m", "say hi"});
  EXPECT_EQ(reply, "scripted says hi\n");
  auto reqs = model.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].api_key(), key);  // the gateway swapped the placeholder for the real key
  EXPECT_NE(reqs[0].last_user_text().find("say hi"), std::string::npos) << reqs[0].body.dump();
  std::string inside = env.ok({"exec", "scripted", "--", "sh", "-c", "echo $ANTHROPIC_API_KEY"});
  EXPECT_EQ(inside, "moat-placeholder-ANTHROPIC_API_KEY\n");
}

// A tiny HTTP/1.1 client for the webhook channel (curl from the host, like any integration would).
Json post_json(const std::string& url, const std::string& token, const Json& body) {
  auto r = run_process({"curl", "-sS", "-m", "20", "-H", "Authorization: Bearer " + token, "-H",
                        "Content-Type: application/json", "--data-binary", body.dump(), url});
  if (!r || r->exit_code != 0) return Json{{"curl_failed", true}};
  auto j = Json::parse(r->out, nullptr, false);
  return j.is_discarded() ? Json{{"raw", r->out}} : j;
}

Json get_json(const std::string& url, const std::string& token) {
  auto r = run_process({"curl", "-sS", "-m", "20", "-H", "Authorization: Bearer " + token, url});
  if (!r || r->exit_code != 0) return Json{{"curl_failed", true}};
  auto j = Json::parse(r->out, nullptr, false);
  return j.is_discarded() ? Json{{"raw", r->out}} : j;
}

// Polls the webhook's replies of a chat until one contains `needle`.
std::string wait_reply(const std::string& url, const std::string& token, const std::string& chat, const std::string& needle) {
  for (int i = 0; i < 300; ++i) {
    auto j = get_json(fmt::format("{}/replies?chat={}", url, chat), token);
    for (auto& r : j.value("replies", Json::array()))
      if (r.value("text", std::string()).find(needle) != std::string::npos) return r["text"].get<std::string>();
    std::this_thread::sleep_for(100ms);
  }
  return {};
}

TEST(AgentChat, UnknownSendersAreHeldOrDroppedAndAPairingCodeApprovesOne) {
  MOAT_REQUIRE_ROOT();
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function(scripted_assistant);
  std::string m = fmt::format("model = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", base_url = \"{}\" }}\n",
                              model.anthropic_base_url());
  MoatEnv env("[agents.guarded]\n" + m + "senders = [\"webhook:alice\"]\nunknown_senders = \"hold\"\n"
              "[agents.strict]\n" + m + "senders = [\"webhook:alice\"]\n");
  env.ok({"secret", "set", "model-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "k");
  auto hook = Json::parse(env.ok({"--json", "agent", "webhook", "guarded"}));
  std::string url = hook["url"], token = hook["token"];

  // Alice is known: answered.
  auto a = post_json(url, token, {{"chat", "c1"}, {"sender", "alice"}, {"message_id", "m1"}, {"text", "hi from alice"}});
  EXPECT_EQ(a["outcome"], "queued") << a.dump();
  EXPECT_EQ(wait_reply(url, token, "c1", "alice"), "echo: alice: hi from alice");

  // Bob is not: held, with a pairing code, and told so.
  auto b = post_json(url, token, {{"chat", "c2"}, {"sender", "bob"}, {"message_id", "m2"}, {"text", "hi from bob"}});
  ASSERT_EQ(b["outcome"], "held") << b.dump();
  std::string code = b["pairing_code"];
  ASSERT_FALSE(code.empty());
  EXPECT_NE(wait_reply(url, token, "c2", code), "");
  auto held = Json::parse(env.ok({"--json", "messages", "--state", "held"}));
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0]["sender"], "bob");
  // A wrong code approves nothing.
  EXPECT_NE(env.moat({"approve", "ZZZZZZZZ"}).code, 0);
  env.ok({"approve", code});
  EXPECT_EQ(wait_reply(url, token, "c2", "bob"), "echo: bob: hi from bob");
  // Approved for good: bob's next message goes straight through.
  auto b2 = post_json(url, token, {{"chat", "c2"}, {"sender", "bob"}, {"message_id", "m3"}, {"text", "again"}});
  EXPECT_EQ(b2["outcome"], "queued") << b2.dump();

  // The strict agent drops unknown senders (with the reason), and nobody gets a code.
  auto strict = Json::parse(env.ok({"--json", "agent", "webhook", "strict"}));
  auto d = post_json(strict["url"], strict["token"], {{"chat", "c3"}, {"sender", "mallory"}, {"message_id", "m4"}, {"text", "hi"}});
  EXPECT_EQ(d["outcome"], "dropped") << d.dump();
  EXPECT_FALSE(d.contains("pairing_code"));
  // A wrong token is refused.
  auto bad = post_json(url, "not-the-token", {{"chat", "c1"}, {"sender", "alice"}, {"message_id", "m5"}, {"text", "x"}});
  EXPECT_FALSE(bad.contains("outcome")) << bad.dump();
}

// The web chat as the page speaks it, through curl with a cookie jar (the session is the cookie).
struct WebChatClient {
  std::string base;
  std::filesystem::path jar;

  Json call(const std::vector<std::string>& extra) const {
    std::vector<std::string> argv{"curl", "-sS", "-m", "20", "-b", jar.string(), "-c", jar.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = run_process(argv);
    if (!r || r->exit_code != 0) return Json{{"curl_failed", true}};
    auto j = Json::parse(r->out, nullptr, false);
    return j.is_discarded() ? Json{{"raw", r->out}} : j;
  }
  void open_page() const { call({"-o", "/dev/null", base + "/"}); }
  Json post(const std::string& agent, const std::string& text, const std::string& client_id) const {
    Json body{{"agent", agent}, {"text", text}, {"client_id", client_id}};
    return call({"-H", "X-Moat: 1", "-H", "Content-Type: application/json", "--data-binary", body.dump(),
                 base + "/api/messages"});
  }
  Json history() const { return call({base + "/api/history"}).value("messages", Json::array()); }
  // The history once it holds an agent message containing `needle` (or as it is after 30 s).
  Json history_with(std::string_view needle) const {
    Json h;
    for (int i = 0; i < 300; ++i, std::this_thread::sleep_for(100ms)) {
      h = history();
      for (const auto& m : h)
        if (m.value("role", "") == "agent" && m.value("text", "").find(needle) != std::string::npos) return h;
    }
    return h;
  }
};

// A reply the channel already showed, and the question before it, are still there after moatd is
// killed: the web chat opens with the conversation, and a webhook caller that polls only now still
// gets its reply, under the key it would have had.
TEST(AgentChat, WebChatAndPolledWebhookRepliesSurviveACrash) {
  MOAT_REQUIRE_ROOT();
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function(scripted_assistant);
  MoatEnv env(fmt::format("[agents.keeper]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                          "base_url = \"{}\" }}\n",
                          model.anthropic_base_url()));
  env.ok({"secret", "set", "model-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "k");
  TempDir tmp("moat-webchat-jar");
  WebChatClient web{env.web_url(), tmp / "cookies"};
  ASSERT_FALSE(web.base.empty());
  web.open_page();
  EXPECT_EQ(web.post("keeper", "hello from the browser", "c1")["outcome"], "queued");
  Json before = web.history_with("echo: ");
  ASSERT_EQ(before.size(), 2u) << before.dump();
  EXPECT_EQ(before[0]["role"], "user");
  EXPECT_EQ(before[0]["key"], "u:c1");
  EXPECT_EQ(before[1]["role"], "agent");

  auto hook = Json::parse(env.ok({"--json", "agent", "webhook", "keeper"}));
  std::string url = hook["url"], token = hook["token"];
  auto a = post_json(url, token, {{"chat", "t1"}, {"sender", "ci"}, {"message_id", "e1"}, {"text", "hello from ci"}});
  EXPECT_EQ(a["outcome"], "queued") << a.dump();
  ASSERT_EQ(wait_reply(url, token, "t1", "hello from ci"), "echo: ci: hello from ci");
  Json polled = get_json(url + "/replies?chat=t1", token)["replies"];

  env.kill_daemon(SIGKILL);
  env.start_daemon();

  web.base = env.web_url();
  // The kill may land after the reply reached the channel but before its delivery was recorded; then
  // it comes back by redelivery (same key, shown once) a moment after the start.
  Json after = web.history_with("echo: ");
  EXPECT_EQ(after, before) << "the web chat's conversation after the crash: " << after.dump();
  // The page resubmitting its message (same client id) is a duplicate, shown once.
  EXPECT_EQ(web.post("keeper", "hello from the browser", "c1")["outcome"], "duplicate");
  EXPECT_EQ(web.history().size(), 2u);

  hook = Json::parse(env.ok({"--json", "agent", "webhook", "keeper"}));
  url = hook["url"];
  ASSERT_FALSE(wait_reply(url, token, "t1", "hello from ci").empty());
  Json replies = get_json(url + "/replies?chat=t1", token)["replies"];
  EXPECT_EQ(replies, polled) << "the webhook's replies after the crash: " << replies.dump();
  // Polling after the key the caller last saw gives nothing new, not the same reply again.
  ASSERT_FALSE(polled.empty());
  EXPECT_EQ(get_json(fmt::format("{}/replies?chat=t1&after={}", url, polled.back()["key"].get<std::string>()), token)
                .value("replies", Json{{"missing", true}}),
            Json::array());
}

}  // namespace
}  // namespace moat::testing
