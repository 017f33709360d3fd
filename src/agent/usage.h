#pragma once
// Per-agent totals of what turns cost (agent_usage), and the small price table behind cost_usd.
#include "agent/agent_runtime.h"

namespace moat::agent {

struct TurnUsage {
  uint64_t model_calls = 0, input_tokens = 0, output_tokens = 0, tool_calls = 0;
};

// US dollars per million tokens (input, output) for a few known models, matched by the longest
// known prefix (so dated variants such as "claude-sonnet-4-5-20250929" count); unknown = 0, 0.
std::pair<double, double> price_per_million(std::string_view model);
// Cost in millionths of a dollar (what the store keeps, so totals add up exactly).
int64_t cost_micros(std::string_view model, uint64_t input_tokens, uint64_t output_tokens);

// Adds one turn to the agent's totals.
Status record_turn_usage(Database& db, const std::string& agent, const std::string& model, const TurnUsage& u);
// Totals of one agent, or of every agent when `agent` is empty (by name).
Result<std::vector<AgentUsage>> read_usage(Database& db, std::string_view agent);

}  // namespace moat::agent
