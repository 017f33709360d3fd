#pragma once
// One outgoing connection over TCP, optionally TLS, where every step (resolving aside: connecting,
// the proxy's CONNECT, the TLS handshake, each write and read) ends at a deadline the caller gives or
// when the caller cancels. The HTTP client (net/http_client.h) speaks HTTP/1.1 over it; the audit
// trail's syslog sink sends octet-counted RFC 5424 frames over it. One TCP, TLS and proxy code for both.
//
// - TLS verifies the peer against the host's default store plus an optional extra CA file (or that
//   file only), sends SNI and checks that the certificate names the host (or its IP address, which
//   gets no SNI).
// - HTTPS_PROXY / NO_PROXY (ProxySettings): a connection may go through an HTTP CONNECT proxy.
// - An AddressCheck vets every address a name resolves to before connecting, and the connection goes
//   to the address that was checked (through a proxy too: CONNECT names the checked address), so a
//   name cannot be re-resolved to somewhere else in between.
// - Each wait polls in 100 ms slices, so cancellation is noticed within about that.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "net/address.h"
#include "net/url.h"

struct ssl_ctx_st;
struct ssl_st;

namespace moat::net {

using Clock = std::chrono::steady_clock;

// Why a connection or an exchange over it failed, so the caller can decide about retrying without
// parsing text.
struct StreamFailure {
  enum class Kind {
    Connect,    // no connection (refused, unreachable, DNS, the proxy said no): safe to retry
    Refused,    // the AddressCheck refused every address the host has: retrying will not help
    Tls,        // handshake or certificate failure: retrying will not help
    Io,         // the connection broke or timed out mid-exchange: retry if nothing was consumed
    Protocol,   // the peer spoke something other than the protocol on top (set by that protocol's code)
    Cancelled,  // the caller's cancelled() said stop
    Aborted,    // the protocol on top gave up on purpose (set by that protocol's code)
  } kind;
  Error error;
};

inline std::unexpected<StreamFailure> stream_failed(StreamFailure::Kind kind, ErrorKind error_kind, std::string message) {
  return std::unexpected(StreamFailure{kind, Error{error_kind, std::move(message)}});
}

// May a connection go to this address? An error (its kind and message are the failure's) refuses it.
using AddressCheck = std::function<Status(const IpAddress&)>;

// Where https:// requests go: straight to the host, or through an HTTP proxy's CONNECT.
struct ProxySettings {
  std::optional<HostPort> https_proxy;
  // NO_PROXY entries: "*" (everything), a domain ("example.com" or ".example.com": it and its
  // subdomains), an IP literal, or a CIDR block ("10.0.0.0/8"); compared with the URL's host as
  // written (a name is not resolved to match an address entry). Loopback is not implied.
  std::vector<std::string> no_proxy;
  std::string error;  // HTTPS_PROXY is set but unusable: every https:// request fails saying so

  // HTTPS_PROXY (or https_proxy) = "http://host:port" or "host:port"; NO_PROXY (or no_proxy) =
  // comma-separated entries.
  static ProxySettings from_environment();
  static ProxySettings parse(std::string_view https_proxy, std::string_view no_proxy);
  bool bypasses(std::string_view host) const;
};

struct TlsSettings {
  std::filesystem::path extra_ca_file;  // extra CAs to trust (tests, private setups)
  bool system_store = true;             // false: trust extra_ca_file only (a private log server's CA)
  std::string alpn;                     // one ALPN protocol to offer ("http/1.1"); empty: none
};

// The TLS settings many connections share, made once (the CA file is read once). Copies share it.
class TlsContext {
 public:
  static std::expected<TlsContext, StreamFailure> make(const TlsSettings& settings);
  ssl_ctx_st* get() const { return ctx_.get(); }

 private:
  std::shared_ptr<ssl_ctx_st> ctx_;
};

// What one call waits with.
struct StreamCall {
  std::chrono::milliseconds timeout{120000};  // named in "did not answer within" messages
  std::function<bool()> cancelled;            // polled while waiting for the network; may be empty
};

struct ConnectOptions {
  const TlsContext* tls = nullptr;  // null: plain TCP
  const ProxySettings* proxy = nullptr;  // null or none set: direct (the proxy applies to TLS connections only)
  AddressCheck address_check;            // empty = any address
  std::atomic<size_t>* opened = nullptr;  // counts TCP connections made, if given
};

// A connected socket, non-blocking, optionally wrapped in TLS.
class Stream {
 public:
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Connects to host:port (a name, or an address literal; IPv6 without brackets), through the proxy
  // and with TLS as `options` say, all before `deadline`.
  static std::expected<std::unique_ptr<Stream>, StreamFailure> connect(const std::string& host, uint16_t port,
                                                                       const ConnectOptions& options,
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
  std::expected<void, StreamFailure> tunnel(const std::string& authority, Clock::time_point deadline,
                                            const StreamCall& call);

  UniqueFd fd_;
  std::string where_;
  TlsContext ctx_;                      // kept alive as long as ssl_ uses it
  std::unique_ptr<ssl_st, SslFree> ssl_;  // declared after ctx_: freed first
};

}  // namespace moat::net
