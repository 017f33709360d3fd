#pragma once
// The destinations a secret is bound to. The syntax is a subset of the egress policy rules
// (src/egress/policy.h), kept here because the vault sits below egress in the dependency order:
//
//   api.example.com          exactly that host, any port
//   api.example.com:443      exactly that host and port
//   *.example.com[:port]     any name under example.com (a.example.com, a.b.example.com), not
//                            example.com itself
//   10.1.2.3[:port]          an IPv4 address (four decimal numbers)
//   [fd00::1][:port], fd00::1  an IPv6 address (brackets needed with a port)
//
// Refused for secrets, with a message saying why: "*" (every host), CIDR ranges, wildcards that
// cover a whole top-level domain ("*.com"), and IPv4 in other notations ("127.1", "0x7f.0.0.1").
// Names compare case-insensitively and without a trailing dot.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::vault {

struct HostPattern {
  enum class Kind { Exact, Subdomains };
  Kind kind = Kind::Exact;
  std::string host;  // lowercase; for Subdomains the part after "*."; IPv6 canonical, unbracketed
  std::optional<uint16_t> port;  // always set by parse_host_pattern: 443 when the pattern names none

  // The canonical spelling ("*.example.com:443", "[fd00::1]:80").
  std::string text() const;
  // `host` as the client asked for it (a name or a canonical IP literal, brackets allowed).
  bool matches(std::string_view host, uint16_t port) const;
};

Result<HostPattern> parse_host_pattern(std::string_view spec);

// Lowercase, without brackets or a trailing dot; IPv6 literals in canonical form.
std::string normalize_host(std::string_view host);

}  // namespace moat::vault
