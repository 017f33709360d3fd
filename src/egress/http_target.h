#pragma once
// Where a proxied request wants to go, parsed from what the client sent: the authority of a CONNECT
// ("host:port", "[v6]:port"), an absolute URI ("http://host[:port]/path"), or a route's upstream URL
// ("https://host[:port][/prefix]"). Host names come back lower-case without a trailing dot; IPv6
// literals without brackets. Hostile input gets an error, never a guess.
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::egress {

struct Target {
  std::string host;
  uint16_t port = 0;
  std::string path;  // origin-form ("/..." with the query), for URIs; empty for an authority
};

Result<Target> parse_authority(std::string_view authority, uint16_t default_port = 0);
// "http://..." only: a proxy client sends https:// URLs through CONNECT, never in the clear.
Result<Target> parse_absolute_http_uri(std::string_view uri);
Result<Target> parse_https_url(std::string_view url);
// "host:port" with IPv6 brackets, as written in Host headers and messages.
std::string authority_text(std::string_view host, uint16_t port);

}  // namespace moat::egress
