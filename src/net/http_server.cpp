#include "net/http_server.h"

#include <atomic>
#include <future>
#include <limits>
#include <list>
#include <thread>
#include <vector>

#include <utility>  // before asio: boost 1.74's headers use std::exchange without including it
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "base/log.h"
#include "net/url.h"

namespace moat::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// ---- Request / Response helpers ----

std::optional<std::string> ServerRequest::query_param(std::string_view name) const {
  return find_query_param(query, name);
}

std::optional<std::string> ServerRequest::cookie(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (!iequals(k, "cookie")) continue;
    std::string_view rest = v;
    while (!rest.empty()) {
      size_t semi = rest.find(';');
      std::string_view part = rest.substr(0, semi);
      rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      size_t eq = part.find('=');
      if (eq != std::string_view::npos && part.substr(0, eq) == name) return std::string(part.substr(eq + 1));
    }
  }
  return std::nullopt;
}

ServerResponse ServerResponse::json(int status, const Json& body) {
  ServerResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  // Replace rather than throw on invalid UTF-8 from a caller: an error reply must always go out.
  r.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

ServerResponse ServerResponse::error(int status, std::string_view message) {
  return json(status, Json{{"error", std::string(message)}});
}

ServerResponse ServerResponse::text(int status, std::string content_type, std::string body) {
  ServerResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", std::move(content_type));
  r.body = std::move(body);
  return r;
}

// ---- the server ----

namespace {
class Connection;
}

struct HttpServer::Impl {
  explicit Impl(ServerOptions o) : opts(std::move(o)) {}

  struct Route {
    std::string prefix;
    RouteHandler handler;
    uint64_t body_limit;
  };

  ServerOptions opts;
  std::vector<Route> routes;
  std::atomic<size_t> connections{0};  // before io: connections count down while io is destroyed
  uint16_t bound_port = 0;
  bool running = false;

  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_backoff{io};
  std::list<std::weak_ptr<Connection>> live;  // loop thread only
  std::unique_ptr<asio::thread_pool> pool;
  std::thread thread;

  const Route* find(std::string_view path) const {
    const Route* best = nullptr;
    for (const auto& r : routes) {
      const auto& prefix = r.prefix;
      bool match = prefix == "/" || path == prefix ||
                   (path.starts_with(prefix) && (prefix.ends_with('/') || path[prefix.size()] == '/'));
      if (match && (best == nullptr || prefix.size() > best->prefix.size())) best = &r;
    }
    return best;
  }

  void do_accept();
};

namespace {

// Beast 1.74 hands out boost::string_view.
std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }

// "/api/history?x=1" -> "/api/history": what routes match (not percent-decoded).
std::string_view target_path(std::string_view target) { return target.substr(0, target.find('?')); }

std::string status_line(int status) {
  auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  return fmt::format("HTTP/1.1 {} {}\r\n", status, std::string_view(reason.data(), reason.size()));
}

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(HttpServer::Impl& srv, tcp::socket sock) : srv_(srv), stream_(std::move(sock)), heartbeat_(srv.io) {
    ++srv_.connections;
    error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string();
  }
  ~Connection() { --srv_.connections; }

  void start() { read_request(); }

  void reject_busy() {
    respond(ServerResponse::error(503, "too many connections; try again shortly"), false);
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (events_) events_->close();
    heartbeat_.cancel();
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  void read_request() {
    parser_.emplace();
    // No limit while the header is read: on_header applies the limit of the route it names. (Not
    // boost::none: Beast 1.74 compares a Content-Length with it as optional<>, and every length is
    // greater than none.)
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
    route_ = nullptr;
    body_limit_ = srv_.opts.body_limit;
    parser_->header_limit(static_cast<uint32_t>(srv_.opts.header_limit));
    stream_.expires_after(srv_.opts.request_timeout);
    bhttp::async_read_header(stream_, buf_, *parser_,
                             [self = shared_from_this()](error_code ec, size_t) { self->on_header(ec); });
  }

  bool read_failed(error_code ec) {
    if (!ec) return false;
    if (ec == bhttp::error::body_limit) {
      too_large();
    } else if (ec == bhttp::error::header_limit) {
      respond(ServerResponse::error(431, "request headers too large"), false);
    } else if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
               ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
               ec == bhttp::error::partial_message) {
      close();  // the peer went away or stalled: nobody to answer
    } else {
      respond(ServerResponse::error(400, fmt::format("malformed HTTP request: {}", ec.message())), false);
    }
    return true;
  }

  // 413; the connection closes, since the rest of the body is not read.
  void too_large() { respond(ServerResponse::error(413, fmt::format("request body larger than {} bytes", body_limit_)), false); }

  void on_header(error_code ec) {
    if (read_failed(ec)) return;
    auto target = view(parser_->get().target());
    route_ = srv_.find(target_path(target));
    if (route_ != nullptr) body_limit_ = route_->body_limit;
    // A declared length over the limit is refused before a byte of the body is read (and before
    // "100 Continue" invites it); a chunked body is cut off by the parser once it passes the limit.
    if (auto length = parser_->content_length(); length && *length > body_limit_) return too_large();
    parser_->body_limit(body_limit_);
    // curl and others wait (a second) for "100 Continue" before sending a larger body.
    auto expect = parser_->get()[bhttp::field::expect];
    if (iequals(view(expect), "100-continue") && !parser_->is_done()) {
      continue_line_ = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(continue_line_), [self = shared_from_this()](error_code ec, size_t) {
        if (ec) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    bhttp::async_read(stream_, buf_, *parser_, [self = shared_from_this()](error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(error_code ec) {
    if (read_failed(ec)) return;
    stream_.expires_never();  // the handler may take a while (a durable write); no read is pending
    auto& msg = parser_->get();
    ServerRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = std::string(target_path(req.target));
    if (req.path.size() < req.target.size()) req.query = req.target.substr(req.path.size() + 1);
    for (const auto& f : msg) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    req.body = std::move(msg.body());
    req.remote = remote_;
    bool keep_alive = msg.keep_alive();

    if (route_ == nullptr) return respond(ServerResponse::error(404, fmt::format("no such path: {}", req.path)), keep_alive);
    const RouteHandler* handler = &route_->handler;
    asio::post(*srv_.pool, [self = shared_from_this(), handler, req = std::move(req), keep_alive]() mutable {
      ServerResponse res;
      try {
        res = (*handler)(req);
      } catch (const std::exception& e) {
        log::error("http: handler for {} threw: {}", req.path, e.what());
        res = ServerResponse::error(500, "internal error");
      }
      auto ex = self->stream_.get_executor();
      asio::post(ex, [self = std::move(self), res = std::move(res), keep_alive]() mutable {
        self->respond(std::move(res), keep_alive);
      });
    });
  }

  void respond(ServerResponse r, bool keep_alive) {
    if (closed_) {
      if (r.stream) r.stream->close();  // the client left while the handler ran: producers drop it
      return;
    }
    if (r.stream) return start_events(std::move(r));
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(r.status), 11);
    bool has_type = false;
    for (auto& [k, v] : r.headers) {
      if (iequals(k, "content-type")) has_type = true;
      res->insert(k, v);
    }
    if (!has_type) res->set(bhttp::field::content_type, "application/json");
    if (res->find("x-content-type-options") == res->end()) res->set("X-Content-Type-Options", "nosniff");
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    stream_.expires_after(srv_.opts.request_timeout);  // a client that will not read its answer
    bhttp::async_write(stream_, *res, [self = shared_from_this(), res, keep_alive](error_code ec, size_t) {
      if (ec || !keep_alive) return self->close();
      self->read_request();
    });
  }

  // ---- Server-Sent Events ----

  void start_events(ServerResponse r) {
    events_ = std::move(r.stream);
    stream_.expires_never();
    std::string head = status_line(200);
    head += "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n";
    head += "X-Content-Type-Options: nosniff\r\nConnection: close\r\n";
    for (const auto& [k, v] : r.headers) {
      if (!iequals(k, "content-type")) head += fmt::format("{}: {}\r\n", k, v);
    }
    head += "\r\nretry: 2000\n\n";  // how soon EventSource reconnects after a drop
    write_events(std::move(head));
    std::weak_ptr<Connection> weak = shared_from_this();
    events_->set_wake([weak, ex = stream_.get_executor()] {
      asio::post(ex, [weak] {
        if (auto self = weak.lock()) self->flush_events();
      });
    });
    watch_peer();
    beat();
  }

  void flush_events() {
    if (closed_ || writing_) return;
    std::string chunk = events_->take();
    if (!chunk.empty()) return write_events(std::move(chunk));
    if (events_->closed()) close();
  }

  // Writes go to the raw socket: tcp_stream's timer is shared with the peer watch below, and a
  // stuck writer is caught by the heartbeat instead.
  void write_events(std::string chunk) {
    writing_ = true;
    write_started_ = std::chrono::steady_clock::now();
    out_ = std::move(chunk);
    asio::async_write(stream_.socket(), asio::buffer(out_), [self = shared_from_this()](error_code ec, size_t) {
      self->writing_ = false;
      if (ec) return self->close();
      self->flush_events();
    });
  }

  // The client says nothing after its request; a read completing means it hung up.
  void watch_peer() {
    stream_.socket().async_read_some(asio::buffer(drain_), [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->close();
      self->watch_peer();
    });
  }

  void beat() {
    heartbeat_.expires_after(srv_.opts.sse_heartbeat);
    heartbeat_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed_) return;
      if (self->writing_ && std::chrono::steady_clock::now() - self->write_started_ > 4 * self->srv_.opts.sse_heartbeat) {
        return self->close();  // the client stopped reading
      }
      self->events_->send(": ping\n\n");
      self->beat();
    });
  }

  HttpServer::Impl& srv_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string remote_;
  std::string continue_line_;
  const HttpServer::Impl::Route* route_ = nullptr;  // the current request's, once its header is read
  uint64_t body_limit_ = 0;                         // the current request's
  bool closed_ = false;
  // event streams
  std::shared_ptr<EventStream> events_;
  asio::steady_timer heartbeat_;
  std::string out_;
  bool writing_ = false;
  std::chrono::steady_clock::time_point write_started_;
  std::array<char, 256> drain_{};
};

}  // namespace

