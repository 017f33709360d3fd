// moat policy show|allow|deny|rm|preset: an agent's egress rules, changed at run time.
#include <cstdio>

#include "cli/cli.h"

namespace moat::cli {
namespace {

constexpr const char* kRuleHelp =
    "host rule: api.example.com, *.example.com (sub-domains), host:443, 10.0.0.5:5432, 10.0.0.0/8, [fd00::1]:80, or *";

void print_policy(const Json& j) {
  std::printf("agent %s: preset %s, default %s\n", j["agent"].get<std::string>().c_str(),
              j["preset"].get<std::string>().c_str(), j["default"].get<std::string>().c_str());
  std::printf("limits: %s connections at once, %s bytes per day (used today: %s, open now: %s)\n",
              j["max_connections"].dump().c_str(), j["max_bytes_per_day"].dump().c_str(),
              j["usage"]["bytes_today"].dump().c_str(), j["usage"]["open_connections"].dump().c_str());
  std::vector<std::vector<std::string>> rows{{"ACTION", "RULE", "FROM"}};
  for (const auto& r : j["rules"])
    rows.push_back({r["action"].get<std::string>(), r["rule"].get<std::string>(), r["source"].get<std::string>()});
  print_table(rows);
  std::printf("deny rules win; a private, loopback or link-local address needs an allow rule naming it and its port\n");
}

}  // namespace

void add_policy_commands(CLI::App& app, Globals& g, int& rc) {
  auto* p = app.add_subcommand("policy", "an agent's egress policy: which hosts its sandbox may reach")
                ->footer("Rules take effect for the agent's next connection. Deny wins over allow; anything not allowed is "
                         "denied. Presets: locked (nothing), balanced (model APIs and package registries), open (any public "
                         "address). Rules from moat.toml are shown too but changed there.");
  p->require_subcommand(1);
  auto agent = std::make_shared<std::string>();
  auto rule = std::make_shared<std::string>();

  auto* show = p->add_subcommand("show", "the agent's preset, rules (and where each comes from), limits and usage today");
  show->add_option("agent", *agent, "agent (sandbox) name")->required();
  show->callback([&g, &rc, agent] {
    auto r = call_or_report(g, "policy.show", Json{{"agent", *agent}}, rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else print_policy(*r);
  });

  for (auto [verb, what] : {std::pair{"allow", "let the agent reach a host"}, std::pair{"deny", "forbid a host (wins over allow)"}}) {
    auto* c = p->add_subcommand(verb, what);
    c->add_option("agent", *agent, "agent (sandbox) name")->required();
    c->add_option("rule", *rule, kRuleHelp)->required();
    c->callback([&g, &rc, agent, rule, verb = std::string(verb)] {
      auto r = call_or_report(g, "policy." + verb, Json{{"agent", *agent}, {"rule", *rule}}, rc);
      if (!r) return;
      if (g.json) std::printf("%s\n", r->dump(2).c_str());
      else std::printf("%s: %s\n", (*r)["agent"].get<std::string>().c_str(), (*r)["rule"].get<std::string>().c_str());
    });
  }

  auto* rm = p->add_subcommand("rm", "remove a rule added with `moat policy allow|deny`");
  auto action = std::make_shared<std::string>();
  rm->add_option("agent", *agent, "agent (sandbox) name")->required();
  rm->add_option("action", *action, "allow or deny")->required()->check(CLI::IsMember({"allow", "deny"}));
  rm->add_option("rule", *rule, kRuleHelp)->required();
  rm->callback([&g, &rc, agent, action, rule] {
    auto r = call_or_report(g, "policy.rm", Json{{"agent", *agent}, {"action", *action}, {"rule", *rule}}, rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else std::printf("%s: removed %s\n", (*r)["agent"].get<std::string>().c_str(), (*r)["removed"].get<std::string>().c_str());
  });

  auto* preset = p->add_subcommand("preset", "set the agent's preset: locked, balanced or open");
  auto name = std::make_shared<std::string>();
  preset->add_option("agent", *agent, "agent (sandbox) name")->required();
  preset->add_option("preset", *name, "locked | balanced | open")->required()->check(CLI::IsMember({"locked", "balanced", "open"}));
  preset->callback([&g, &rc, agent, name] {
    auto r = call_or_report(g, "policy.preset", Json{{"agent", *agent}, {"preset", *name}}, rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else std::printf("%s: preset %s\n", (*r)["agent"].get<std::string>().c_str(), (*r)["preset"].get<std::string>().c_str());
  });
}

}  // namespace moat::cli
