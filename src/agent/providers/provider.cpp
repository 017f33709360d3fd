#include "agent/providers/provider.h"

#include "agent/providers/anthropic.h"
#include "agent/providers/openai.h"
#include "net/address.h"

namespace moat::agent {

net::Backoff backoff_policy(const ProviderConfig& cfg) {
  return net::Backoff{.initial = cfg.initial_backoff,
                      .factor = 2.0,
                      .cap = cfg.max_backoff,
                      .jitter = 0.5,
                      .max_attempts = cfg.max_retries + 1};
}

Result<net::Url> parse_base_url(std::string_view text) {
  // A base URL is a prefix the provider's paths are joined to: a query or fragment would land in
  // the middle of every request's target.
  if (text.find_first_of("?#") != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "base_url '{}' is not usable: it has a query or fragment", text);
  auto url = net::parse_url(text);
  if (!url)
    return fail(ErrorKind::InvalidInput, "base_url '{}' is not usable: {} (expected http[s]://host[:port][/path])", text,
                url.error().message);
  return url;
}

Result<std::unique_ptr<Provider>> make_provider(const ProviderConfig& cfg, CredentialSource credentials) {
  if (cfg.kind != "anthropic" && cfg.kind != "openai")
    return fail(ErrorKind::InvalidInput, "model provider kind '{}' is not known; use \"anthropic\" or \"openai\"", cfg.kind);
  auto url = parse_base_url(cfg.base_url);
  if (!url) return wrap(url.error(), fmt::format("{} provider", cfg.kind));
  if (!credentials)  // a provider with no key (a local Ollama) still gets a source that returns none
    credentials = [](const std::string&, uint16_t) -> Result<std::vector<Credential>> { return std::vector<Credential>{}; };
  // A credential never travels in the clear: over plain http:// (loopback aside: a local Ollama or
  // vLLM, where nothing leaves the host) a call that would carry one is refused, saying why.
  if (!url->tls() && !net::is_loopback_host(url->host)) {
    credentials = [inner = std::move(credentials), base = cfg.base_url](const std::string& host,
                                                                         uint16_t port) -> Result<std::vector<Credential>> {
      auto creds = inner(host, port);
      if (creds && !creds->empty())
        return fail(ErrorKind::InvalidInput,
                    "the provider's base_url {} is plain http:// and a credential is bound to {}:{}: credentials are "
                    "only sent over https:// (or to a loopback address); change base_url to https://",
                    base, host, port);
      return creds;
    };
  }
  if (cfg.kind == "anthropic") return make_anthropic_provider(cfg, std::move(*url), std::move(credentials));
  return make_openai_provider(cfg, std::move(*url), std::move(credentials));
}

}  // namespace moat::agent
