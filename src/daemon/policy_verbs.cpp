#include "daemon/policy_verbs.h"

#include "base/log.h"

namespace moat {
namespace {

std::string actor_of(const Json& args) { return args.value("actor", std::string("cli")); }

Result<std::string> string_arg(const Json& a, const char* key, std::string_view verb) {
  if (!a.contains(key) || !a[key].is_string() || a[key].get_ref<const std::string&>().empty())
    return fail(ErrorKind::InvalidInput, "{} needs '{}'", verb, key);
  return a[key].get<std::string>();
}

}  // namespace

void register_policy_verbs(api::Server& server, egress::PolicyBook& book, egress::UsageMeter& usage, AuditLog& audit,
                           AgentExists agent_exists) {
  auto agent_arg = [agent_exists](const Json& a, std::string_view verb) -> Result<std::string> {
    auto agent = string_arg(a, "agent", verb);
    if (!agent) return agent;
    if (!agent_exists(*agent))
      return fail(ErrorKind::NotFound,
                  "unknown agent '{}': no sandbox and no [agents.{}] in moat.toml has that name; `moat sandbox ls` lists them",
                  *agent, *agent);
    return agent;
  };
  auto record = [&audit](const Json& a, const std::string& agent, Json data) {
    if (auto r = audit.append("policy.change", actor_of(a), agent, std::move(data)); !r)
      log::warn("audit: could not record a policy change of {}: {}", agent, r.error().message);
  };

  server.handle("policy.show", [&book, &usage, agent_arg](const Json& a, api::Session&) -> Result<Json> {
    auto agent = agent_arg(a, "policy.show");
    if (!agent) return std::unexpected(agent.error());
    Json j = book.describe(*agent);
    j["usage"] = usage.snapshot(*agent);
    return j;
  });
  for (auto [verb, action] : {std::pair{"policy.allow", egress::RuleAction::Allow}, std::pair{"policy.deny", egress::RuleAction::Deny}}) {
    server.handle(verb, [&book, agent_arg, record, verb, action](const Json& a, api::Session&) -> Result<Json> {
      auto agent = agent_arg(a, verb);
      if (!agent) return std::unexpected(agent.error());
      auto spec = string_arg(a, "rule", verb);
      if (!spec) return std::unexpected(spec.error());
      auto rule = book.add_rule(*agent, action, *spec);
      if (!rule) return std::unexpected(rule.error());
      record(a, *agent, Json{{"change", "add"}, {"rule", rule->text()}});
      return Json{{"agent", *agent}, {"rule", rule->text()}};
    });
  }
  server.handle("policy.rm", [&book, agent_arg, record](const Json& a, api::Session&) -> Result<Json> {
    auto agent = agent_arg(a, "policy.rm");
    if (!agent) return std::unexpected(agent.error());
    auto action = string_arg(a, "action", "policy.rm");
    if (!action) return std::unexpected(action.error());
    if (*action != "allow" && *action != "deny")
      return fail(ErrorKind::InvalidInput, "policy.rm: action must be 'allow' or 'deny', not '{}'", *action);
    auto spec = string_arg(a, "rule", "policy.rm");
    if (!spec) return std::unexpected(spec.error());
    auto act = *action == "allow" ? egress::RuleAction::Allow : egress::RuleAction::Deny;
    if (auto st = book.remove_rule(*agent, act, *spec); !st) return std::unexpected(st.error());
    record(a, *agent, Json{{"change", "remove"}, {"rule", fmt::format("{} {}", *action, *spec)}});
    return Json{{"agent", *agent}, {"removed", fmt::format("{} {}", *action, *spec)}};
  });
  server.handle("policy.preset", [&book, agent_arg, record](const Json& a, api::Session&) -> Result<Json> {
    auto agent = agent_arg(a, "policy.preset");
    if (!agent) return std::unexpected(agent.error());
    auto preset = string_arg(a, "preset", "policy.preset");
    if (!preset) return std::unexpected(preset.error());
    if (auto st = book.set_preset(*agent, *preset); !st) return std::unexpected(st.error());
    record(a, *agent, Json{{"change", "preset"}, {"preset", *preset}});
    return Json{{"agent", *agent}, {"preset", *preset}};
  });
}

}  // namespace moat
