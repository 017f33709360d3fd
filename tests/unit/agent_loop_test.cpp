// The agent loop with a scripted model and an in-memory workbench: history, memory, compaction,
// limits, usage, audit, send_message rules, edit_file, the provider-less reply. The same loop
// against a real sandbox is tests/integration/agent_runtime_test.cpp.
#include <gtest/gtest.h>

#include "agent/prompt.h"
#include "agent/usage.h"
#include "support/temp_dir.h"
#include "unit/agent_test_doubles.h"

using namespace moat;
using namespace moat::agent;
using namespace moat::agent::testing;

namespace {

class AgentLoop : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = Database::open(dir_.path() / "moat.db");
    ASSERT_TRUE(db) << db.error().message;
    db_.emplace(std::move(*db));
    audit_ = std::make_unique<AuditLog>(*db_);
    spec_.name = "helper";
    spec_.model.model = "claude-sonnet-4-5";
    make_runtime();
  }

  void make_runtime() {
    RuntimeHooks h;
    h.workbench = [this](const AgentSpec&) -> Result<std::shared_ptr<Workbench>> { return bench_; };
    h.provider = [this](const AgentSpec&) -> Result<std::unique_ptr<Provider>> {
      return std::make_unique<ScriptedProvider>(script_);
    };
    runtime_ = std::make_unique<AgentRuntime>(*db_, *audit_, std::move(h));
  }

  router::Turn turn(std::string text, std::string chat = "c1") {
    router::Turn t;
    t.agent = spec_.name;
    t.channel = "web";
    t.chat = chat;
    router::Envelope e;
    e.channel = "web";
    e.chat = chat;
    e.sender = "u1";
    e.sender_name = "Ada";
    e.text = std::move(text);
    t.envelopes.push_back(e);
    return t;
  }

  Result<router::TurnResult> run(std::string text, std::string chat = "c1") {
    return runtime_->run_turn(spec_, turn(std::move(text), std::move(chat)), [this](const std::string& kind, const Json& d) {
      live_.emplace_back(kind, d);
    });
  }

  moat::testing::TempDir dir_{"moat-agent-loop"};
  std::optional<Database> db_;
  std::unique_ptr<AuditLog> audit_;
  std::shared_ptr<MemoryWorkbench> bench_ = std::make_shared<MemoryWorkbench>();
  std::shared_ptr<Script> script_ = std::make_shared<Script>();
  std::unique_ptr<AgentRuntime> runtime_;
  AgentSpec spec_;
  std::vector<std::pair<std::string, Json>> live_;
};

}  // namespace

TEST_F(AgentLoop, ProviderNoneRepliesHowToConfigureOne) {
  spec_.model.provider = "none";
  auto r = run("hi");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->replies.size(), 1u);
  EXPECT_EQ(r->replies[0], no_provider_reply(spec_));
  EXPECT_NE(r->replies[0].find("moat secret set anthropic-api-key"), std::string::npos);
  EXPECT_NE(r->replies[0].find("'helper'"), std::string::npos);
  EXPECT_EQ(script_->count(), 0u);
}

TEST_F(AgentLoop, ReplyStreamsAndTheUserMessageNamesTheSender) {
  script_->push(text_reply("hello Ada"));
  auto r = run("hi there");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->replies, std::vector<std::string>{"hello Ada"});
  auto req = script_->request(0);
  EXPECT_EQ(req.model, "claude-sonnet-4-5");
  ASSERT_EQ(req.messages.size(), 1u);
  EXPECT_EQ(req.messages[0].content[0].text, "Ada: hi there");
  EXPECT_FALSE(req.tools.empty());
  EXPECT_NE(req.system.find("# Memory (/workspace/MEMORY.md)"), std::string::npos);
  ASSERT_FALSE(live_.empty());
  EXPECT_EQ(live_[0].first, "text");
  EXPECT_EQ(live_[0].second["text"], "hello Ada");
}

TEST_F(AgentLoop, HistoryPersistsAcrossRuntimeRecreation) {
  script_->push(text_reply("first answer"));
  ASSERT_TRUE(run("first question"));
  make_runtime();
  script_->push(text_reply("second answer"));
  ASSERT_TRUE(run("second question"));
  auto req = script_->request(1);
  ASSERT_EQ(req.messages.size(), 3u);
  EXPECT_EQ(req.messages[0].content[0].text, "Ada: first question");
  EXPECT_EQ(req.messages[1].role, "assistant");
  EXPECT_EQ(req.messages[1].content[0].text, "first answer");
  EXPECT_EQ(req.messages[2].content[0].text, "Ada: second question");
  // Another chat of the same agent starts empty.
  script_->push(text_reply("other"));
  ASSERT_TRUE(run("elsewhere", "c2"));
  EXPECT_EQ(script_->request(2).messages.size(), 1u);
}

