#pragma once
// OpenSSL reports why a call failed on a per-thread error queue. tls_errors() empties that queue
// into one line for a message ("error:0A000086:SSL routines::certificate verify failed; ..."), so
// a later failure on the same thread does not report this one's causes. Used wherever moatd calls
// OpenSSL: the HTTP client, the egress gateway's certificate authority.
#include <string>

namespace moat::net {

// "; "-separated, oldest first; "no detail from OpenSSL" when the queue was empty.
std::string tls_errors();

}  // namespace moat::net
