// The gateway's TLS ClientHello parser (SNI of a CONNECT tunnel's first bytes), on any bytes.
// Besides crashes and undefined behaviour: a prefix it has already decided on must not change its
// mind when more bytes arrive.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "egress/client_hello.h"

using namespace moat::egress;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto all = parse_client_hello(std::span<const uint8_t>(data, size));
  (void)hello_status_name(all.status);
  for (size_t cut : {size / 2, size / 3, size > 0 ? size - 1 : 0}) {
    auto pre = parse_client_hello(std::span<const uint8_t>(data, cut));
    if (pre.status != HelloStatus::NeedMore && (pre.status != all.status || pre.sni != all.sni)) std::abort();
  }
  return 0;
}
