#pragma once
// What a secret is for: which agents may have it used on their behalf, toward which destinations,
// and how it is injected (an HTTP header built from a template, and the environment variable inside
// the sandbox that holds the placeholder). Validation lives here so that the vault, the API verbs and
// tests share one set of rules and one set of messages. None of this is secret.
#include <string>
#include <string_view>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "vault/host_pattern.h"

namespace moat::vault {

// Who uses a secret. An egress secret is injected by the gateway into a bound agent's requests to a
// bound host. A channel secret (a messaging platform's bot token) is read by moatd alone, to call the
// platform itself: it has no agents, hosts or env var, and the gateway never injects it into any
// sandbox's traffic (Vault::bound_for and the rest never return it). The use is sealed with the value,
// so a row edited in the store cannot turn a bot token into something a sandbox's egress can carry.
enum class SecretUse { Egress, Channel };

struct SecretBinding {
  SecretUse use = SecretUse::Egress;
  std::vector<std::string> agents = {"*"};            // agent (sandbox) names; ["*"] = every agent
  std::vector<std::string> hosts;                     // host patterns (host_pattern.h), at least one
  std::string header = "Authorization: Bearer {}";    // "Name: template" with exactly one {}
  std::string env;                                    // env var holding the placeholder; may be empty

  bool operator==(const SecretBinding&) const = default;
};

// A header template split at its "{}": the header sent is `name: prefix<value>suffix`.
struct HeaderTemplate {
  std::string name;    // an HTTP token, as written ("x-api-key", "Authorization")
  std::string prefix;  // "Bearer "
  std::string suffix;
};

// Secret names: 1-64 of letters, digits, '_', '-', '.', starting with a letter, digit or '_'
// (ANTHROPIC_API_KEY, github-token, openai.prod).
Status validate_secret_name(std::string_view name);
// The value as it will travel in a header: 1-16384 bytes, no control characters (CR/LF would let a
// value inject headers), no leading or trailing whitespace. Messages never quote the value.
Status validate_secret_value(std::string_view value);
Result<HeaderTemplate> parse_header_template(std::string_view header);

std::string_view secret_use_name(SecretUse use);  // "egress" | "channel"

// Checks every field and returns the canonical form: agents sorted, deduplicated, "*" alone when
// present; hosts in canonical spelling, deduplicated; header as "Name: template".
Result<SecretBinding> normalize_binding(SecretBinding b);

// The placeholder an agent sees instead of the value: "moat-placeholder-<NAME>" (stable, not secret).
std::string placeholder_for(std::string_view name);

Json binding_to_json(const SecretBinding& b);
// For rows read back from the store and for API arguments; fields missing take their defaults.
Result<SecretBinding> binding_from_json(const Json& j);

}  // namespace moat::vault