TEST_F(AgentLoop, RememberReachesTheNextTurnsSystemPrompt) {
  script_->push(tool_reply({tool_use("t1", "remember", Json{{"note", "Ada likes tea"}})}));
  script_->push(text_reply("noted"));
  ASSERT_TRUE(run("remember that I like tea"));
  ASSERT_TRUE(bench_->files.contains(kMemoryFile));
  EXPECT_NE(bench_->files[kMemoryFile].find(": Ada likes tea\n"), std::string::npos);
  EXPECT_TRUE(bench_->files[kMemoryFile].starts_with("- 20"));
  script_->push(text_reply("you like tea"));
  ASSERT_TRUE(run("what do I like?"));
  auto sys = script_->request(2).system;
  EXPECT_NE(sys.find("# Memory (/workspace/MEMORY.md)\n- "), std::string::npos) << sys;
  EXPECT_NE(sys.find("Ada likes tea"), std::string::npos);
}

TEST_F(AgentLoop, MemoryInThePromptIsCappedAt16KB) {
  bench_->files[kMemoryFile] = std::string(40000, 'm');
  script_->push(text_reply("ok"));
  ASSERT_TRUE(run("hi"));
  auto sys = script_->request(0).system;
  EXPECT_LT(sys.size(), 17000u + default_system_prompt(spec_).size());
  EXPECT_NE(sys.find("memory truncated"), std::string::npos);
}

TEST_F(AgentLoop, MaxModelCallsEndsTheTurnWithANote) {
  spec_.limits.max_model_calls = 2;
  for (int i = 0; i < 5; ++i)
    script_->push(tool_reply({tool_use(fmt::format("t{}", i), "bash", Json{{"command", "true"}})}, "working"));
  auto r = run("loop forever");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(script_->count(), 2u);
  ASSERT_EQ(r->replies.size(), 1u);
  EXPECT_NE(r->replies[0].find("limit of 2 model calls"), std::string::npos) << r->replies[0];
  EXPECT_TRUE(r->replies[0].starts_with("working")) << r->replies[0];
  // The next turn's history is valid for a provider: tool results, the note, then the new message.
  script_->push(text_reply("done"));
  ASSERT_TRUE(run("go on"));
  auto req = script_->request(2);
  EXPECT_EQ(req.messages.front().role, "user");
  for (size_t i = 1; i < req.messages.size(); ++i) EXPECT_NE(req.messages[i].role, req.messages[i - 1].role);
}

TEST_F(AgentLoop, TokenLimitEndsTheTurnWithANote) {
  spec_.limits.max_tokens = 150;
  script_->push(tool_reply({tool_use("t1", "bash", Json{{"command", "true"}})}, "", 100, 60));
  auto r = run("go");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(script_->count(), 1u);
  EXPECT_NE(r->replies.at(0).find("limit of 150 tokens"), std::string::npos);
}

TEST_F(AgentLoop, WallClockLimitEndsTheTurnWithANote) {
  spec_.limits.max_wall = std::chrono::milliseconds(300);
  for (int i = 0; i < 50; ++i)
    script_->push(tool_reply({tool_use(fmt::format("t{}", i), "bash", Json{{"command", "sleep"}})}, "busy"));
  bench_->delay = std::chrono::milliseconds(100);
  auto t0 = std::chrono::steady_clock::now();
  auto r = run("take your time");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_NE(r->replies.at(0).find("time limit of 300 ms"), std::string::npos) << r->replies[0];
}

TEST_F(AgentLoop, UsageIsAccountedPerAgent) {
  script_->push(tool_reply({tool_use("t1", "bash", Json{{"command", "echo hi"}})}, "", 1000, 100));
  script_->push(text_reply("done", 2000, 200));
  ASSERT_TRUE(run("go"));
  script_->push(text_reply("again", 1000, 100));
  ASSERT_TRUE(run("again"));
  auto u = runtime_->usage("helper");
  ASSERT_TRUE(u) << u.error().message;
  ASSERT_EQ(u->size(), 1u);
  auto& x = (*u)[0];
  EXPECT_EQ(x.agent, "helper");
  EXPECT_EQ(x.turns, 2u);
  EXPECT_EQ(x.model_calls, 3u);
  EXPECT_EQ(x.input_tokens, 4000u);
  EXPECT_EQ(x.output_tokens, 400u);
  EXPECT_EQ(x.tool_calls, 1u);
  // claude-sonnet-4-5: $3 in / $15 out per million tokens.
  EXPECT_NEAR(x.cost_usd, 4000 * 3e-6 + 400 * 15e-6, 1e-9);
  EXPECT_TRUE(runtime_->usage("")->size() == 1);
  EXPECT_TRUE(runtime_->usage("nobody")->empty());
  EXPECT_EQ(price_per_million("gpt-4o-mini-2024").first, 0.15);
  EXPECT_EQ(price_per_million("gpt-4o").second, 10);
  EXPECT_EQ(price_per_million("mystery").first, 0);
}

