#pragma once
// Where the Checkpointer ships each signed checkpoint ([audit] sink, config/audit_sink.h): the copy
// that someone who can rewrite the state directory cannot rewrite too.
//
// A file: one JSON line per checkpoint, appended (O_APPEND, fsync'ed). The file is opened for each
// checkpoint (O_WRONLY|O_APPEND|O_CREAT, 0600 when created, no symlink followed), so a log rotator
// may move it at any time.
//
// A syslog server (syslog+tcp://HOST:PORT, or syslog+tls:// for TLS as RFC 5425 has it, the server's
// certificate verified against [audit] sink_ca_file only, or the host's store without one): one RFC
// 5424 message per checkpoint over one connection kept open, framed by octet counting (RFC 6587
// 3.4.1, RFC 5425 4.3: "<length> <message>"):
//   <109>1 2026-12-07T20:37:47.123456Z myhost moat 4242 checkpoint - {"type":"checkpoint",...}
// PRI 109 = facility 13 (log audit) * 8 + severity 5 (notice); APP-NAME moat; PROCID moatd's pid;
// MSGID checkpoint; no structured data; the MSG is the checkpoint's JSON line (ASCII). TIMESTAMP is
// when the checkpoint was signed, to the microsecond (RFC 5424 allows no more). A receiver sends
// nothing back, so delivery is at most once: a checkpoint written just as the server dies is lost,
// and the next one, which covers every record the lost one did, is what proves them.
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "audit/checkpoint.h"
#include "base/result.h"
#include "config/audit_sink.h"

namespace moat {

class CheckpointSink {
 public:
  virtual ~CheckpointSink() = default;
  // At moatd's start: can checkpoints be shipped (the file can be appended to, the server accepts a
  // connection)? An error names the sink and what to do.
  virtual Status check() = 0;
  // Ships one checkpoint, within the sink's deadline. An error names the sink.
  virtual Status ship(const Checkpoint& cp) = 0;
};

// `timeout` bounds each connect and each write to a network sink. Null for AuditSink::Kind::None.
std::unique_ptr<CheckpointSink> make_checkpoint_sink(const AuditSink& sink, std::chrono::milliseconds timeout);

// The RFC 5424 message for a checkpoint (above), without framing. `hostname` is "-" when empty or
// not printable ASCII.
std::string syslog_checkpoint_message(const Checkpoint& cp, std::string_view hostname, long pid);

}  // namespace moat
