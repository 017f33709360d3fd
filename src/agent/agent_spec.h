#pragma once
// An agent: who it is, where it runs, which model thinks for it, and whom it answers. Declared in
// moat.toml ([agents.NAME]) or created at run time (`moat agent create`); stored in the `agents`
// table either way (a declared agent's row follows the file at each start).
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "config/limits.h"

namespace moat::agent {

struct ModelSettings {
  std::string provider = "anthropic";  // "anthropic" | "openai" | "none"
  std::string model = "claude-sonnet-4-5";
  std::string base_url;                // empty = the provider's default
  int max_tokens = 4096;
};

struct TurnLimits {
  int max_model_calls = 20;
  std::chrono::milliseconds max_wall{10 * 60 * 1000};
  uint64_t max_tokens = 200000;  // input + output, per turn
  uint64_t context_budget_tokens = 100000;  // history is summarised beyond this (estimated: bytes/4)
};

struct AgentSpec {
  std::string name;
  std::string source = "api";  // "config" (declared in moat.toml) | "api" (moat agent create)
  // Sandbox: the agent's own, named after it, created on first use.
  std::string image;    // empty = [sandbox] image
  std::string runtime;  // empty = [sandbox] runtime
  std::optional<uint64_t> disk_bytes, memory_bytes, pids;
  std::optional<double> cpus;
  IoThrottle<std::optional<uint64_t>> io;  // io_read_bps, io_write_bps, io_read_iops, io_write_iops
  // Mind.
  ModelSettings model;
  std::string system_prompt;
  TurnLimits limits;
  // A command agent: run this inside the sandbox per turn (conversation on stdin); its stdout is
  // the reply. Empty = the built-in loop with `model`.
  std::vector<std::string> command;
  // Whom it answers (see router/route_rule.h).
  std::vector<std::string> channels, chats, senders;
  std::string trigger;
  std::string unknown_senders = "drop";  // "drop" | "hold"
  // May send_message to chats other than the current one ("channel:chat" globs).
  std::vector<std::string> may_message;
  int64_t created_ms = 0, updated_ms = 0;
};

Json agent_spec_to_json(const AgentSpec& a);
// Validates names, enums, globs and the trigger regex; errors name the field.
Result<AgentSpec> agent_spec_from_json(const Json& j);
Status validate_agent_name(std::string_view name);

}  // namespace moat::agent
