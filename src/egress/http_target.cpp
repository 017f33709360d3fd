#include "egress/http_target.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace moat::egress {
namespace {

bool host_char_ok(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

}  // namespace

Result<Target> parse_authority(std::string_view a, uint16_t default_port) {
  Target t;
  std::string_view host, port;
  if (a.empty() || a.size() > 300) return fail(ErrorKind::InvalidInput, "empty or overlong host");
  if (a.front() == '[') {
    auto close = a.find(']');
    if (close == std::string_view::npos) return fail(ErrorKind::InvalidInput, "'{}': unclosed '[' in an IPv6 address", a);
    host = a.substr(1, close - 1);
    auto rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return fail(ErrorKind::InvalidInput, "'{}': expected ':port' after the IPv6 address", a);
      port = rest.substr(1);
    }
    if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
      return fail(ErrorKind::InvalidInput, "'{}' is not an IPv6 address", host);
  } else {
    auto colon = a.rfind(':');
    if (colon != std::string_view::npos) {
      if (a.find(':') != colon) return fail(ErrorKind::InvalidInput, "'{}': an IPv6 address must be in brackets", a);
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
    } else {
      host = a;
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), host_char_ok))
      return fail(ErrorKind::InvalidInput, "'{}' is not a valid host name", host);
  }
  if (!port.empty()) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535)
      return fail(ErrorKind::InvalidInput, "'{}' is not a port (1-65535)", port);
    t.port = static_cast<uint16_t>(v);
  } else if (default_port) {
    t.port = default_port;
  } else {
    return fail(ErrorKind::InvalidInput, "'{}' names no port", a);
  }
  t.host.reserve(host.size());
  for (char c : host) t.host.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  while (!t.host.empty() && t.host.back() == '.') t.host.pop_back();
  if (t.host.empty()) return fail(ErrorKind::InvalidInput, "'{}' is not a valid host name", a);
  // DNS's limit, on the host alone: the whole authority's length once let a 298-character name
  // through without a port and refused it with one (found by fuzz/fuzz_http_target).
  if (t.host.size() > 253) return fail(ErrorKind::InvalidInput, "the host name is {} characters; at most 253", t.host.size());
  return t;
}

namespace {

Result<Target> parse_uri(std::string_view uri, std::string_view scheme, uint16_t default_port) {
  if (uri.size() < scheme.size() ||
      !std::equal(scheme.begin(), scheme.end(), uri.begin(), [](char s, char u) { return s == std::tolower(static_cast<unsigned char>(u)); }))
    return fail(ErrorKind::InvalidInput, "'{}' does not start with {}", uri.substr(0, 64), scheme);
  auto rest = uri.substr(scheme.size());
  auto slash = rest.find_first_of("/?#");
  auto authority = rest.substr(0, slash);
  if (authority.find('@') != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "user information in a URL ('user@host') is not forwarded");
  auto t = parse_authority(authority, default_port);
  if (!t) return t;
  if (slash == std::string_view::npos) {
    t->path = "/";
  } else {
    auto path = rest.substr(slash);
    if (auto hash = path.find('#'); hash != std::string_view::npos) path = path.substr(0, hash);
    t->path = path.starts_with('/') ? std::string(path) : "/" + std::string(path);
  }
  return t;
}

}  // namespace

Result<Target> parse_absolute_http_uri(std::string_view uri) { return parse_uri(uri, "http://", 80); }
Result<Target> parse_https_url(std::string_view url) { return parse_uri(url, "https://", 443); }

std::string authority_text(std::string_view host, uint16_t port) {
  if (host.find(':') != std::string_view::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

}  // namespace moat::egress
