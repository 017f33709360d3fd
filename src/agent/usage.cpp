#include "agent/usage.h"

#include <cmath>

namespace moat::agent {

namespace {

struct Price {
  std::string_view prefix;
  double input, output;  // USD per million tokens
};

// Public list prices; a rough guide for the owner, not a bill.
constexpr Price kPrices[] = {
    {"claude-opus-4", 15, 75},     {"claude-sonnet-4", 3, 15},  {"claude-3-7-sonnet", 3, 15},
    {"claude-3-5-sonnet", 3, 15},  {"claude-haiku-4-5", 1, 5},  {"claude-3-5-haiku", 0.8, 4},
    {"gpt-4o-mini", 0.15, 0.6},    {"gpt-4o", 2.5, 10},         {"gpt-4.1-mini", 0.4, 1.6},
    {"gpt-4.1", 2, 8},             {"o4-mini", 1.1, 4.4},
};

}  // namespace

std::pair<double, double> price_per_million(std::string_view model) {
  const Price* best = nullptr;
  for (const auto& p : kPrices)
    if (model.starts_with(p.prefix) && (!best || p.prefix.size() > best->prefix.size())) best = &p;
  if (!best) return {0, 0};
  return {best->input, best->output};
}

int64_t cost_micros(std::string_view model, uint64_t input_tokens, uint64_t output_tokens) {
  auto [in, out] = price_per_million(model);
  // tokens * (USD per 1e6 tokens) is exactly micro-dollars.
  return std::llround(static_cast<double>(input_tokens) * in + static_cast<double>(output_tokens) * out);
}

Status record_turn_usage(Database& db, const std::string& agent, const std::string& model, const TurnUsage& u) {
  auto s = db.prepare(
      "INSERT INTO agent_usage (agent, turns, model_calls, input_tokens, output_tokens, tool_calls, cost_micros) "
      "VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (agent) DO UPDATE SET turns = turns + 1, "
      "model_calls = model_calls + excluded.model_calls, input_tokens = input_tokens + excluded.input_tokens, "
      "output_tokens = output_tokens + excluded.output_tokens, tool_calls = tool_calls + excluded.tool_calls, "
      "cost_micros = cost_micros + excluded.cost_micros");
  if (!s) return std::unexpected(s.error());
  s->bind(1, agent).bind(2, u.model_calls).bind(3, u.input_tokens).bind(4, u.output_tokens).bind(5, u.tool_calls);
  s->bind(6, cost_micros(model, u.input_tokens, u.output_tokens));
  auto r = s->step();
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<std::vector<AgentUsage>> read_usage(Database& db, std::string_view agent) {
  auto s = db.prepare(
      "SELECT agent, turns, model_calls, input_tokens, output_tokens, tool_calls, cost_micros FROM agent_usage "
      "WHERE ?1 = '' OR agent = ?1 ORDER BY agent");
  if (!s) return std::unexpected(s.error());
  s->bind(1, agent);
  std::vector<AgentUsage> out;
  for (;;) {
    auto r = s->step();
    if (!r) return std::unexpected(r.error());
    if (!*r) break;
    AgentUsage u;
    u.agent = std::string(s->column_text(0));
    u.turns = static_cast<uint64_t>(s->column_int64(1));
    u.model_calls = static_cast<uint64_t>(s->column_int64(2));
    u.input_tokens = static_cast<uint64_t>(s->column_int64(3));
    u.output_tokens = static_cast<uint64_t>(s->column_int64(4));
    u.tool_calls = static_cast<uint64_t>(s->column_int64(5));
    u.cost_usd = static_cast<double>(s->column_int64(6)) / 1e6;
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace moat::agent
