// The gateway's parsing of request targets: CONNECT authorities, absolute-URI HTTP requests and the
// https URLs of routes. What parses must print back to something that parses to the same target.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "egress/http_target.h"

using namespace moat::egress;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto t = parse_authority(s, 443)) {
    auto again = parse_authority(authority_text(t->host, t->port), 443);
    if (!again || again->host != t->host || again->port != t->port) std::abort();
  }
  (void)parse_absolute_http_uri(s);
  (void)parse_https_url(s);
  return 0;
}
