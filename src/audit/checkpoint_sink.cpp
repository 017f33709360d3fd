#include "audit/checkpoint_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "audit/event.h"
#include "net/stream.h"
#include "base/unique_fd.h"

namespace moat {

namespace {

// RFC 5424: facility 13 ("log audit"), severity 5 ("notice").
constexpr int kFacility = 13, kSeverity = 5;
constexpr std::string_view kAppName = "moat", kMsgId = "checkpoint";

class FileSink final : public CheckpointSink {
 public:
  explicit FileSink(std::filesystem::path path) : path_(std::move(path)) {}

  Status check() override {
    auto fd = open();
    if (!fd) return std::unexpected(fd.error());
    return {};
  }

  Status ship(const Checkpoint& cp) override {
    auto fd = open();
    if (!fd) return std::unexpected(fd.error());
    std::string line = checkpoint_line(cp) + "\n";
    std::string_view rest = line;
    while (!rest.empty()) {
      ssize_t n = ::write(fd->get(), rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return fail(ErrorKind::Unavailable, "cannot append the checkpoint of record {} to the audit sink {}: {}",
                    cp.seq, path_.string(), strerror(errno));
      rest.remove_prefix(static_cast<size_t>(n));
    }
    if (::fsync(fd->get()) != 0 && errno != EINVAL)  // EINVAL: a pipe or character device, nothing to sync
      return fail(ErrorKind::Unavailable, "cannot sync the audit sink {}: {}", path_.string(), strerror(errno));
    return {};
  }

 private:
  Result<UniqueFd> open() const {
    // O_NONBLOCK: a FIFO planted at the path must not hang moatd.
    UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
    if (!fd) {
      int err = errno;
      if (err == ELOOP)
        return fail(ErrorKind::InvalidInput,
                    "[audit] sink {} is a symbolic link; moatd does not follow it (name the file itself)",
                    path_.string());
      return fail(ErrorKind::Unavailable,
                  "cannot open the audit checkpoint sink {} for appending: {} (create its directory, or fix [audit] "
                  "sink in moat.toml)",
                  path_.string(), strerror(err));
    }
    return fd;
  }

  std::filesystem::path path_;
};

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "-";
  return buf;
}

// One connection kept open between checkpoints; a closed one is noticed before the next write and
// opened again.
class SyslogSink final : public CheckpointSink {
 public:
  SyslogSink(AuditSink where, std::chrono::milliseconds timeout)
      : where_(std::move(where)), timeout_(timeout), hostname_(local_hostname()) {}

  Status check() override { return connect(); }

  Status ship(const Checkpoint& cp) override {
    // A receiver never writes, so anything readable is the server closing: a write into that
    // connection would be accepted by the kernel and lost.
    if (conn_ && conn_->peer_closed()) conn_.reset();
    if (!conn_) {
      if (auto st = connect(); !st) return st;
    }
    std::string msg = syslog_checkpoint_message(cp, hostname_, static_cast<long>(::getpid()));
    std::string frame = fmt::format("{} {}", msg.size(), msg);
    auto sent = conn_->write_all(frame, net::Clock::now() + timeout_, call());
    if (!sent) {
      conn_.reset();
      return fail(ErrorKind::Unavailable, "cannot send the checkpoint of record {} to the audit sink {}: {}", cp.seq,
                  where_.text(), sent.error().error.message);
    }
    return {};
  }

 private:
  Status connect() {
    bool tls = where_.kind == AuditSink::Kind::SyslogTls;
    // With sink_ca_file, its CAs are the only ones trusted: a private log server's CA, not the world's.
    std::optional<net::TlsContext> ctx;
    if (tls) {
      auto made = net::TlsContext::make({.extra_ca_file = where_.ca_file, .system_store = where_.ca_file.empty()});
      if (!made)
        return fail(ErrorKind::InvalidInput, "cannot use [audit] sink_ca_file for the audit checkpoint sink {}: {}",
                    where_.text(), made.error().error.message);
      ctx = std::move(*made);
    }
    net::Dialer direct;  // no proxy (HTTPS_PROXY is for https://), no address check: the operator named the server
    auto conn = net::Stream::connect(direct, where_.host, where_.port, ctx ? &*ctx : nullptr, net::Clock::now() + timeout_,
                                     call());
    if (!conn) {
      bool cert = conn.error().kind == net::StreamFailure::Kind::Tls;
      return fail(ErrorKind::Unavailable, "cannot connect to the audit checkpoint sink {}: {} ({})", where_.text(),
                  conn.error().error.message,
                  cert ? "check that [audit] sink_ca_file in moat.toml holds the CA that signed the server's "
                         "certificate, and that the certificate names the host in [audit] sink"
                       : "start the syslog server, or fix [audit] sink in moat.toml");
    }
    conn_ = std::move(*conn);
    return {};
  }

  net::StreamCall call() const { return {.timeout = timeout_}; }

  AuditSink where_;
  std::chrono::milliseconds timeout_;
  std::string hostname_;
  std::unique_ptr<net::Stream> conn_;
};

}  // namespace

std::unique_ptr<CheckpointSink> make_checkpoint_sink(const AuditSink& sink, std::chrono::milliseconds timeout) {
  switch (sink.kind) {
    case AuditSink::Kind::None: return nullptr;
    case AuditSink::Kind::File: return std::make_unique<FileSink>(sink.file);
    case AuditSink::Kind::SyslogTcp:
    case AuditSink::Kind::SyslogTls: return std::make_unique<SyslogSink>(sink, timeout);
  }
  return nullptr;
}

std::string syslog_checkpoint_message(const Checkpoint& cp, std::string_view hostname, long pid) {
  bool printable = !hostname.empty() && hostname.size() <= 255;
  for (char c : hostname) printable = printable && c > 32 && c < 127;
  // RFC 5424 TIME-SECFRAC has at most 6 digits: the seconds as event.h writes them, then microseconds.
  std::string when = format_time_rfc3339(cp.time_ns, false);
  int64_t micros = ((cp.time_ns % 1'000'000'000 + 1'000'000'000) % 1'000'000'000) / 1000;
  when.insert(when.size() - 1, fmt::format(".{:06}", micros));
  return fmt::format("<{}>1 {} {} {} {} {} - {}", kFacility * 8 + kSeverity, when, printable ? hostname : "-",
                     kAppName, pid, kMsgId, checkpoint_line(cp));
}

}  // namespace moat
