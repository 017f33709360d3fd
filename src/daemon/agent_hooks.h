#pragma once
// How the daemon gives the agent runtime what it needs of the rest of moat: a provider whose key
// comes from the vault (bound to the agent and the provider's host, like any other destination, and
// used here on the host, never inside the sandbox), and the agent's workbench (its own sandbox).
#include <functional>

#include "agent/agent_runtime.h"
#include "config/config.h"
#include "sandbox/manager.h"
#include "vault/vault.h"

namespace moat {

// The provider's base URL when the agent names none: the gateway's route of the same name (so the
// host and the sandbox agree on where "anthropic" is), else the public API.
std::string default_base_url(const Config& config, std::string_view provider);

// An agent's settings as they are now (NotFound once it is removed).
using CurrentSpecFn = std::function<Result<agent::AgentSpec>(const std::string& name)>;

agent::RuntimeHooks make_runtime_hooks(const Config& config, vault::Vault& vault, SandboxManager& sandboxes,
                                       CurrentSpecFn current_spec);

}  // namespace moat