TEST_F(AgentLoop, ToolCallsAndResultsAreAuditedAndShownLive) {
  bench_->next_result = CommandResult{3, 0, false, "out\n", "", false, 4, 0};
  script_->push(tool_reply({tool_use("t1", "bash", Json{{"command", "exit 3"}})}));
  script_->push(text_reply("it failed"));
  ASSERT_TRUE(run("try"));
  auto events = audit_->read_after(0, 100);
  ASSERT_TRUE(events);
  const AuditEvent *call = nullptr, *result = nullptr;
  for (auto& e : *events) {
    if (e.kind == "tool.call") call = &e;
    if (e.kind == "tool.result") result = &e;
  }
  ASSERT_TRUE(call && result);
  EXPECT_EQ(call->actor, "agent:helper");
  EXPECT_EQ(call->subject, "bash");
  EXPECT_EQ(call->data["input"]["command"], "exit 3");
  EXPECT_EQ(result->data["is_error"], true);
  EXPECT_GT(result->data["bytes"].get<int>(), 0);
  EXPECT_TRUE(result->data.contains("duration_ms"));
  // The model saw the output and exit code as the tool result.
  auto res = tool_results(script_->request(1));
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].id, "t1");
  EXPECT_TRUE(res[0].is_error);
  EXPECT_NE(res[0].text.find("out\n"), std::string::npos);
  EXPECT_NE(res[0].text.find("[exit code: 3]"), std::string::npos);
  bool saw_call = false, saw_result = false;
  for (auto& [kind, d] : live_) {
    saw_call |= kind == "tool_call" && d["name"] == "bash";
    saw_result |= kind == "tool_result" && d["is_error"] == true;
  }
  EXPECT_TRUE(saw_call && saw_result);
}

TEST_F(AgentLoop, BigToolInputsAreTruncatedInTheAuditLog) {
  script_->push(tool_reply({tool_use("t1", "write_file", Json{{"path", "big"}, {"content", std::string(10000, 'x')}})}));
  script_->push(text_reply("ok"));
  ASSERT_TRUE(run("write"));
  EXPECT_EQ(bench_->files["/workspace/big"].size(), 10000u);
  auto events = audit_->read_after(0, 100);
  for (auto& e : *events)
    if (e.kind == "tool.call") {
      ASSERT_TRUE(e.data["input"].is_string());
      EXPECT_LT(e.data["input"].get<std::string>().size(), 4200u);
    }
}

TEST_F(AgentLoop, SendMessageRules) {
  spec_.may_message = {"telegram:ops-*"};
  script_->push(tool_reply({tool_use("a", "send_message", Json{{"text", "on it"}}),
                            tool_use("b", "send_message", Json{{"text", "alert"}, {"to", "telegram:ops-1"}}),
                            tool_use("c", "send_message", Json{{"text", "psst"}, {"to", "telegram:finance"}})}));
  script_->push(text_reply("final"));
  auto r = run("go");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->replies, (std::vector<std::string>{"on it", "final"}));
  ASSERT_EQ(r->elsewhere.size(), 1u);
  EXPECT_EQ(r->elsewhere[0].channel, "telegram");
  EXPECT_EQ(r->elsewhere[0].chat, "ops-1");
  EXPECT_EQ(r->elsewhere[0].text, "alert");
  auto res = tool_results(script_->request(1));
  ASSERT_EQ(res.size(), 3u);
  EXPECT_FALSE(res[0].is_error);
  EXPECT_FALSE(res[1].is_error);
  EXPECT_TRUE(res[2].is_error);
  EXPECT_NE(res[2].text.find("may not message telegram:finance"), std::string::npos) << res[2].text;
}

