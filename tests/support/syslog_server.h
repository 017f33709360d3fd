#pragma once
// A double for a remote syslog server (rsyslog's imtcp): RFC 5424 messages over TCP, framed by
// octet counting (RFC 6587 3.4.1, "<length> <message>"). It is a real server on a real socket; it
// parses each frame into its RFC 5424 fields and keeps a capture file with one message per line, as
// rsyslog writes them with its RSYSLOG_SyslogProtocol23Format template, so a test can run `moat audit
// verify` on what the server stored. A frame that does not parse closes that connection (as a
// framing error does in rsyslog) and is counted. base_syslog_server_test checks it against a real
// client, util-linux's logger.
//
// With a certificate it speaks TLS (RFC 5425: the same frames inside TLS), as rsyslog's imtcp with
// its gtls/ossl driver does; the handshake is done when a connection is accepted.
//
// One thread polls the listener and every connection; stop() closes them all (the server going
// down) and start() listens again on the same port (the server coming back).
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "support/test_ca.h"

namespace moat::testing {

struct SyslogMessage {
  int facility = 0, severity = 0;
  int version = 0;
  std::string timestamp, hostname, app_name, procid, msgid;  // "-" when nil
  std::string structured_data;                               // "-" or the [..] elements as sent
  std::string msg;                                           // the rest (a UTF-8 BOM removed)
  std::string raw;                                           // the whole message, unframed
};

// One RFC 5424 message without framing; nullopt when it is not one.
std::optional<SyslogMessage> parse_rfc5424(std::string_view text);

class SyslogServer {
 public:
  // Listens on 127.0.0.1 (`port` 0: a free one) and appends what it receives to `capture`; over TLS
  // with `tls`'s certificate when given.
  explicit SyslogServer(std::filesystem::path capture, uint16_t port = 0, std::optional<CertFiles> tls = std::nullopt);
  ~SyslogServer();
  SyslogServer(const SyslogServer&) = delete;
  SyslogServer& operator=(const SyslogServer&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const;  // "syslog+tcp://127.0.0.1:PORT" (syslog+tls://), as [audit] sink takes it
  const std::filesystem::path& capture() const { return capture_; }

  void stop();   // closes the listener and every connection; idempotent
  void start();  // listens again on the same port

  std::vector<SyslogMessage> messages() const;
  size_t bad_frames() const { return bad_frames_.load(); }
  size_t connections() const { return connections_.load(); }  // accepted so far
  size_t failed_handshakes() const { return failed_handshakes_.load(); }

 private:
  void listen();
  void run();

  std::filesystem::path capture_;
  uint16_t port_ = 0;
  std::shared_ptr<void> tls_;  // the SSL_CTX (kept out of this header); null: plain TCP
  UniqueFd listener_, wake_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<SyslogMessage> messages_;
  std::atomic<size_t> bad_frames_{0}, connections_{0}, failed_handshakes_{0};
};

}  // namespace moat::testing
