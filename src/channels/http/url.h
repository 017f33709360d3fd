#pragma once
// Small URL pieces the channels need: query parameters and http:// URLs for webhook callbacks.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::channels::http {

// %XX and '+' decoded. Malformed escapes are kept as they are.
std::string percent_decode(std::string_view s);
std::string percent_encode(std::string_view s);  // everything but unreserved characters
std::optional<std::string> find_query_param(std::string_view query, std::string_view name);

struct HttpUrl {
  std::string host;  // without brackets for IPv6
  uint16_t port = 80;
  std::string target;  // "/path?query", at least "/"
};
// Only "http://host[:port][/path]" (no userinfo, no fragment).
Result<HttpUrl> parse_http_url(std::string_view url);
// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host);

}  // namespace moat::channels::http
