#pragma once
// The one HTTP(S) client for everything moatd itself calls out to: the model providers, the webhook
// callbacks (and next the messaging platforms). HTTP/1.1 over TCP or TLS; blocking, made for the
// threads that call it (an agent's turn, the router's delivery thread), each call with its own
// deadline and cancellation.
//
// - Connections (net/stream.h) verify TLS with SNI and host checks, honour HTTPS_PROXY/NO_PROXY for
//   https:// and apply an optional AddressCheck to the address actually connected to.
// - Connections are reused: after a response read to its end (Content-Length or chunked, no
//   "Connection: close") the connection waits in a small pool keyed by scheme, host and port. A
//   pooled connection the server has closed is noticed before use; one that breaks before the
//   first byte of the response is replaced once by a fresh connection (the server closed it while
//   we sent, so it saw no request).
// - The response body is streamed to a callback as it arrives, so server-sent events reach the
//   agent loop as the provider sends them.
// - http:// requests go direct (they are local ones: an Ollama on 127.0.0.1, a loopback webhook
//   callback); the webhook channel passes an AddressCheck so that a callback cannot be aimed at the
//   host's own services.
//
// Why OpenSSL with poll() and not Beast + asio::ssl (the gateway's) or libcurl: the callers are
// blocking threads, and each call must stop within its deadline or when its caller cancels it,
// including in the middle of a TLS read. With asio that means an io_context and timers per call
// around every step; with libcurl a second TLS and proxy configuration surface (and a new
// dependency) whose deadlines are whole seconds. A non-blocking socket polled in 100 ms slices
// with OpenSSL on top is a few hundred lines that do exactly this, and the gateway's asio code
// stays what it is: a server for many concurrent connections.
#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "net/address.h"
#include "net/headers.h"
#include "net/stream.h"
#include "net/url.h"

namespace moat::net {

struct HttpRequest {
  std::string method = "POST";
  std::string target;  // origin-form: "/v1/messages"
  HeaderList headers;  // Host and Content-Length are added
  std::string body;
};

struct HttpResponseHead {
  int status = 0;
  std::string reason;
  HeaderList headers;
  std::optional<std::string> header(std::string_view name) const { return header_value(headers, name); }
};

struct HttpResponse {
  HttpResponseHead head;
  std::string body;
};

// Connect + TLS handshake + sending + the response head must finish within `timeout`; after that it
// is an idle limit: each read of the body must bring bytes within it (a streamed answer may
// legitimately last longer than any fixed total). `cancelled` is polled while waiting; may be empty.
using CallOptions = StreamCall;

// Why a request failed: the connection's failure kinds, Protocol and Aborted set by HTTP.
using HttpFailure = StreamFailure;

// Called once with the response head, then with each piece of the decoded body in order; return
// false from on_body to stop reading (the request then fails with Kind::Aborted).
using HeadCallback = std::function<void(const HttpResponseHead&)>;
using BodyCallback = std::function<bool(std::string_view)>;

struct ClientOptions {
  std::filesystem::path extra_ca_file;  // extra CAs to trust (tests, private setups); the host's store always applies
  ProxySettings proxy;                  // none by default; moatd passes ProxySettings::from_environment()
  AddressCheck address_check;           // empty = any address
  size_t max_idle_per_origin = 4;       // pooled connections kept per scheme+host+port
  std::chrono::milliseconds max_idle{30000};  // a pooled connection idle longer than this is closed, not reused
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One request; `url` gives scheme, host and port (its path is ignored: request.target is sent).
  // Thread-safe: concurrent calls use different connections.
  std::expected<HttpResponseHead, HttpFailure> send(const Url& url, const HttpRequest& request,
                                                    const CallOptions& options, const HeadCallback& on_head,
                                                    const BodyCallback& on_body);
  // The same, with the whole body collected (a body over max_body fails with Kind::Aborted).
  std::expected<HttpResponse, HttpFailure> fetch(const Url& url, const HttpRequest& request,
                                                 const CallOptions& options, size_t max_body = 1 << 20);

  size_t connections_opened() const;  // TCP connections made so far (reuse shows as fewer)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::net
