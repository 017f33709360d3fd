#include "config/audit_sink.h"

#include "net/url.h"

namespace moat {

namespace {
constexpr std::string_view kSyslogTcp = "syslog+tcp://", kSyslogTls = "syslog+tls://";
constexpr std::string_view kForms =
    "an absolute path of a file moatd appends checkpoints to, such as \"/var/log/moat/audit-checkpoints.jsonl\", or "
    "a syslog server as \"syslog+tcp://HOST:PORT\" or \"syslog+tls://HOST:PORT\"";
}  // namespace

std::string AuditSink::text() const {
  switch (kind) {
    case Kind::None: return {};
    case Kind::File: return file.string();
    case Kind::SyslogTcp: return fmt::format("{}{}", kSyslogTcp, net::authority_text(host, port));
    case Kind::SyslogTls: return fmt::format("{}{}", kSyslogTls, net::authority_text(host, port));
  }
  return {};
}

Result<AuditSink> parse_audit_sink(std::string_view text) {
  AuditSink sink;
  if (text.starts_with('/')) {
    sink.kind = AuditSink::Kind::File;
    sink.file = std::filesystem::path(text);
    return sink;
  }
  bool tls = text.starts_with(kSyslogTls);
  if (tls || text.starts_with(kSyslogTcp)) {
    std::string_view scheme = tls ? kSyslogTls : kSyslogTcp;
    auto rest = text.substr(scheme.size());
    if (auto end = rest.find_first_of("/?#@"); end != std::string_view::npos)
      return fail(ErrorKind::InvalidInput, "'{}': a syslog sink is just \"{}HOST:PORT\" (no path, query or user)", text,
                  scheme);
    auto hp = net::parse_authority(rest);  // no default port: the operator names the server's
    if (!hp)
      return fail(ErrorKind::InvalidInput, "'{}': {}; expected \"{}HOST:PORT\"", text, hp.error().message, scheme);
    sink.kind = tls ? AuditSink::Kind::SyslogTls : AuditSink::Kind::SyslogTcp;
    sink.host = std::move(hp->host);
    sink.port = hp->port;
    return sink;
  }
  return fail(ErrorKind::InvalidInput, "must be {}, not '{}'", kForms, text);
}

}  // namespace moat
