#pragma once
// The one HTTP server moatd's channels share: 127.0.0.1:7700 by default. The web chat and the
// webhook channel serve on it today, and the messaging platforms' webhooks come next (Telegram's
// webhook mode, Slack's Events API, WhatsApp's webhook): each registers routes on this one server
// rather than opening a listener of its own. Handlers are registered by path prefix before
// start(); the longest matching prefix wins.
//
// What a handler gets is what came over the wire: the body's bytes exactly as received (after the
// chunked framing is removed, which is what senders sign: a platform's HMAC is computed over these
// bytes), the header fields in order with their names as sent (look them up with header(), which
// ignores case).
//
// Threads: one asio thread does all socket work (Beast, callback style: g++ 12 miscompiles some
// co_await expressions); handlers run on a separate small pool because they may block (the router's
// accept() is a durable SQLite write) and must not stall other connections.
//
// Limits: a request body over its route's body_limit (RouteOptions, by default
// ServerOptions::body_limit) gets 413 and the handler never sees it — with a Content-Length the
// answer goes out before the body is read (and before "100 Continue"); headers over 16 KiB get 431,
// a request that does not arrive within `request_timeout` is dropped, connections beyond
// `max_connections` get 503. Every error is a JSON object {"error": "..."}.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/json.h"
#include "base/result.h"
#include "net/event_stream.h"
#include "net/headers.h"

namespace moat::net {

struct ServerRequest {
  std::string method;  // "GET"
  std::string target;  // "/api/history?x=1", as sent
  std::string path;    // "/api/history" (not percent-decoded)
  std::string query;   // "x=1"
  HeaderList headers;  // in order, names as sent
  std::string body;    // the bytes as received (chunked framing removed), NULs and all
  std::string remote;  // peer address

  // The first header of that name, compared without case (net::header_value).
  std::optional<std::string> header(std::string_view name) const { return header_value(headers, name); }
  // A query parameter, percent-decoded ('+' is a space). nullopt when absent.
  std::optional<std::string> query_param(std::string_view name) const;
  // Value of one cookie from the Cookie header.
  std::optional<std::string> cookie(std::string_view name) const;
};

struct ServerResponse {
  int status = 200;
  HeaderList headers;
  std::string body;
  // Set for a Server-Sent Events response: `body` is ignored, the connection stays open and every
  // chunk sent into the stream is written as it comes (status 200, text/event-stream).
  std::shared_ptr<EventStream> stream;

  static ServerResponse json(int status, const Json& body);
  static ServerResponse error(int status, std::string_view message);  // {"error": message}
  static ServerResponse text(int status, std::string content_type, std::string body);
};

using RouteHandler = std::function<ServerResponse(const ServerRequest&)>;

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 7700;  // 0 = any free port; see HttpServer::port()
  uint64_t body_limit = 1 << 20;  // for routes that set none
  size_t header_limit = 16 * 1024;
  std::chrono::milliseconds request_timeout{10000};  // the whole request, and idle keep-alive
  size_t max_connections = 256;
  size_t handler_threads = 2;
  std::chrono::milliseconds sse_heartbeat{15000};  // comment lines keep idle streams (and proxies) alive
};

struct RouteOptions {
  // The largest body this route takes, in bytes; nullopt = ServerOptions::body_limit. A platform's
  // updates are small: a tight cap keeps a flood of large bodies from costing memory and time.
  std::optional<uint64_t> body_limit;
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions opts = {});
  ~HttpServer();  // stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Before start(). "/hooks" matches "/hooks" and "/hooks/..."; "/" matches everything.
  void add_route(std::string prefix, RouteHandler handler, RouteOptions options = {});

  // Binds and starts serving. Unavailable when the address cannot be bound (port in use).
  Status start();
  // Closes the listener and every connection (open event streams end), joins the threads.
  void stop();

  uint16_t port() const;         // the bound port (after start)
  std::string base_url() const;  // "http://127.0.0.1:7700"

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace moat::net
