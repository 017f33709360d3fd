#pragma once
// Every agent's egress policy and limits: the preset and rules of moat.toml ([egress] for all agents,
// [agents.NAME.egress] for one) plus the changes made at run time with `moat policy ...`, which are kept
// in the store (tables egress_rules, egress_policy) so they survive a restart. Lookups are in memory
// and thread-safe; a change is effective for the next connection.
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/json.h"
#include "config/config.h"
#include "egress/policy.h"
#include "store/database.h"

namespace moat::egress {

struct AgentLimits {
  uint64_t max_connections = 0;
  uint64_t max_bytes_per_day = 0;
};

class PolicyBook {
 public:
  // Checks every rule and preset of the config (an error names the key and the bad rule) and loads the
  // run-time changes from the store.
  static Result<std::unique_ptr<PolicyBook>> open(Database& db, const EgressConfig& config);

  Policy policy_for(std::string_view agent) const;
  AgentLimits limits_for(std::string_view agent) const;

  // Run-time changes, stored. Adding a rule that exists already is not an error.
  Result<Rule> add_rule(std::string_view agent, RuleAction action, std::string_view spec);
  // Removes a run-time rule (rules from moat.toml are changed in moat.toml).
  Status remove_rule(std::string_view agent, RuleAction action, std::string_view spec);
  Status set_preset(std::string_view agent, std::string_view preset);
  // Preset and every rule with where it comes from, for `moat policy show`.
  Json describe(std::string_view agent) const;
  // Grows with every run-time change (rule added or removed, preset set): the gateway re-checks open
  // connections when it moves, so a revocation reaches them too.
  uint64_t revision() const { return revision_.load(std::memory_order_acquire); }

 private:
  struct StoredRule {
    Rule rule;
    int64_t created_ms = 0;
  };
  PolicyBook(Database& db, EgressConfig config) : db_(db), config_(std::move(config)) {}
  Status load();

  Database& db_;
  EgressConfig config_;
  std::vector<Rule> global_rules_;                           // [egress] allow/deny
  std::map<std::string, std::vector<Rule>, std::less<>> agent_rules_;  // [agents.NAME.egress]
  mutable std::mutex mu_;
  std::atomic<uint64_t> revision_{0};
  std::map<std::string, std::vector<StoredRule>, std::less<>> runtime_rules_;
  std::map<std::string, std::string, std::less<>> runtime_presets_;
};

}  // namespace moat::egress
