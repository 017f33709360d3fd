#pragma once
// Where moatd ships its signed audit checkpoints: [audit] sink in moat.toml, parsed once into a
// typed value (docs/config.md, docs/security.md "Signed audit checkpoints").
//   "/var/log/moat/checkpoints.jsonl"   a file moatd appends to (an absolute path)
//   "syslog+tcp://HOST:PORT"            a syslog server: RFC 5424 over TCP, RFC 6587 octet counting
//   "syslog+tls://HOST:PORT"            the same over TLS (RFC 5425), the server's certificate checked
//                                       against [audit] sink_ca_file, or the host's CA store
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat {

struct AuditSink {
  enum class Kind {
    None,       // checkpoints are kept in the store only
    File,       // `file`
    SyslogTcp,  // `host`:`port`
    SyslogTls,  // `host`:`port`, verified against `ca_file` (empty: the host's CA store)
  };
  Kind kind = Kind::None;
  std::filesystem::path file;
  std::string host;  // a name or an address (IPv6 without brackets)
  uint16_t port = 0;
  std::filesystem::path ca_file;  // [audit] sink_ca_file: the only CAs trusted for a TLS server

  // As an operator writes it in moat.toml: the path or the URL; empty for None.
  std::string text() const;
};

// A file sink at `path` (for code that has a path already, such as tests).
inline AuditSink file_sink(std::filesystem::path path) {
  return AuditSink{.kind = AuditSink::Kind::File, .file = std::move(path)};
}

// A value of [audit] sink (ca_file stays empty); InvalidInput saying which forms are accepted.
Result<AuditSink> parse_audit_sink(std::string_view text);

}  // namespace moat
