#pragma once
// The first bytes a client sends through a CONNECT tunnel: is it TLS, and which server name (SNI)
// does it ask for? The gateway compares that name with the CONNECT host to refuse domain fronting.
// The input is hostile: every read is bounds-checked, nothing is trusted, nothing is allocated in
// proportion to a claimed length beyond kClientHelloMaxBytes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace moat::egress {

enum class HelloStatus {
  NeedMore,   // consistent so far but incomplete: read more and call again with everything so far
  Tls,        // a complete, well-formed ClientHello
  NotTls,     // the first byte is not a TLS handshake record
  Malformed,  // claims to be TLS but is not a well-formed ClientHello (or is larger than we accept)
};

struct HelloInfo {
  HelloStatus status = HelloStatus::NeedMore;
  std::string sni;  // lower-case host_name without trailing dot; empty if the hello carries none
};

// The most input the parser ever needs: a ClientHello of up to 16 KiB, possibly split over several
// TLS records (each with a 5-byte header). A caller that has buffered this much and still gets
// NeedMore cannot happen — parse_client_hello says Malformed before that.
inline constexpr size_t kClientHelloMaxBytes = 32 * 1024;

// Parses TLS records (content type 22, record version 0x0300..0x0304, at most 2^14 bytes each) and
// reassembles the handshake message they carry; it must be a ClientHello (type 1). Walks session id,
// cipher suites, compression methods and extensions; a server_name extension must hold exactly one
// host_name of letters, digits, '-', '_' and '.'. Duplicate extensions or trailing bytes inside the
// message are Malformed. Bytes after the ClientHello are ignored.
HelloInfo parse_client_hello(std::span<const uint8_t> data);

const char* hello_status_name(HelloStatus s);

}  // namespace moat::egress
