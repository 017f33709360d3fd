#pragma once
// The shape a request must have before the gateway puts a credential into it (inside an intercepted
// TLS session, or on a base-URL route). Front ends route on things other than the connection: an
// absolute-form target (`GET https://other.example/x`), the last of two Host headers (RFC 9112
// §3.2.2), a body framed two ways (Content-Length and Transfer-Encoding: request smuggling). Any of
// those could carry the real credential to a tenant the policy never named, so each is refused here,
// in one place, before any credential is set.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <utility>  // before beast: boost 1.74's headers use std::exchange without including it
#include <boost/beast/http/message.hpp>

namespace moat::egress {

// Where the request is about to go with a credential.
struct CredentialDestination {
  std::string host;
  uint16_t port = 0;
  // Inside interception the client's Host must name the bound host; a route's client names the proxy
  // (the gateway sets the upstream's Host itself), so there only the count is checked.
  bool host_must_match = true;
};

// Why `req` may not carry a credential to `dest`, or nothing when it may: origin-form targets only
// (or `*` with OPTIONS), exactly one Host (equal to the bound host where `host_must_match`), no
// CONNECT, one Content-Length at most and never with Transfer-Encoding.
std::optional<std::string> credential_request_refusal(const boost::beast::http::request_header<>& req,
                                                      const CredentialDestination& dest);

}  // namespace moat::egress
