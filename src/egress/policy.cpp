#include "egress/policy.h"


#include <algorithm>
#include <array>
#include <charconv>

#include <fmt/format.h>

#include "base/text.h"

namespace moat::egress {

namespace {

constexpr std::string_view kExpected =
    "expected a host such as api.example.com, *.example.com, *, 10.1.2.3, 10.0.0.0/8 or [fd00::1], "
    "optionally followed by :PORT";

// Hosts come from the agent and end up in a 403 body and the audit log: keep them printable and short.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 255)) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u >= 0x7f ? '?' : c);
  }
  if (s.size() > 255) out += "...";
  return out;
}

// "host:port" with IPv6 literals bracketed, as a rule or a URL would write it.
std::string host_port(std::string_view host, uint16_t port) {
  if (host.find(':') != std::string_view::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::optional<uint16_t> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 1 || v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

// A DNS host name (already lower-cased): 1..253 characters, labels of 1..63 letters, digits, '-' or
// '_' (the latter appears in real service names). A name whose last label is all digits can only be a
// botched IP address, so it is refused rather than silently treated as a name.
std::optional<std::string> name_error(std::string_view name) {
  if (name.empty()) return "the host name is empty";
  if (name.size() > 253) return "a host name is at most 253 characters";
  size_t start = 0;
  bool last_all_digits = true;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    size_t end = dot == std::string_view::npos ? name.size() : dot;
    std::string_view label = name.substr(start, end - start);
    if (label.empty()) return "a host name cannot have an empty label (two dots in a row, or a leading dot)";
    if (label.size() > 63) return "a label of a host name is at most 63 characters";
    last_all_digits = true;
    for (char c : label) {
      bool digit = c >= '0' && c <= '9';
      if (!(digit || (c >= 'a' && c <= 'z') || c == '-' || c == '_'))
        return fmt::format("'{}' is not allowed in a host name", printable(std::string_view(&c, 1)));
      if (!digit) last_all_digits = false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (last_all_digits) return "it is neither a valid IP address nor a host name";
  return std::nullopt;
}

bool same_bytes(const net::IpAddress& x, const net::IpAddress& y) {
  if (x.is_v4() && y.is_v4()) return x.to_v4() == y.to_v4();
  if (x.is_v6() && y.is_v6()) return x.to_v6().to_bytes() == y.to_v6().to_bytes();
  return false;
}

bool in_network(const net::IpAddress& a, const net::IpAddress& net, unsigned prefix) {
  auto check = [&](const auto& ab, const auto& nb) {
    unsigned full = prefix / 8, rest = prefix % 8;
    for (unsigned i = 0; i < full; ++i)
      if (ab[i] != nb[i]) return false;
    if (rest == 0) return true;
    auto mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (ab[full] & mask) == (nb[full] & mask);
  };
  if (a.is_v4() && net.is_v4()) return check(a.to_v4().to_bytes(), net.to_v4().to_bytes());
  if (a.is_v6() && net.is_v6()) return check(a.to_v6().to_bytes(), net.to_v6().to_bytes());
  return false;
}

// A CIDR's network part is written strictly (dotted quad or inet_pton IPv6): "10/8" in inet_aton
// reading would be 0.0.0.10/8, which is never what anyone means.
Result<Rule> parse_cidr(Rule r, std::string_view spec, std::string_view host) {
  size_t slash = host.find('/');
  std::string net_text(host.substr(0, slash));
  std::string_view len_text = host.substr(slash + 1);
  boost::system::error_code ec;
  net::IpAddress net = boost::asio::ip::make_address(net_text, ec);
  if (ec || net_text.find('%') != std::string::npos)
    return fail(ErrorKind::InvalidInput,
                "egress rule \"{}\": \"{}\" is not an IP address; a range is written like 10.0.0.0/8 or fd00::/8",
                printable(spec), printable(net_text));
  unsigned max = net.is_v4() ? 32 : 128;
  if (net.is_v6() && len_text.find(':') != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "egress rule \"{}\": to give a port with an IPv6 range, bracket the range: [{}/{}]:{}",
                printable(spec), net::format_address(net), printable(len_text.substr(0, len_text.find(':'))),
                printable(len_text.substr(len_text.find(':') + 1)));
  unsigned len = 0;
  auto [p, perr] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (len_text.empty() || perr != std::errc() || p != len_text.data() + len_text.size() || len > max)
    return fail(ErrorKind::InvalidInput, "egress rule \"{}\": the prefix length after / must be a number from 0 to {}",
                printable(spec), max);
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8: keep one spelling so it matches IPv4 and mapped addresses alike.
  if (net.is_v6() && net.to_v6().is_v4_mapped() && len >= 96) {
    net = net::unmap(net);
    len -= 96;
  }
  // Host bits set ("10.0.0.5/8") is most likely a typo for either the network or one address: say both.
  auto clear_host_bits = [len](auto bytes) {
    for (unsigned bit = len; bit < bytes.size() * 8; ++bit) bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    return bytes;
  };
  net::IpAddress masked = net.is_v4() ? net::IpAddress(boost::asio::ip::address_v4(clear_host_bits(net.to_v4().to_bytes())))
                                 : net::IpAddress(boost::asio::ip::address_v6(clear_host_bits(net.to_v6().to_bytes())));
  if (masked != net)
    return fail(ErrorKind::InvalidInput,
                "egress rule \"{}\": {} has bits set beyond the /{} prefix; write the network address ({}/{}) or, for "
                "one address, leave out the /{}",
                printable(spec), net::format_address(net), len, net::format_address(masked), len, len);
  r.kind = PatternKind::Cidr;
  r.address = net;
  r.prefix = len;
  r.pattern = fmt::format("{}/{}", net::format_address(net), len);
  return r;
}

struct PresetDef {
  std::string_view name;
  std::vector<Rule> rules;
};

std::vector<Rule> make_balanced() {
  static constexpr std::array<std::string_view, 15> kHosts = {
      "api.anthropic.com",                                                   // Anthropic
      "api.openai.com",                                                      // OpenAI
      "deb.debian.org",         "security.debian.org", "*.debian.org",       // Debian
      "registry.npmjs.org",     "*.npmjs.org",         "*.npmjs.com",        // npm
      "pypi.org",               "files.pythonhosted.org", "*.pythonhosted.org",  // PyPI
      "github.com",             "*.github.com",        "*.githubusercontent.com", "codeload.github.com",  // GitHub
  };
  std::vector<Rule> out;
  for (auto h : kHosts)
    for (uint16_t port : {443, 80}) out.push_back(*parse_rule(RuleAction::Allow, fmt::format("{}:{}", h, port)));
  return out;
}

const std::vector<PresetDef>& presets() {
  static const std::vector<PresetDef> kPresets = {
      {"locked", {}},
      {"balanced", make_balanced()},
      {"open", {*parse_rule(RuleAction::Allow, "*")}},
  };
  return kPresets;
}

const std::vector<Rule>* find_preset(std::string_view name) {
  for (const auto& p : presets())
    if (p.name == name) return &p.rules;
  return nullptr;
}

std::string hint(const Policy& policy, std::string_view endpoint, bool explicitly = false) {
  return fmt::format("allow it{} with `moat policy allow {} {}`", explicitly ? " explicitly" : "",
                     policy.agent.empty() ? "AGENT" : printable(policy.agent), endpoint);
}

}  // namespace

std::string Rule::spec() const {
  if (!port) return pattern;
  if (pattern.find(':') != std::string::npos) return fmt::format("[{}]:{}", pattern, *port);
  return fmt::format("{}:{}", pattern, *port);
}

std::string Rule::text() const { return fmt::format("{} {}", action == RuleAction::Allow ? "allow" : "deny", spec()); }

bool Rule::matches_address(const net::IpAddress& a, uint16_t p) const {
  if (port && *port != p) return false;
  if (!address) return false;
  net::IpAddress u = net::unmap(a);
  if (kind == PatternKind::Ip) return same_bytes(u, *address);
  if (kind == PatternKind::Cidr) return in_network(u, *address, prefix);
  return false;
}

bool Rule::matches_host(std::string_view host, uint16_t p) const {
  if (port && *port != p) return false;
  if (kind == PatternKind::Any) return true;
  if (auto ip = net::parse_ip_literal(host)) return matches_address(*ip, p);
  if (kind != PatternKind::Exact && kind != PatternKind::Wildcard) return false;
  std::string name = normalize_host(host);
  if (kind == PatternKind::Exact) return name == pattern;
  std::string_view suffix = std::string_view(pattern).substr(1);  // ".example.com"
  return name.size() > suffix.size() && name.ends_with(suffix);
}

Result<Rule> parse_rule(RuleAction action, std::string_view raw) {
  std::string_view spec = trim_space(raw);
  Rule r;
  r.action = action;
  if (spec.empty()) return fail(ErrorKind::InvalidInput, "empty egress rule; {}", kExpected);
  if (spec.find("://") != std::string_view::npos)
    return fail(ErrorKind::InvalidInput,
                "egress rule \"{}\" is a URL; write only the host and optionally the port, e.g. api.example.com:443",
                printable(spec));

  // Split host and port. Brackets mark IPv6; an unbracketed host with several colons is a bare IPv6
  // address (or range) and has no port.
  std::string_view host = spec;
  std::optional<std::string_view> port_text;
  bool bracketed = false;
  if (spec.front() == '[') {
    size_t close = spec.find(']');
    if (close == std::string_view::npos)
      return fail(ErrorKind::InvalidInput, "egress rule \"{}\": missing ] after the IPv6 address", printable(spec));
    host = spec.substr(1, close - 1);
    std::string_view rest = spec.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':')
        return fail(ErrorKind::InvalidInput, "egress rule \"{}\": only :PORT may follow ]", printable(spec));
      port_text = rest.substr(1);
    }
    bracketed = true;
  } else if (size_t colon = spec.find(':'); colon != std::string_view::npos && spec.find(':', colon + 1) == std::string_view::npos) {
    host = spec.substr(0, colon);
    port_text = spec.substr(colon + 1);
  }
  if (port_text) {
    r.port = parse_port(*port_text);
    if (!r.port)
      return fail(ErrorKind::InvalidInput, "egress rule \"{}\": the port must be a number from 1 to 65535, not \"{}\"",
                  printable(spec), printable(*port_text));
  }
  if (host.empty()) return fail(ErrorKind::InvalidInput, "egress rule \"{}\" has no host; {}", printable(spec), kExpected);
  for (char c : host)
    if (c == ' ' || c == '\t' || static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      return fail(ErrorKind::InvalidInput, "egress rule \"{}\" contains a space or control character; {}",
                  printable(spec), kExpected);

  if (host == "*") {
    if (bracketed) return fail(ErrorKind::InvalidInput, "egress rule \"{}\": brackets hold an IPv6 address, not *", printable(spec));
    r.kind = PatternKind::Any;
    r.pattern = "*";
    return r;
  }
  if (host.find('/') != std::string_view::npos) {
    auto c = parse_cidr(r, spec, host);
    if (c && bracketed && !c->address->is_v6())
      return fail(ErrorKind::InvalidInput, "egress rule \"{}\": brackets are only for IPv6 addresses", printable(spec));
    return c;
  }
  if (auto ip = net::parse_ip_literal(host)) {
    if (bracketed && !ip->is_v6())
      return fail(ErrorKind::InvalidInput, "egress rule \"{}\": brackets are only for IPv6 addresses", printable(spec));
    r.kind = PatternKind::Ip;
    r.address = net::unmap(*ip);
    if (r.address->is_v6()) r.address = net::IpAddress(boost::asio::ip::address_v6(r.address->to_v6().to_bytes()));  // no zone
    r.pattern = net::format_address(*r.address);
    return r;
  }
  if (bracketed)
    return fail(ErrorKind::InvalidInput, "egress rule \"{}\": \"{}\" in brackets is not an IPv6 address", printable(spec),
                printable(host));
  if (host.find(':') != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "egress rule \"{}\" is not a valid IPv6 address; {}", printable(spec), kExpected);

  std::string name = ascii_lower(host);
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  bool wildcard = name.starts_with("*.");
  std::string_view base = wildcard ? std::string_view(name).substr(2) : std::string_view(name);
  if (base.find('*') != std::string_view::npos)
    return fail(ErrorKind::InvalidInput,
                "egress rule \"{}\": * may only stand alone or as the whole first label, as in *.example.com",
                printable(spec));
  if (auto err = name_error(base))
    return fail(ErrorKind::InvalidInput, "egress rule \"{}\": {}; {}", printable(spec), *err, kExpected);
  r.kind = wildcard ? PatternKind::Wildcard : PatternKind::Exact;
  r.pattern = std::move(name);
  return r;
}

Result<std::vector<Rule>> preset_rules(std::string_view preset) {
  if (const auto* rules = find_preset(preset)) return *rules;
  return fail(ErrorKind::InvalidInput, "unknown egress preset \"{}\"; expected locked, balanced or open", printable(preset));
}

std::span<const std::string_view> preset_names() {
  static constexpr std::array<std::string_view, 3> kNames = {"locked", "balanced", "open"};
  return kNames;
}

std::string normalize_host(std::string_view host) {
  if (auto ip = net::parse_ip_literal(host)) return net::format_address(*ip);
  std::string name = ascii_lower(host);
  if (name.size() > 1 && name.back() == '.') name.pop_back();
  return name;
}

Decision check_host(const Policy& policy, std::string_view host, uint16_t port) {
  const std::string endpoint = printable(host_port(normalize_host(host), port));
  for (const auto& r : policy.rules)
    if (r.action == RuleAction::Deny && r.matches_host(host, port))
      return {false, r.text(), fmt::format("egress to {} refused by rule `{}`", endpoint, r.text())};
  for (const auto& r : policy.rules)
    if (r.action == RuleAction::Allow && r.matches_host(host, port))
      return {true, r.text(), fmt::format("egress to {} allowed by rule `{}`", endpoint, r.text())};
  if (const auto* preset = find_preset(policy.preset)) {
    for (const auto& r : *preset)
      if (r.action == RuleAction::Allow && r.matches_host(host, port)) {
        std::string rule = fmt::format("preset {}: {}", policy.preset, r.text());
        return {true, rule, fmt::format("egress to {} allowed by `{}`", endpoint, rule)};
      }
  }
  std::string preset_note = find_preset(policy.preset)
                                ? fmt::format("preset {}", policy.preset)
                                : fmt::format("unknown preset \"{}\" counts as locked", printable(policy.preset));
  return {false, "default deny",
          fmt::format("egress to {} refused: no rule allows it ({}, default deny); {}", endpoint, preset_note,
                      hint(policy, endpoint))};
}

Decision check_address(const Policy& policy, const net::IpAddress& address, uint16_t port, std::span<const net::IpAddress> own) {
  const std::string endpoint = net::format_endpoint(address, port);
  std::optional<net::IpAddress> embedded;
  if (address.is_v6())
    if (auto e = net::embedded_ipv4(address.to_v6())) embedded = net::IpAddress(*e);
  for (const auto& r : policy.rules)
    if (r.action == RuleAction::Deny && (r.matches_address(address, port) || (embedded && r.matches_address(*embedded, port))))
      return {false, r.text(), fmt::format("egress to {} refused by rule `{}`", endpoint, r.text())};

  net::AddressClass cls = net::classify(address, own);
  std::string_view what = net::address_class_phrase(cls);
  if (cls == net::AddressClass::Public) return {true, std::string(what), fmt::format("egress to {} allowed: {}", endpoint, what)};
  for (const auto& r : policy.rules)
    if (r.action == RuleAction::Allow && r.port && (r.kind == PatternKind::Ip || r.kind == PatternKind::Cidr) &&
        r.matches_address(address, port))
      return {true, r.text(), fmt::format("egress to {} allowed by rule `{}` ({} allowed explicitly)", endpoint, r.text(), what)};
  if (cls == net::AddressClass::Metadata)  // not worth advertising how to open this one
    return {false, std::string(what), fmt::format("egress to {} refused: {}", endpoint, what)};
  return {false, std::string(what),
          fmt::format("egress to {} refused: {}; {}", endpoint, what,
                      hint(policy, net::format_endpoint(net::unmap(address), port), true))};
}

}  // namespace moat::egress
