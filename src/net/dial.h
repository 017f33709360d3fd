#pragma once
// Opening a TCP connection for moatd's own outbound clients — the HTTP client (net/http_client.h) and
// the WebSocket client (net/websocket.h) — the one way both do it:
//
// - the host is resolved and every address is vetted by the AddressCheck before any connect, and the
//   connection goes to an address that was checked (through a proxy too: CONNECT then names the
//   checked address), so a name cannot be re-resolved to somewhere else in between;
// - a TLS destination (https://, wss://) goes through the HTTPS_PROXY's CONNECT tunnel unless NO_PROXY
//   names it; plain ones (http://, ws://) go direct (they are local: an Ollama on 127.0.0.1, a
//   loopback webhook callback);
// - it is blocking, made for the caller's own thread, and waits in 100 ms slices so that a deadline or
//   a cancellation stops it promptly, in the middle of a connect or of the proxy's answer too.
//
// What comes back is a connected non-blocking socket; TLS and the protocol are the caller's: the
// poll-based Stream (net/stream.h: the HTTP client, the audit trail's syslog sink) or asio::ssl (the
// WebSocket client), both set up by net/tls.h.
#include <atomic>
#include <chrono>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "net/address.h"
#include "net/url.h"

namespace moat::net {

using Clock = std::chrono::steady_clock;

// What one call waits with.
struct StreamCall {
  std::chrono::milliseconds timeout{120000};  // named in "did not answer within" messages
  std::function<bool()> cancelled;            // polled while waiting for the network; may be empty
};

// Why a connection or an exchange over it failed, so the caller can decide about retrying without
// parsing text.
struct StreamFailure {
  enum class Kind {
    Connect,    // no connection (refused, unreachable, DNS, the proxy said no): safe to retry
    Refused,    // the AddressCheck refused every address the host has: retrying will not help
    Tls,        // handshake or certificate failure: retrying will not help
    Io,         // the connection broke or timed out mid-exchange: retry if nothing was consumed
    Protocol,   // the peer spoke something other than the protocol on top (or declined a WebSocket upgrade)
    Cancelled,  // the caller's cancelled() said stop
    Aborted,    // the protocol on top gave up on purpose (an HTTP body callback returned false)
  } kind;
  Error error;
};

inline std::unexpected<StreamFailure> stream_failed(StreamFailure::Kind kind, ErrorKind error_kind, std::string message) {
  return std::unexpected(StreamFailure{kind, Error{error_kind, std::move(message)}});
}

// May the client connect to this address? An error (its kind and message are the failure's) refuses it.
using AddressCheck = std::function<Status(const IpAddress&)>;

// Where TLS connections go: straight to the host, or through an HTTP proxy's CONNECT.
struct ProxySettings {
  std::optional<HostPort> https_proxy;
  // NO_PROXY entries: "*" (everything), a domain ("example.com" or ".example.com": it and its
  // subdomains), an IP literal, or a CIDR block ("10.0.0.0/8"); compared with the URL's host as
  // written (a name is not resolved to match an address entry). Loopback is not implied.
  std::vector<std::string> no_proxy;
  std::string error;  // HTTPS_PROXY is set but unusable: every TLS connection fails saying so

  // HTTPS_PROXY (or https_proxy) = "http://host:port" or "host:port"; NO_PROXY (or no_proxy) =
  // comma-separated entries.
  static ProxySettings from_environment();
  static ProxySettings parse(std::string_view https_proxy, std::string_view no_proxy);
  bool bypasses(std::string_view host) const;
};

// Waits until `fd` is ready for `events` (POLLIN/POLLOUT), in 100 ms slices so that cancellation is
// noticed quickly. Past the deadline: Kind::Io "<where> did not answer within <timeout> ms".
std::expected<void, StreamFailure> wait_ready(int fd, short events, std::chrono::steady_clock::time_point deadline,
                                            const StreamCall& call, std::string_view where);

class Dialer {
 public:
  Dialer(ProxySettings proxy, AddressCheck address_check)
      : proxy_(std::move(proxy)), address_check_(std::move(address_check)) {}

  Dialer() = default;

  // A connected non-blocking TCP socket to host:port (a name or an address literal, IPv6 without
  // brackets), through the proxy's tunnel when `tls` and the proxy applies, within `deadline`.
  std::expected<UniqueFd, StreamFailure> dial(const std::string& host, uint16_t port, bool tls,
                                              std::chrono::steady_clock::time_point deadline, const StreamCall& call);
  std::expected<UniqueFd, StreamFailure> dial(const Url& url, std::chrono::steady_clock::time_point deadline,
                                              const StreamCall& call) {
    return dial(url.host, url.port, url.tls(), deadline, call);
  }

  size_t connections_opened() const { return opened_.load(); }  // TCP connections made so far (proxy ones too)

 private:
  struct Address;
  std::expected<std::vector<Address>, StreamFailure> resolve(const std::string& host, uint16_t port);
  std::expected<UniqueFd, StreamFailure> connect_any(const std::vector<Address>& addrs, const std::string& where,
                                                   std::chrono::steady_clock::time_point deadline, const StreamCall& call);
  std::expected<void, StreamFailure> tunnel(int fd, const std::string& proxy_where, const std::string& authority,
                                          std::chrono::steady_clock::time_point deadline, const StreamCall& call);

  ProxySettings proxy_;
  AddressCheck address_check_;
  std::atomic<size_t> opened_{0};
};

}  // namespace moat::net
