#include "agent/providers/provider.h"

#include "agent/providers/anthropic.h"
#include "agent/providers/openai.h"

namespace moat::agent {

Result<std::unique_ptr<Provider>> make_provider(const ProviderConfig& cfg, CredentialSource credentials) {
  if (cfg.kind != "anthropic" && cfg.kind != "openai")
    return fail(ErrorKind::InvalidInput, "model provider kind '{}' is not known; use \"anthropic\" or \"openai\"", cfg.kind);
  auto url = parse_url(cfg.base_url);
  if (!url) return wrap(url.error(), fmt::format("{} provider", cfg.kind));
  if (!credentials)  // a provider with no key (a local Ollama) still gets a source that returns none
    credentials = [](const std::string&, uint16_t) -> Result<std::vector<Credential>> { return std::vector<Credential>{}; };
  if (cfg.kind == "anthropic") return make_anthropic_provider(cfg, std::move(*url), std::move(credentials));
  return make_openai_provider(cfg, std::move(*url), std::move(credentials));
}

}  // namespace moat::agent
