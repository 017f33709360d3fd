#pragma once
// The built-in agent loop, host side: for one turn it builds the system prompt (the agent's prompt
// plus /workspace/MEMORY.md from its sandbox), loads the chat's history from the store (summarising
// old turns when it outgrows the context budget), calls the model, runs the tools it asks for inside
// the agent's sandbox, and repeats until the model ends the turn or a limit is hit. Every tool call
// and result is an audit event; token usage is accounted per agent (`moat agent usage`).
// Command agents run their command in the sandbox instead of the loop.
//
// Store tables (migration 5): chat_history, chat_summaries, agent_usage.
#include <functional>
#include <memory>

#include "agent/agent_spec.h"
#include "agent/providers/provider.h"
#include "agent/workbench.h"
#include "audit/audit_log.h"
#include "router/turn.h"
#include "store/database.h"

namespace moat::agent {

struct RuntimeHooks {
  // The agent's workbench (its sandbox), created on first use.
  std::function<Result<std::shared_ptr<Workbench>>(const AgentSpec&)> workbench;
  // A provider for the agent's model settings (the daemon resolves credentials from the vault).
  std::function<Result<std::unique_ptr<Provider>>(const AgentSpec&)> provider;
  // Base environment for a command agent's process (gateway proxy, route base URLs, placeholders
  // come from the sandbox itself; this adds e.g. MOAT_AGENT).
  std::vector<std::string> command_env;
  // The bytes of a staged attachment (store/attachment_stage.h), which the turn copies into the
  // sandbox; empty: attachments are listed but not copied.
  std::function<Result<std::string>(std::string_view staged)> read_attachment;
};

struct AgentUsage {
  std::string agent;
  uint64_t turns = 0, model_calls = 0, input_tokens = 0, output_tokens = 0, tool_calls = 0;
  double cost_usd = 0;  // from the price table for known models; 0 when unknown
};

class AgentRuntime {
 public:
  AgentRuntime(Database& db, AuditLog& audit, RuntimeHooks hooks);
  ~AgentRuntime();

  Result<router::TurnResult> run_turn(const AgentSpec& spec, const router::Turn& turn, const router::LiveSink& live);
  Result<std::vector<AgentUsage>> usage(std::string_view agent_or_empty) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::agent
