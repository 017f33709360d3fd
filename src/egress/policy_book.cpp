#include "egress/policy_book.h"

#include "base/log.h"
#include "store/clock.h"

namespace moat::egress {
namespace {

std::string_view action_name(RuleAction a) { return a == RuleAction::Allow ? "allow" : "deny"; }

// "allow *.example.com:443" -> "*.example.com:443": what the user typed, canonicalised.
std::string rule_spec(const Rule& r) {
  auto text = r.text();
  auto space = text.find(' ');
  return space == std::string::npos ? text : text.substr(space + 1);
}

Result<std::vector<Rule>> parse_rules(const std::vector<std::string>& allow, const std::vector<std::string>& deny,
                                      std::string_view where) {
  std::vector<Rule> out;
  for (auto [list, action] : {std::pair{&allow, RuleAction::Allow}, std::pair{&deny, RuleAction::Deny}}) {
    for (const auto& spec : *list) {
      auto r = parse_rule(action, spec);
      if (!r) return fail(ErrorKind::InvalidInput, "moat.toml {}.{}: {}", where, action_name(action), r.error().message);
      out.push_back(*r);
    }
  }
  return out;
}

Status check_preset_name(std::string_view preset) {
  if (auto r = preset_rules(preset); !r) return std::unexpected(r.error());
  return {};
}

}  // namespace

Result<std::unique_ptr<PolicyBook>> PolicyBook::open(Database& db, const EgressConfig& config) {
  std::unique_ptr<PolicyBook> book(new PolicyBook(db, config));
  if (auto st = check_preset_name(config.preset); !st) return wrap(st.error(), "moat.toml egress.preset");
  auto global = parse_rules(config.allow, config.deny, "egress");
  if (!global) return std::unexpected(global.error());
  book->global_rules_ = std::move(*global);
  for (const auto& [agent, ac] : config.agents) {
    if (ac.preset) {
      if (auto st = check_preset_name(*ac.preset); !st) return wrap(st.error(), fmt::format("moat.toml agents.{}.egress.preset", agent));
    }
    auto rules = parse_rules(ac.allow, ac.deny, fmt::format("agents.{}.egress", agent));
    if (!rules) return std::unexpected(rules.error());
    book->agent_rules_[agent] = std::move(*rules);
  }
  if (auto st = book->load(); !st) return std::unexpected(st.error());
  return book;
}

Status PolicyBook::load() {
  auto rules = db_.prepare("SELECT agent, action, pattern, created_at_ms FROM egress_rules ORDER BY created_at_ms");
  if (!rules) return std::unexpected(rules.error());
  for (;;) {
    auto row = rules->step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    std::string agent(rules->column_text(0));
    auto action = rules->column_text(1) == "deny" ? RuleAction::Deny : RuleAction::Allow;
    auto r = parse_rule(action, rules->column_text(2));
    if (!r) {
      // A rule stored by an older moat that this one no longer understands: keep serving, say so.
      log::warn("egress: ignoring stored rule '{}' of agent {}: {}", rules->column_text(2), agent, r.error().message);
      continue;
    }
    runtime_rules_[agent].push_back({*r, rules->column_int64(3)});
  }
  auto presets = db_.prepare("SELECT agent, preset FROM egress_policy");
  if (!presets) return std::unexpected(presets.error());
  for (;;) {
    auto row = presets->step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    runtime_presets_[std::string(presets->column_text(0))] = std::string(presets->column_text(1));
  }
  return {};
}

Policy PolicyBook::policy_for(std::string_view agent) const {
  Policy p;
  p.agent = std::string(agent);
  p.preset = config_.preset;
  if (auto it = config_.agents.find(std::string(agent)); it != config_.agents.end() && it->second.preset)
    p.preset = *it->second.preset;
  p.rules = global_rules_;
  if (auto it = agent_rules_.find(agent); it != agent_rules_.end())
    p.rules.insert(p.rules.end(), it->second.begin(), it->second.end());
  std::lock_guard g(mu_);
  if (auto it = runtime_presets_.find(agent); it != runtime_presets_.end()) p.preset = it->second;
  if (auto it = runtime_rules_.find(agent); it != runtime_rules_.end()) {
    for (const auto& sr : it->second) p.rules.push_back(sr.rule);
  }
  return p;
}

AgentLimits PolicyBook::limits_for(std::string_view agent) const {
  AgentLimits l{config_.max_connections, config_.max_bytes_per_day};
  if (auto it = config_.agents.find(std::string(agent)); it != config_.agents.end()) {
    if (it->second.max_connections) l.max_connections = *it->second.max_connections;
    if (it->second.max_bytes_per_day) l.max_bytes_per_day = *it->second.max_bytes_per_day;
  }
  return l;
}

Result<Rule> PolicyBook::add_rule(std::string_view agent, RuleAction action, std::string_view spec) {
  auto rule = parse_rule(action, spec);
  if (!rule) return std::unexpected(rule.error());
  std::lock_guard g(mu_);
  auto& list = runtime_rules_[std::string(agent)];
  for (const auto& sr : list) {
    if (sr.rule.text() == rule->text()) return *rule;
  }
  int64_t now = clock::now_ms();
  auto ins = db_.prepare("INSERT OR IGNORE INTO egress_rules(agent, action, pattern, created_at_ms) VALUES(?, ?, ?, ?)");
  if (!ins) return std::unexpected(ins.error());
  ins->bind(1, agent).bind(2, action_name(action)).bind(3, rule_spec(*rule)).bind(4, now);
  if (auto st = ins->step(); !st) return std::unexpected(st.error());
  list.push_back({*rule, now});
  revision_.fetch_add(1, std::memory_order_release);
  return *rule;
}

Status PolicyBook::remove_rule(std::string_view agent, RuleAction action, std::string_view spec) {
  auto rule = parse_rule(action, spec);
  if (!rule) return std::unexpected(rule.error());
  std::lock_guard g(mu_);
  auto it = runtime_rules_.find(agent);
  bool found = false;
  if (it != runtime_rules_.end()) {
    std::erase_if(it->second, [&](const StoredRule& sr) {
      bool same = sr.rule.text() == rule->text();
      found = found || same;
      return same;
    });
  }
  if (!found)
    return fail(ErrorKind::NotFound,
                "agent '{}' has no run-time rule '{}'; `moat policy show {}` lists them (rules from moat.toml are changed there)",
                agent, rule->text(), agent);
  auto del = db_.prepare("DELETE FROM egress_rules WHERE agent = ? AND action = ? AND pattern = ?");
  if (!del) return std::unexpected(del.error());
  del->bind(1, agent).bind(2, action_name(action)).bind(3, rule_spec(*rule));
  if (auto st = del->step(); !st) return std::unexpected(st.error());
  revision_.fetch_add(1, std::memory_order_release);
  return {};
}

Status PolicyBook::set_preset(std::string_view agent, std::string_view preset) {
  if (auto st = check_preset_name(preset); !st) return st;
  std::lock_guard g(mu_);
  auto up = db_.prepare("INSERT INTO egress_policy(agent, preset) VALUES(?, ?) ON CONFLICT(agent) DO UPDATE SET preset = excluded.preset");
  if (!up) return std::unexpected(up.error());
  up->bind(1, agent).bind(2, preset);
  if (auto st = up->step(); !st) return std::unexpected(st.error());
  runtime_presets_[std::string(agent)] = std::string(preset);
  revision_.fetch_add(1, std::memory_order_release);
  return {};
}

Json PolicyBook::describe(std::string_view agent) const {
  Policy p = policy_for(agent);
  Json rules = Json::array();
  auto add = [&](const Rule& r, std::string_view source) {
    rules.push_back(Json{{"action", action_name(r.action)}, {"rule", rule_spec(r)}, {"source", source}});
  };
  for (const auto& r : global_rules_) add(r, "moat.toml [egress]");
  if (auto it = agent_rules_.find(agent); it != agent_rules_.end()) {
    for (const auto& r : it->second) add(r, fmt::format("moat.toml [agents.{}.egress]", agent));
  }
  {
    std::lock_guard g(mu_);
    if (auto it = runtime_rules_.find(agent); it != runtime_rules_.end()) {
      for (const auto& sr : it->second) add(sr.rule, "moat policy");
    }
  }
  if (auto preset = preset_rules(p.preset); preset) {
    for (const auto& r : *preset) add(r, fmt::format("preset {}", p.preset));
  }
  auto limits = limits_for(agent);
  return Json{{"agent", agent},
              {"preset", p.preset},
              {"default", "deny"},
              {"rules", rules},
              {"max_connections", limits.max_connections},
              {"max_bytes_per_day", limits.max_bytes_per_day}};
}

}  // namespace moat::egress
