// The one URL parser (src/net/url.h), fed hostile text: CONNECT authorities, absolute-URI HTTP
// requests, routes' upstream URLs, providers' base URLs, webhook callbacks, WebSocket URLs. What parses must print
// back to something that parses to the same thing.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "net/url.h"

using namespace moat::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto t = parse_authority(s, 443)) {
    auto again = parse_authority(authority_text(t->host, t->port), 443);
    if (!again || again->host != t->host || again->port != t->port) std::abort();
  }
  if (auto u = parse_url(s)) {
    auto again = parse_url(u->origin() + u->path);
    if (!again || again->scheme != u->scheme || again->host != u->host || again->port != u->port ||
        again->path != u->path)
      std::abort();
  }
  if (auto w = parse_websocket_url(s)) {
    auto again = parse_websocket_url(w->origin() + w->path);
    if (!again || again->scheme != w->scheme || again->host != w->host || again->port != w->port ||
        again->path != w->path)
      std::abort();
    if (parse_url(s)) std::abort();  // never both a WebSocket and an HTTP URL
  }
  (void)parse_absolute_http_uri(s);
  (void)parse_https_url(s);
  (void)find_query_param(s, "chat");
  return 0;
}
