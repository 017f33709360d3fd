#include "daemon/agent_hooks.h"

#include <mutex>

#include "agent/sandbox_workbench.h"

namespace moat {

std::string default_base_url(const Config& config, std::string_view provider) {
  if (auto it = config.egress.routes.find(std::string(provider)); it != config.egress.routes.end())
    return it->second.upstream;
  if (provider == "openai") return "https://api.openai.com/v1";
  return "https://api.anthropic.com";
}

agent::RuntimeHooks make_runtime_hooks(const Config& config, vault::Vault& vault, SandboxManager& sandboxes,
                                       CurrentSpecFn current_spec) {
  agent::RuntimeHooks hooks;
  hooks.provider = [&config, &vault](const agent::AgentSpec& spec) -> Result<std::unique_ptr<agent::Provider>> {
    agent::ProviderConfig pc;
    pc.kind = spec.model.provider;
    pc.base_url = spec.model.base_url.empty() ? default_base_url(config, spec.model.provider) : spec.model.base_url;
    pc.extra_ca_file = config.egress.upstream_ca_file;
    std::string agent_name = spec.name;
    auto credentials = [&vault, agent_name](const std::string& host, uint16_t port) -> Result<std::vector<agent::Credential>> {
      auto bound = vault.bound_for(agent_name, host, port);
      if (!bound) return std::unexpected(bound.error());
      std::vector<agent::Credential> out;
      for (auto& b : *bound) {
        auto v = b.header_value();
        out.push_back(agent::Credential{b.header.name, std::string(v.view())});
        vault.mark_used(b.name);
      }
      return out;
    };
    return agent::make_provider(pc, credentials);
  };
  // One workbench per agent, kept: it is cheap, and keeping it keeps the sandbox's name resolved once.
  // It asks for the agent's settings only when it has to create the sandbox, so an edit made since
  // (even during a running turn) is what a new sandbox gets.
  auto benches = std::make_shared<std::pair<std::mutex, std::map<std::string, std::shared_ptr<agent::Workbench>>>>();
  hooks.workbench = [&sandboxes, benches, current_spec](const agent::AgentSpec& spec)
      -> Result<std::shared_ptr<agent::Workbench>> {
    std::lock_guard l(benches->first);
    auto& slot = benches->second[spec.name];
    if (!slot) {
      auto create = [current_spec, first = spec] {
        auto now = current_spec(first.name);
        return agent::sandbox_request_for(now ? *now : first);  // removed meanwhile: as the turn knew it
      };
      slot = std::make_shared<agent::SandboxWorkbench>(sandboxes, spec.name, std::move(create));
    }
    return slot;
  };
  hooks.command_env = {};
  return hooks;
}

}  // namespace moat
