#pragma once
// The WebSocket client for moatd's own outbound connections: Discord's Gateway, next Slack's Socket
// Mode. Made for a channel's own thread: connect() blocks until the connection is open (or fails
// with a reason), send() queues, receive() waits for the next message or for the end, close()
// starts the closing handshake, and the destructor never hangs.
//
// - ws:// and wss:// (net/url.h parse_websocket_url). Connecting is net/dial.h's (the AddressCheck,
//   HTTPS_PROXY's CONNECT tunnel for wss:// unless NO_PROXY names the host) and TLS follows
//   net/tls.h (host store + optional extra CA file, SNI, the certificate must name the host): the
//   same rules as the HTTP client. connect_timeout bounds all of it together with the upgrade.
// - The connection runs on one io thread of its own (Boost.Beast over asio::ssl). A read is always
//   pending, so the server's pings are answered with pongs while the caller is busy (Beast does it);
//   while the caller has max_buffered_messages messages it has not taken, reading pauses (TCP
//   pushes back on the server) and pings wait too (with idle_timeout, a pause longer than it ends
//   the connection: a channel keeps receiving).
// - One write in flight: send() appends to a queue the io thread writes in order, one frame at a
//   time; close() lets what is queued go first, then sends the close frame.
// - Every end is surfaced, once, as the last event receive() returns (and by end()): the close
//   code and reason the server sent (Discord's 4004 "authentication failed" and 4010-4014 are
//   fatal: the caller must see them), or the answer to our own close, or a failure with a clear
//   error — the peer vanished without a close frame (a read error), a message over max_message
//   (the connection is failed with close code 1009), no data for idle_timeout (a dead TCP
//   connection that sent no reset), a write error.
// - It does not reconnect: the channel above decides whether and when, with net/backoff.h, from
//   how the connection ended (a close code it may resume after, or a fatal one).
#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "net/dial.h"
#include "net/dial.h"
#include "net/headers.h"
#include "net/url.h"

namespace moat::net {

struct WebSocketOptions {
  std::filesystem::path extra_ca_file;  // extra CAs to trust (tests, private setups); the host's store always applies
  ProxySettings proxy;                  // none by default; moatd passes ProxySettings::from_environment()
  AddressCheck address_check;           // empty = any address
  HeaderList headers;                   // added to the upgrade request (User-Agent: "moat" unless given here)
  std::chrono::milliseconds connect_timeout{15000};  // TCP (and the proxy), TLS and the upgrade, together
  std::function<bool()> cancelled;                   // polled while connecting; may be empty
  size_t max_message = 1 << 20;  // bytes; a bigger incoming message fails the connection (close 1009)
  // 0 = none. Otherwise a connection that brings nothing for this long is pinged half-way (Beast's
  // keep-alive ping; a live server's pong counts as data) and failed at the end.
  std::chrono::milliseconds idle_timeout{0};
  size_t max_queued_sends = 4096;       // messages waiting to be written; send() refuses more
  size_t max_buffered_messages = 1024;  // received and not yet taken by receive(); reading pauses at this many
  std::chrono::milliseconds close_timeout{2000};  // how long close() and the destructor wait for the server's close
};

struct WebSocketEvent {
  enum class Kind {
    Message,  // data (binary tells a binary frame from a text one)
    Closed,   // the closing handshake: close_code and close_reason are the server's close frame
    Failed,   // the connection ended without one: error says why
  } kind = Kind::Message;
  std::string data;
  bool binary = false;
  // Closed: what the server's close frame said (1005 = it carried no code; 1006 = there was none
  // after our own close), and whether the server began the closing handshake (else we did).
  uint16_t close_code = 0;
  std::string close_reason;
  bool closed_by_server = false;
  Error error;  // Failed
};

struct WebSocketStats {
  uint64_t sent = 0;      // messages written
  uint64_t received = 0;  // messages read
};

class WebSocket {
 public:
  // Opens a connection to a ws:// or wss:// URL: the upgrade asks for url.path (with its query).
  // Fails with StreamFailure's kinds: Connect, Refused (AddressCheck), Tls, Io (broke, or not open
  // within connect_timeout), Protocol (the server declined the upgrade: its HTTP status is in the
  // message), Cancelled.
  static std::expected<std::unique_ptr<WebSocket>, StreamFailure> connect(const Url& url, WebSocketOptions options);

  // Closes (code 1001 "going away" unless close() was called) and waits for the server's answer
  // for at most close_timeout, then drops the connection; the io thread is joined either way.
  // No other thread may be inside send/receive/close when it runs.
  ~WebSocket();
  WebSocket(const WebSocket&) = delete;
  WebSocket& operator=(const WebSocket&) = delete;

  // Queues a text (or binary) message. Thread-safe. Fails once the connection has ended or
  // close() was called (Unavailable), or with max_queued_sends waiting (ResourceLimit).
  Status send(std::string text);
  Status send_binary(std::string data);

  // The next event, waiting until `deadline`; nullopt if none came by then. After the end event
  // (Closed or Failed) every call returns it again at once. One receiving thread at a time.
  std::optional<WebSocketEvent> receive(std::chrono::steady_clock::time_point deadline);
  std::optional<WebSocketEvent> receive(std::chrono::milliseconds timeout) {
    return receive(std::chrono::steady_clock::now() + timeout);
  }

  // Starts the closing handshake after the queued messages (RFC 6455: 1000 normal, 1001 going
  // away, 4000-4999 the application's; Discord keeps a session resumable unless it is 1000/1001).
  // Returns at once; the server's answer arrives as the Closed event. Thread-safe; later calls and
  // calls after the end do nothing.
  void close(uint16_t code = 1000, std::string_view reason = {});

  // How the connection ended, once it has (the same event receive() ends with).
  std::optional<WebSocketEvent> end() const;
  WebSocketStats stats() const;
  const std::string& where() const;  // "host:port", as messages name it

 private:
  struct Impl;
  explicit WebSocket(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::net
