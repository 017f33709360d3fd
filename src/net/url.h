#pragma once
// The one URL parser. Everything in moatd that reads a URL or an authority uses it: the gateway for
// what a proxied client sent (a CONNECT authority "host:port" / "[v6]:port", an absolute URI
// "http://host[:port]/path") and for its routes' upstreams, the providers for their base_url, the
// webhook channel for callback URLs, the HTTP client for a proxy's URL. Its input is often hostile
// (fuzz/fuzz_url.cpp), so it is strict: one error, never a guess.
//
// Host names come back lower-case without a trailing dot; IPv6 literals without brackets. A host is
// letters, digits, '-', '.', '_' (or a bracketed IPv6 literal): no user information ("user@host"),
// no percent-encoding, no spaces. A URL's fragment is dropped; its path keeps the query.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::net {

// Ws and Wss are WebSocket URLs (RFC 6455 section 3): only parse_websocket_url (or parse_url with
// `only` set to one of them) yields them, so a place that takes an HTTP URL never gets one.
enum class Scheme { Http, Https, Ws, Wss };
std::string_view scheme_name(Scheme s);  // "http", "https", "ws", "wss"
uint16_t default_port(Scheme s);         // 80, 443, 80, 443

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

struct Url {
  Scheme scheme = Scheme::Http;
  std::string host;
  uint16_t port = 0;
  std::string path = "/";  // origin-form, with the query: "/", "/v1/messages?x=1"

  bool tls() const { return scheme == Scheme::Https || scheme == Scheme::Wss; }
  // As a Host header carries it: brackets for IPv6, the port omitted when it is the scheme's default.
  std::string authority() const;
  std::string origin() const;  // "https://host[:port]"
  // A base URL's path (without its trailing '/') followed by `suffix`: "https://h/v1/" + "/chat" ->
  // "/v1/chat".
  std::string join(std::string_view suffix) const;
};

// "host:port", "[v6]:port", or "host" with default_port (0 = a port is required).
Result<HostPort> parse_authority(std::string_view authority, uint16_t default_port = 0);
// "ADDRESS:PORT" for a server to listen on: the port is required and may be 0 (any free port).
Result<HostPort> parse_listen_address(std::string_view address);
// "http://..." or "https://..." (scheme case-insensitive), optional port and path.
Result<Url> parse_url(std::string_view url);
// "ws://..." or "wss://..." the same way (a WebSocket URL has no fragment: one is refused).
Result<Url> parse_websocket_url(std::string_view url);
// parse_url that accepts one scheme only. "http://" only for a proxy client's absolute URIs: a
// proxy client sends https:// URLs through CONNECT, never in the clear.
Result<Url> parse_url(std::string_view url, Scheme only);
inline Result<Url> parse_absolute_http_uri(std::string_view uri) { return parse_url(uri, Scheme::Http); }
inline Result<Url> parse_https_url(std::string_view url) { return parse_url(url, Scheme::Https); }

// "host:port" with IPv6 brackets, as written in CONNECT requests and messages.
std::string authority_text(std::string_view host, uint16_t port);

// Query strings: %XX and '+' decoded (malformed escapes kept as they are); encoding escapes
// everything but the unreserved characters.
std::string percent_decode(std::string_view s);
std::string percent_encode(std::string_view s);
std::optional<std::string> find_query_param(std::string_view query, std::string_view name);

}  // namespace moat::net
