#pragma once
// Credential injection: what the gateway does with a secret bound to (agent, destination). Only two
// things, both on request headers and both only for a bound destination:
//   - base-URL routes set the binding's header (e.g. "x-api-key: {}") to the formatted real value;
//   - TLS interception replaces the secret's placeholder wherever it appears in a header value.
// Nothing else of the request is read or changed, and a placeholder going anywhere else stays a
// placeholder. Values live in vault::SecretValue (wiped when dropped); a header string that held one
// is wiped by the caller's wipe_string() once written.
#include <string>
#include <string_view>
#include <vector>

#include "vault/vault.h"

namespace moat::egress {

using Credentials = std::vector<vault::BoundSecret>;

// Replaces every placeholder of `creds` in `header_value`; adds the names used to `used`.
void swap_placeholders(std::string& header_value, const Credentials& creds, std::vector<std::string>& used);

// Overwrites a string's bytes before it is freed (it held a credential).
void wipe_string(std::string& s);

}  // namespace moat::egress
