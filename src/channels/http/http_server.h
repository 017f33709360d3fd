#pragma once
// The one HTTP listener moatd's channels share (web chat, webhooks): 127.0.0.1:7700 by default.
// Handlers are registered by path prefix before start(); the longest matching prefix wins.
//
// Threads: one asio thread does all socket work (Beast, callback style: g++ 12 miscompiles some
// co_await expressions); handlers run on a separate small pool because they may block (the router's
// accept() is a durable SQLite write) and must not stall other connections.
//
// Limits: request bodies over `body_limit` get 413, headers over 16 KiB 431, a request that does
// not arrive within `request_timeout` is dropped, connections beyond `max_connections` get 503.
// Every error is a JSON object {"error": "..."}.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "channels/http/event_stream.h"

namespace moat::channels::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;  // "GET"
  std::string target;  // "/api/history?x=1", as sent
  std::string path;    // "/api/history" (not percent-decoded)
  std::string query;   // "x=1"
  Headers headers;     // names lowercased
  std::string body;
  std::string remote;  // peer address

  std::optional<std::string> header(std::string_view lower_name) const;
  // A query parameter, percent-decoded ('+' is a space). nullopt when absent.
  std::optional<std::string> query_param(std::string_view name) const;
  // Value of one cookie from the Cookie header.
  std::optional<std::string> cookie(std::string_view name) const;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  // Set for a Server-Sent Events response: `body` is ignored, the connection stays open and every
  // chunk sent into the stream is written as it comes (status 200, text/event-stream).
  std::shared_ptr<EventStream> stream;

  static Response json(int status, const Json& body);
  static Response error(int status, std::string_view message);  // {"error": message}
  static Response text(int status, std::string content_type, std::string body);
};

using Handler = std::function<Response(const Request&)>;

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 7700;  // 0 = any free port; see HttpServer::port()
  uint64_t body_limit = 1 << 20;
  size_t header_limit = 16 * 1024;
  std::chrono::milliseconds request_timeout{10000};  // the whole request, and idle keep-alive
  size_t max_connections = 256;
  size_t handler_threads = 2;
  std::chrono::milliseconds sse_heartbeat{15000};  // comment lines keep idle streams (and proxies) alive
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions opts = {});
  ~HttpServer();  // stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Before start(). "/hooks" matches "/hooks" and "/hooks/..."; "/" matches everything.
  void add_route(std::string prefix, Handler handler);

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

}  // namespace moat::channels::http
