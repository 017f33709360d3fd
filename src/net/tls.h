#pragma once
// The TLS client rules every outbound connection moatd makes itself follows (the HTTP client, the
// WebSocket client): the host's default trust store plus an optional extra CA file (or only that file), TLS 1.2 or
// newer, the peer always verified; SNI for a name, and the certificate must name the host (or carry
// its IP address as a SAN, for an address literal, which gets no SNI per RFC 6066). Plain OpenSSL
// handles, so that both the poll-based HTTP client and asio::ssl (whose context and stream expose
// native_handle()) apply the same settings. The egress gateway checks its upstreams' certificates
// with expect_peer_identity too, so a name or an address is proven the same way everywhere.
#include <openssl/ssl.h>

#include <filesystem>
#include <string>

#include "base/result.h"

namespace moat::net {

struct TlsSettings {
  std::filesystem::path extra_ca_file;  // extra CAs to trust (tests, private setups)
  bool system_store = true;             // false: trust extra_ca_file only (a private log server's CA)
  std::string alpn;                     // one ALPN protocol to offer ("http/1.1": HTTP and WebSocket); empty: none
};

// Sets a client context up by those rules. Errors: the host's store cannot be loaded
// (Unavailable); the CA file cannot be read as PEM certificates (InvalidInput, naming it).
Status configure_client_tls(SSL_CTX* ctx, const TlsSettings& settings);

// Sets SNI (for a name) and the name or address the peer's certificate must prove, on one connection
// before its handshake.
Status expect_peer_identity(SSL* ssl, const std::string& host);

// After a failed handshake: "certificate verification failed: <why>" when verification is what
// failed, else `fallback` (the handshake's own error text).
std::string tls_failure_text(SSL* ssl, std::string fallback);

}  // namespace moat::net
