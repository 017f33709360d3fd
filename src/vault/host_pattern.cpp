#include "vault/host_pattern.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "base/text.h"
#include "vault/public_suffix.h"

namespace moat::vault {

namespace {

constexpr std::string_view kSyntax =
    "use a host name (api.example.com), a wildcard (*.example.com), or an IP address, each with an optional "
    ":port";

std::optional<std::string> canonical_ipv6(std::string_view s) {
  std::string text(s);
  in6_addr a{};
  if (inet_pton(AF_INET6, text.c_str(), &a) != 1) return std::nullopt;
  char buf[INET6_ADDRSTRLEN];
  return std::string(inet_ntop(AF_INET6, &a, buf, sizeof buf));
}

bool is_ipv4_dotted(std::string_view s) {
  std::string text(s);
  in_addr a{};
  return inet_pton(AF_INET, text.c_str(), &a) == 1;
}

// A DNS name: labels of 1-63 letters, digits, '-' or '_' (seen in real service names), not starting
// or ending with '-', 253 characters at most. The last label must not be all digits: such a "name"
// is an IPv4 address in a notation the C library would still accept (127.1, 2130706433).
Status check_dns_name(std::string_view spec, std::string_view name) {
  if (name.empty() || name.size() > 253)
    return fail(ErrorKind::InvalidInput, "invalid host '{}': a host name is 1-253 characters; {}", spec, kSyntax);
  size_t start = 0;
  std::string_view last;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    auto label = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63)
      return fail(ErrorKind::InvalidInput, "invalid host '{}': empty or over-long label; {}", spec, kSyntax);
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
        return fail(ErrorKind::InvalidInput, "invalid host '{}': '{}' is not allowed in a host name; {}", spec,
                    c, kSyntax);
    }
    if (label.front() == '-' || label.back() == '-')
      return fail(ErrorKind::InvalidInput, "invalid host '{}': a label cannot start or end with '-'", spec);
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (std::all_of(last.begin(), last.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return fail(ErrorKind::InvalidInput,
                "invalid host '{}': write an IPv4 address as four decimal numbers (e.g. 10.1.2.3)", spec);
  return {};
}

// A binding may not cover a public suffix (ICANN or private section: co.uk, github.io): anyone can
// register a name under one, so the secret would go to every tenant there. A wildcard's suffix counts
// with the list's implicit rule (a bare top-level name is one too); an exact name only by an explicit
// rule (a name such as "localhost" is not a suffix anyone registers under).
Status refuse_public_suffix(std::string_view spec, const std::string& name, bool wildcard) {
  auto psl = PublicSuffixList::system();
  if (!psl) return std::unexpected(psl.error());
  if (wildcard ? (*psl)->is_public_suffix(name) : (*psl)->listed(name))
    return fail(ErrorKind::InvalidInput,
                "invalid host '{}': {} is a public suffix (anyone can register a name under it), so the secret would "
                "go to every tenant there; bind the names that need it{}",
                spec, name, wildcard ? fmt::format(" (e.g. myproject.{})", name) : "");
  return {};
}

}  // namespace

std::string normalize_host(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.find(':') != std::string_view::npos) {
    if (auto v6 = canonical_ipv6(host)) return *v6;
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return ascii_lower(host);
}

std::string HostPattern::text() const {
  std::string h = kind == Kind::Subdomains ? "*." + host : host;
  if (host.find(':') != std::string::npos) h = port ? "[" + h + "]" : h;
  if (port) h += fmt::format(":{}", *port);
  return h;
}

bool HostPattern::matches(std::string_view asked, uint16_t asked_port) const {
  if (port && *port != asked_port) return false;
  std::string h = normalize_host(asked);
  if (kind == Kind::Exact) return h == host;
  return h.size() > host.size() + 1 && h.ends_with(host) && h[h.size() - host.size() - 1] == '.';
}

Result<HostPattern> parse_host_pattern(std::string_view spec) {
  std::string_view s = spec;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (s.empty()) return fail(ErrorKind::InvalidInput, "empty host pattern; {}", kSyntax);
  if (auto slash = s.find('/'); slash != std::string_view::npos) {
    auto rest = s.substr(slash + 1);
    if (!rest.empty() && std::all_of(rest.begin(), rest.end(), [](unsigned char c) { return std::isdigit(c); }))
      return fail(ErrorKind::InvalidInput,
                  "invalid host '{}': a secret is bound to hosts, not address ranges; list each address", spec);
    return fail(ErrorKind::InvalidInput, "invalid host '{}': a host pattern has no path; {}", spec, kSyntax);
  }

  HostPattern p;
  std::string_view host = s, port_text;
  if (s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos)
      return fail(ErrorKind::InvalidInput, "invalid host '{}': missing ']' after an IPv6 address", spec);
    host = s.substr(1, close - 1);
    auto rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return fail(ErrorKind::InvalidInput, "invalid host '{}': expected ':port' after ']'", spec);
      port_text = rest.substr(1);
      if (port_text.empty()) return fail(ErrorKind::InvalidInput, "invalid host '{}': empty port", spec);
    }
    if (!canonical_ipv6(host))
      return fail(ErrorKind::InvalidInput, "invalid host '{}': '{}' is not an IPv6 address", spec, host);
  } else if (std::count(s.begin(), s.end(), ':') > 1) {
    // A bare IPv6 address; its last group cannot be told from a port, so a port needs brackets.
    if (!canonical_ipv6(s))
      return fail(ErrorKind::InvalidInput, "invalid host '{}': not an IPv6 address (write [addr]:port for a port)",
                  spec);
  } else if (auto colon = s.rfind(':'); colon != std::string_view::npos) {
    host = s.substr(0, colon);
    port_text = s.substr(colon + 1);
    if (port_text.empty()) return fail(ErrorKind::InvalidInput, "invalid host '{}': empty port", spec);
  }

  // No port means HTTPS's: a credential is bound to one service, not to every port of a host.
  p.port = 443;
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || value == 0 || value > 65535)
      return fail(ErrorKind::InvalidInput, "invalid host '{}': port '{}' is not a number from 1 to 65535", spec,
                  port_text);
    p.port = static_cast<uint16_t>(value);
  }

  if (host == "*")
    return fail(ErrorKind::InvalidInput,
                "invalid host '{}': a secret cannot be bound to every host (it would be sent wherever an agent asks); "
                "name the hosts that need it",
                spec);
  if (host.starts_with("*.")) {
    p.kind = HostPattern::Kind::Subdomains;
    std::string suffix = normalize_host(host.substr(2));
    if (auto st = check_dns_name(spec, suffix); !st) return std::unexpected(st.error());
    if (suffix.find('.') == std::string::npos)
      return fail(ErrorKind::InvalidInput,
                  "invalid host '{}': a wildcard must name a domain below the top level (e.g. *.example.com)", spec);
    if (auto st = refuse_public_suffix(spec, suffix, true); !st) return std::unexpected(st.error());
    p.host = std::move(suffix);
    return p;
  }
  if (host.find('*') != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "invalid host '{}': '*' is only allowed as a leading '*.'; {}", spec, kSyntax);

  std::string h = normalize_host(host);
  if (h.find(':') != std::string::npos || is_ipv4_dotted(h)) {
    p.host = std::move(h);
    return p;
  }
  if (auto st = check_dns_name(spec, h); !st) return std::unexpected(st.error());
  if (auto st = refuse_public_suffix(spec, h, false); !st) return std::unexpected(st.error());
  p.host = std::move(h);
  return p;
}

}  // namespace moat::vault