void HttpServer::Impl::do_accept() {
  acceptor.async_accept([this](error_code ec, tcp::socket sock) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // EMFILE and friends: back off instead of spinning.
      log::warn("http: accept: {}", ec.message());
      accept_backoff.expires_after(std::chrono::milliseconds(100));
      accept_backoff.async_wait([this](error_code e) {
        if (!e) do_accept();
      });
      return;
    }
    live.remove_if([](const auto& w) { return w.expired(); });
    auto conn = std::make_shared<Connection>(*this, std::move(sock));
    live.push_back(conn);
    if (connections.load() > opts.max_connections) {
      conn->reject_busy();
    } else {
      conn->start();
    }
    do_accept();
  });
}

HttpServer::HttpServer(ServerOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::add_route(std::string prefix, RouteHandler handler, RouteOptions options) {
  impl_->routes.push_back({std::move(prefix), std::move(handler), options.body_limit.value_or(impl_->opts.body_limit)});
}

Status HttpServer::start() {
  auto& s = *impl_;
  if (s.running) return fail(ErrorKind::Conflict, "http server already started");
  error_code ec;
  auto addr = asio::ip::make_address(s.opts.address, ec);
  if (ec) return fail(ErrorKind::InvalidInput, "http: bad listen address '{}': {}", s.opts.address, ec.message());
  tcp::endpoint ep(addr, s.opts.port);
  s.acceptor.open(ep.protocol(), ec);
  if (!ec) s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    s.acceptor.close(ignored);
    return fail(ErrorKind::Unavailable, "http: cannot listen on {}:{}: {}", s.opts.address, s.opts.port, ec.message());
  }
  s.bound_port = s.acceptor.local_endpoint(ec).port();
  s.pool = std::make_unique<asio::thread_pool>(std::max<size_t>(s.opts.handler_threads, 1));
  s.running = true;
  s.do_accept();
  s.thread = std::thread([&s] { s.io.run(); });
  log::info("http: channels listening on {}", base_url());
  return {};
}

void HttpServer::stop() {
  auto& s = *impl_;
  if (!s.running) return;
  s.running = false;
  std::promise<void> closed;
  asio::post(s.io, [&s, &closed] {
    error_code ec;
    s.acceptor.close(ec);
    s.accept_backoff.cancel();
    for (auto& w : s.live) {
      if (auto c = w.lock()) c->close();
    }
    s.live.clear();
    closed.set_value();
  });
  closed.get_future().wait();
  // Handlers still running finish first; what they post back to the loop is dropped with it.
  s.pool->join();
  s.work.reset();
  s.io.stop();
  if (s.thread.joinable()) s.thread.join();
}

uint16_t HttpServer::port() const { return impl_->bound_port; }

std::string HttpServer::base_url() const {
  const auto& a = impl_->opts.address;
  if (a.find(':') != std::string::npos) return fmt::format("http://[{}]:{}", a, impl_->bound_port);
  return fmt::format("http://{}:{}", a, impl_->bound_port);
}

}  // namespace moat::net
