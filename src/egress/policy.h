#pragma once
// Egress policy: per-agent allow/deny rules over host names, IP literals and CIDR ranges, plus a
// preset. Deciding is pure (no I/O) and happens twice per connection: on the host the client asked
// for (check_host), then on every address the gateway resolved and is about to connect to
// (check_address). Deny wins; anything not allowed is refused.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "net/address.h"

namespace moat::egress {

enum class RuleAction { Allow, Deny };

// What a rule's host part is.
enum class PatternKind {
  Any,       // "*"
  Exact,     // "api.example.com"
  Wildcard,  // "*.example.com": sub-domains at any depth, not example.com itself
  Ip,        // "10.1.2.3", "fd00::1"
  Cidr,      // "10.0.0.0/8", "fd00::/8"
};

struct Rule {
  RuleAction action = RuleAction::Deny;
  // Canonical host part: lower-case name without trailing dot, "*.suffix", "*", an address in its
  // canonical form ("127.0.0.1" for "0x7f.1"; IPv6 without brackets), or "network/prefix".
  std::string pattern;
  std::optional<uint16_t> port;  // nullopt = any port
  PatternKind kind = PatternKind::Exact;
  std::optional<net::IpAddress> address;  // Ip: the address; Cidr: the network address
  unsigned prefix = 0;               // Cidr only

  // The spec as parse_rule reads it back: "*.example.com:443", "[fd00::1]:80", "10.0.0.0/8".
  std::string spec() const;
  // "allow *.example.com:443"
  std::string text() const;

  // Stage 1: does this rule cover the host (as the client wrote it) and port? A name is matched by
  // name rules and "*"; an IP literal by IP/CIDR rules and "*".
  bool matches_host(std::string_view host, uint16_t port) const;
  // Stage 2: does this IP/CIDR rule cover the address and port? (Name rules never match here.)
  bool matches_address(const net::IpAddress& a, uint16_t port) const;

  bool operator==(const Rule& o) const { return action == o.action && pattern == o.pattern && port == o.port; }
};

// Parses "host", "host:port", "*.example.com[:port]", "*[:port]", "10.1.2.3[:port]", "10.0.0.0/8[:port]",
// "fd00::1", "[fd00::1]:80", "[fd00::/16]:443". Surrounding whitespace is ignored. Errors are
// InvalidInput and name the spec and what was expected.
Result<Rule> parse_rule(RuleAction action, std::string_view spec);

struct Policy {
  std::string preset = "balanced";
  std::vector<Rule> rules;  // the agent's own rules; preset rules are NOT included
  std::string agent;        // only for the hint in refusal messages ("moat policy allow AGENT ...")
};

// The rules a preset stands for: "locked" (none), "balanced" (model APIs and package registries on
// ports 80 and 443), "open" (any host, any port — stage 2 still refuses non-public addresses).
Result<std::vector<Rule>> preset_rules(std::string_view preset);
// The preset names, for help and error messages.
std::span<const std::string_view> preset_names();

struct Decision {
  bool allowed = false;
  // The deciding rule: "deny *.evil.com", "allow api.anthropic.com:443",
  // "preset balanced: allow *.npmjs.org:443", "default deny", or for refused address classes the
  // class ("private address (RFC 1918)", "cloud metadata address", ...).
  std::string rule;
  // One human sentence for the 403 body and the audit record.
  std::string reason;
};

// The host as rules see it: ASCII lower-case, one trailing dot removed; IP literals (any inet_aton
// form, bracketed or not) in canonical form.
std::string normalize_host(std::string_view host);

// Stage 1, on the name (or literal) the client asked for: a matching deny rule refuses; then the
// agent's allow rules, then the preset's; else default deny. An unknown preset counts as "locked".
Decision check_host(const Policy& policy, std::string_view host, uint16_t port);

// Stage 2, on each resolved address (and on a literal the client gave): a deny rule whose IP/CIDR
// covers the address (or the IPv4 address it embeds) refuses; a non-Public address (see net::classify) is
// refused unless an allow rule whose IP/CIDR covers it and which names this port explicitly matches;
// a Public address is allowed (stage 1 already decided on the name).
Decision check_address(const Policy& policy, const net::IpAddress& address, uint16_t port,
                       std::span<const net::IpAddress> own);

}  // namespace moat::egress
