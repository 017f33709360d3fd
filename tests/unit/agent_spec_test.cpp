// AgentSpec JSON: a round trip keeps every field; validation names the field it refuses.
#include <gtest/gtest.h>

#include "agent/agent_spec.h"
#include "agent/sandbox_workbench.h"

using namespace moat;
using namespace moat::agent;

TEST(AgentSpec, RoundTripKeepsEveryField) {
  AgentSpec a;
  a.name = "helper-1";
  a.source = "config";
  a.image = "debian";
  a.runtime = "runsc";
  a.disk_bytes = 1ull << 30;
  a.memory_bytes = 512ull << 20;
  a.pids = 200;
  a.cpus = 1.5;
  a.io.read_bps = 64ull << 20;
  a.io.write_iops = 300;
  a.model = {"openai", "gpt-4o", "http://127.0.0.1:11434/v1", 1000};
  a.system_prompt = "be brief";
  a.limits.max_model_calls = 7;
  a.limits.max_wall = std::chrono::seconds(30);
  a.limits.max_tokens = 5000;
  a.limits.context_budget_tokens = 2000;
  a.command = {"/bin/sh", "-c", "cat"};
  a.channels = {"telegram"};
  a.chats = {"telegram:*"};
  a.senders = {"*"};
  a.trigger = "^@?helper\\b";
  a.unknown_senders = "hold";
  a.may_message = {"web:ops-*"};
  a.created_ms = 1;
  a.updated_ms = 2;
  auto back = agent_spec_from_json(agent_spec_to_json(a));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(agent_spec_to_json(*back), agent_spec_to_json(a));
  EXPECT_EQ(back->limits.max_wall, std::chrono::seconds(30));
  EXPECT_EQ(*back->cpus, 1.5);
  EXPECT_EQ(back->io, a.io);
  EXPECT_EQ(sandbox_request_for(*back).io, a.io) << "the agent's sandbox is made with its I/O limits";
}

TEST(AgentSpec, DefaultsFillWhatIsMissing) {
  auto a = agent_spec_from_json(Json{{"name", "a"}});
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->model.provider, "anthropic");
  EXPECT_EQ(a->limits.max_model_calls, 20);
  auto sized = agent_spec_from_json(Json{{"name", "a"}, {"disk_bytes", "2GiB"}});
  ASSERT_TRUE(sized) << sized.error().message;
  EXPECT_EQ(*sized->disk_bytes, 2ull << 30);
}

TEST(AgentSpec, ErrorsNameTheField) {
  auto expect_field = [](Json j, std::string_view field) {
    auto r = agent_spec_from_json(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(r.error().message.find(field), std::string::npos) << r.error().message;
  };
  expect_field(Json{{"name", "Bad"}}, "agent name");
  expect_field(Json{{"name", "a"}, {"model", {{"provider", "gemini"}}}}, "model.provider");
  expect_field(Json{{"name", "a"}, {"model", {{"max_tokens", -1}}}}, "model.max_tokens");
  expect_field(Json{{"name", "a"}, {"limits", {{"max_model_calls", 0}}}}, "limits.max_model_calls");
  expect_field(Json{{"name", "a"}, {"trigger", "(unclosed"}}, "trigger");
  expect_field(Json{{"name", "a"}, {"unknown_senders", "ignore"}}, "unknown_senders");
  expect_field(Json{{"name", "a"}, {"may_message", {"nochannel"}}}, "may_message");
  expect_field(Json{{"name", "a"}, {"chats", {""}}}, "chats");
  expect_field(Json{{"name", "a"}, {"command", "not a list"}}, "command");
  expect_field(Json{{"name", "a"}, {"disk_bytes", "lots"}}, "disk_bytes");
  expect_field(Json{{"name", "a"}, {"source", "file"}}, "source");
  expect_field(Json{{"name", "a"}, {"model", {{"base_url", "ftp://x"}}}}, "model.base_url");
  expect_field(Json{{"name", "a"}, {"sendrs", {"telegram:1"}}}, "unknown key 'sendrs'");
  expect_field(Json{{"name", "a"}, {"model", {{"modle", "x"}}}}, "unknown key 'model.modle'");
  expect_field(Json{{"name", "a"}, {"limits", {{"max_turns", 3}}}}, "unknown key 'limits.max_turns'");
}

TEST(AgentSpec, SandboxLimitsAreCheckedAgainstTheLimitsTable) {
  auto refused = [](Json j) -> std::string {
    j["name"] = "a";
    auto r = agent_spec_from_json(j);
    EXPECT_FALSE(r) << j.dump();
    return r ? "" : r.error().message;
  };
  EXPECT_EQ(refused(Json{{"cpus", -1}}), "cpus: -1 is out of range; allowed 0.01 to 1024 CPUs");
  EXPECT_EQ(refused(Json{{"cpus", 0}}), "cpus: 0 is out of range; allowed 0.01 to 1024 CPUs");
  EXPECT_EQ(refused(Json{{"pids", 1}}), "pids: 1 is out of range; allowed 16 to 4194304 processes and threads");
  EXPECT_EQ(refused(Json{{"pids", 0}}), "pids: 0 is out of range; allowed 16 to 4194304 processes and threads");
  EXPECT_EQ(refused(Json{{"memory_bytes", "1MiB"}}), "memory_bytes: 1MiB is out of range; allowed 32MiB to 4TiB");
  EXPECT_EQ(refused(Json{{"disk_bytes", 0}}), "disk_bytes: 0B is out of range; allowed 64MiB to 8TiB");
  EXPECT_EQ(refused(Json{{"io_read_bps", 1000}}),
            "io_read_bps: 1000B is out of range; allowed 1MiB to 1TiB per second");
  auto ok = agent_spec_from_json(Json{{"name", "a"}, {"pids", 16}, {"cpus", 0.25}, {"memory_bytes", "32MiB"}});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(*ok->pids, 16u);
}

TEST(AgentSpec, NameRules) {
  EXPECT_TRUE(validate_agent_name("a"));
  EXPECT_TRUE(validate_agent_name("0-finance-bot"));
  EXPECT_TRUE(validate_agent_name(std::string(63, 'a')));
  EXPECT_FALSE(validate_agent_name(""));
  EXPECT_FALSE(validate_agent_name(std::string(64, 'a')));
  EXPECT_FALSE(validate_agent_name("-a"));
  EXPECT_FALSE(validate_agent_name("a_b"));
  EXPECT_FALSE(validate_agent_name("a.b"));
  EXPECT_FALSE(validate_agent_name("A"));
  EXPECT_FALSE(validate_agent_name("a/b"));
}
