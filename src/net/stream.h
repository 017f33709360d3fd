#pragma once
// One outgoing connection over TCP, optionally TLS, for blocking callers: every step (the Dialer's
// connect and proxy tunnel, the TLS handshake, each write and read) ends at a deadline the caller
// gives or when the caller cancels, polled in 100 ms slices. The HTTP client (net/http_client.h)
// speaks HTTP/1.1 over it; the audit trail's syslog sink sends octet-counted RFC 5424 frames over it.
// The socket comes from net/dial.h (address check, HTTPS_PROXY) and TLS follows net/tls.h's rules,
// as the WebSocket client's (asio) does.
#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"
#include "net/dial.h"
#include "net/tls.h"

struct ssl_ctx_st;
struct ssl_st;

namespace moat::net {

// The TLS settings many connections share, made once (the CA file is read once). Copies share it.
class TlsContext {
 public:
  static std::expected<TlsContext, StreamFailure> make(const TlsSettings& settings);
  ssl_ctx_st* get() const { return ctx_.get(); }

 private:
  std::shared_ptr<ssl_ctx_st> ctx_;
};

// A connected socket, non-blocking, optionally wrapped in TLS.
class Stream {
 public:
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Connects to host:port (a name, or an address literal; IPv6 without brackets) through `dialer`,
  // with TLS when `tls` is given, all before `deadline`.
  static std::expected<std::unique_ptr<Stream>, StreamFailure> connect(Dialer& dialer, const std::string& host,
                                                                       uint16_t port, const TlsContext* tls,
                                                                       Clock::time_point deadline, const StreamCall& call);

  const std::string& where() const { return where_; }  // "host:port"

  std::expected<void, StreamFailure> write_all(std::string_view data, Clock::time_point deadline, const StreamCall& call);
  // Some bytes into buf; 0 = the peer closed the connection (a TLS peer that closes without
  // close_notify too: the framing on top decides whether that was early).
  std::expected<size_t, StreamFailure> read_some(char* buf, size_t cap, Clock::time_point deadline,
                                                 const StreamCall& call);

  // For a request/response protocol between exchanges: nothing is waiting to be read. An idle
  // HTTP/1.1 connection that turns readable was closed by the server or is out of step.
  bool idle_and_open() const;
  // For a peer that never sends (a syslog receiver): true when it closed or reset the connection, or
  // sent anything at all (a TLS close_notify; TLS 1.3 session tickets do not count). Does not wait.
  bool peer_closed();

  bool reused = false;            // the HTTP client's: it served a request before this one
  Clock::time_point idle_since;  // the HTTP client's: when it went back to the pool

 private:
  struct SslFree {
    void operator()(ssl_st* s) const;
  };
  Stream(UniqueFd fd, std::string where);
  std::expected<void, StreamFailure> wait_io(short events, Clock::time_point deadline, const StreamCall& call);
  std::expected<void, StreamFailure> handshake(const TlsContext& ctx, const std::string& host, Clock::time_point deadline,
                                               const StreamCall& call);

  UniqueFd fd_;
  std::string where_;
  TlsContext ctx_;                      // kept alive as long as ssl_ uses it
  std::unique_ptr<ssl_st, SslFree> ssl_;  // declared after ctx_: freed first
};

}  // namespace moat::net
