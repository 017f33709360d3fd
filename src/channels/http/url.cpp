#include "channels/http/url.h"

#include <charconv>

#include <fmt/format.h>

namespace moat::channels::http {

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::optional<std::string> find_query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    size_t eq = part.find('=');
    std::string key = percent_decode(part.substr(0, eq));
    if (key == name) return eq == std::string_view::npos ? std::string{} : percent_decode(part.substr(eq + 1));
  }
  return std::nullopt;
}

Result<HttpUrl> parse_http_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme)) return fail(ErrorKind::InvalidInput, "'{}' is not an http:// URL", url);
  std::string_view rest = url.substr(scheme.size());
  size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view target = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (target.find('#') != std::string_view::npos) target = target.substr(0, target.find('#'));
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return fail(ErrorKind::InvalidInput, "URL '{}' has no host (or has user info)", url);
  }
  HttpUrl u;
  std::string_view port_text;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return fail(ErrorKind::InvalidInput, "URL '{}': unclosed '['", url);
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail(ErrorKind::InvalidInput, "URL '{}': junk after host", url);
      port_text = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (u.host.empty()) return fail(ErrorKind::InvalidInput, "URL '{}' has no host", url);
  if (!port_text.empty()) {
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), p);
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || p == 0 || p > 65535) {
      return fail(ErrorKind::InvalidInput, "URL '{}' has a bad port", url);
    }
    u.port = static_cast<uint16_t>(p);
  }
  u.target = target.empty() ? "/" : std::string(target);
  if (u.target.front() == '?') u.target = "/" + u.target;
  return u;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "::1") return true;
  // 127.x.y.z, written as a dotted quad
  if (!host.starts_with("127.")) return false;
  int parts = 0;
  std::string_view rest = host;
  while (!rest.empty()) {
    size_t dot = rest.find('.');
    std::string_view p = rest.substr(0, dot);
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (p.empty() || ec != std::errc{} || ptr != p.data() + p.size() || v > 255) return false;
    ++parts;
    rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
    if (dot != std::string_view::npos && rest.empty()) return false;
  }
  return parts == 4;
}

}  // namespace moat::channels::http