TEST_F(AgentLoop, EditFileNeedsExactlyOneMatch) {
  bench_->files["/workspace/a.txt"] = "one two two\n";
  script_->push(tool_reply({tool_use("a", "edit_file", Json{{"path", "a.txt"}, {"old_string", "three"}, {"new_string", "x"}}),
                            tool_use("b", "edit_file", Json{{"path", "a.txt"}, {"old_string", "two"}, {"new_string", "x"}}),
                            tool_use("c", "edit_file", Json{{"path", "a.txt"}, {"old_string", "one"}, {"new_string", "1"}})}));
  script_->push(text_reply("ok"));
  ASSERT_TRUE(run("edit"));
  auto res = tool_results(script_->request(1));
  ASSERT_EQ(res.size(), 3u);
  EXPECT_TRUE(res[0].is_error);
  EXPECT_NE(res[0].text.find("not found"), std::string::npos) << res[0].text;
  EXPECT_TRUE(res[1].is_error);
  EXPECT_NE(res[1].text.find("occurs 2 times"), std::string::npos) << res[1].text;
  EXPECT_FALSE(res[2].is_error) << res[2].text;
  EXPECT_EQ(bench_->files["/workspace/a.txt"], "1 two two\n");
}

TEST_F(AgentLoop, UnknownToolIsAnErrorForTheModel) {
  script_->push(tool_reply({tool_use("a", "launch_rockets", Json::object())}));
  script_->push(text_reply("sorry"));
  ASSERT_TRUE(run("go"));
  auto res = tool_results(script_->request(1));
  ASSERT_EQ(res.size(), 1u);
  EXPECT_TRUE(res[0].is_error);
  EXPECT_NE(res[0].text.find("no tool named 'launch_rockets'"), std::string::npos);
}

TEST_F(AgentLoop, CompactionSummarisesTheOldestHalf) {
  spec_.limits.context_budget_tokens = 1000;
  for (int i = 0; i < 6; ++i) {
    script_->push(text_reply(fmt::format("answer {} {}", i, std::string(800, 'a'))));
    ASSERT_TRUE(run(fmt::format("question {} {}", i, std::string(800, 'q'))));
  }
  // By now the history outgrew the budget at least once: a summary request went out without tools.
  size_t summary_req = SIZE_MAX;
  for (size_t i = 0; i < script_->count() && summary_req == SIZE_MAX; ++i)
    if (script_->request(i).tools.empty()) summary_req = i;
  ASSERT_NE(summary_req, SIZE_MAX);
  auto sreq = script_->request(summary_req);
  EXPECT_NE(sreq.messages[0].content[0].text.find("question 0"), std::string::npos);
  EXPECT_EQ(sreq.messages[0].content[0].text.find("question 2"), std::string::npos);
  // The script answered the summary request with a scripted text; make the next one recognisable.
  script_->push(text_reply("SUMMARY: Ada asked six questions."));
  script_->push(text_reply("latest"));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(run(fmt::format("more {} {}", i, std::string(800, 'q'))));
  auto last = script_->request(script_->count() - 1);
  EXPECT_NE(last.system.find("# Earlier in this conversation (summary)"), std::string::npos);
  // The oldest messages are gone from what the model sees.
  for (auto& m : last.messages)
    for (auto& b : m.content) EXPECT_EQ(b.text.find("question 0"), std::string::npos);
  EXPECT_EQ(last.messages.front().role, "user");
  auto rows = db_->query_int64("SELECT count(*) FROM chat_summaries WHERE agent = 'helper'");
  EXPECT_EQ(*rows, 1);
}

TEST_F(AgentLoop, ProviderErrorsFailTheTurnAndSaveNothing) {
  script_->push(fail(ErrorKind::Unavailable, "api.anthropic.com unreachable"));
  auto r = run("hi");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::Unavailable);
  EXPECT_EQ(*db_->query_int64("SELECT count(*) FROM chat_history"), 0);
}

TEST_F(AgentLoop, CommandAgentGetsTheTranscriptAndEnvironment) {
  spec_.command = {"/bin/sh", "/workspace/agent.sh"};
  bench_->next_result = CommandResult{0, 0, false, "  the reply\n", "", false, 12, 0};
  auto r = run("hello");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->replies, std::vector<std::string>{"the reply"});
  ASSERT_EQ(bench_->runs.size(), 1u);
  EXPECT_EQ(bench_->runs[0], spec_.command);
  auto& env = bench_->envs[0];
  EXPECT_NE(std::find(env.begin(), env.end(), "MOAT_AGENT=helper"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "MOAT_CHANNEL=web"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "MOAT_CHAT=c1"), env.end());
  bench_->next_result = CommandResult{2, 0, false, "", "boom", false, 0, 4};
  auto bad = run("again");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("exited with 2: boom"), std::string::npos) << bad.error().message;
}
