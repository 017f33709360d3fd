#include "net/websocket.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <variant>

#include <utility>  // before asio: boost 1.74's awaitable.hpp uses std::exchange without including it
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/tls.h"

namespace moat::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Kind = StreamFailure::Kind;
using error_code = boost::system::error_code;

using PlainWs = websocket::stream<beast::tcp_stream>;
using TlsWs = websocket::stream<ssl::stream<beast::tcp_stream>>;

StreamFailure failure(Kind kind, ErrorKind error_kind, std::string message) {
  return StreamFailure{kind, Error{error_kind, std::move(message)}};
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};

struct Outgoing {
  std::string data;
  bool binary = false;
};

// The server answered the upgrade with something other than a WebSocket handshake (rather than
// the connection breaking under it).
bool not_websocket(const error_code& ec) {
  namespace http = beast::http;
  if (ec.category() == error_code(websocket::error::no_upgrade).category()) return true;
  return ec.category() == error_code(http::error::bad_version).category() && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

// The first `n` characters of a server's text, for messages.
std::string excerpt(std::string_view s, size_t n = 200) {
  std::string out(s.substr(0, n));
  for (char& c : out)
    if (c == '\r' || c == '\n') c = ' ';
  return s.size() > n ? out + "..." : out;
}

}  // namespace

struct WebSocket::Impl {
  Impl(const Url& u, WebSocketOptions o) : url(u), where(authority_text(u.host, u.port)), options(std::move(o)) {}

  const Url url;
  const std::string where;
  const WebSocketOptions options;

  // Declared in the order they are made; destroyed in reverse: the streams before the TLS context
  // and the io_context they refer to.
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{ioc.get_executor()};
  std::optional<ssl::context> tls_ctx;
  std::variant<std::monostate, std::unique_ptr<PlainWs>, std::unique_ptr<TlsWs>> ws;
  websocket::response_type upgrade_response;  // the server's answer to the upgrade
  beast::flat_buffer read_buf;
  std::thread io;

  // Shared between the io thread and the callers.
  mutable std::mutex mu;
  std::condition_variable cv;
  bool opened = false;                      // the opening handshake finished (well or not)
  std::optional<StreamFailure> open_failure;  // why it did not
  std::optional<StreamFailure> abort_reason;  // the caller gave up on it (deadline, cancellation)
  bool io_done = false;                     // the io thread's run() returned
  std::deque<WebSocketEvent> inbox;         // messages, then the end event
  std::optional<WebSocketEvent> ended;      // the end event, once there is one
  bool reading_paused = false;              // the inbox is full: no read is pending
  std::deque<Outgoing> outbox;              // the front one is being written while `writing`
  bool writing = false;
  bool closing = false;                                 // close() was called: no more sends
  std::optional<websocket::close_reason> close_queued;  // the close frame waiting for the outbox to drain
  WebSocketStats counters;
  bool close_started = false;  // our close frame is on its way (io thread only)
  bool connected = false;      // open() succeeded (caller side)

  // Runs `f` with the stream, whichever kind it is. io thread only (or before it starts / after it ends).
  template <class F>
  void with_ws(F&& f) {
    std::visit(Overloaded{[](std::monostate&) {}, [&](auto& p) { f(*p); }}, ws);
  }

  // --- the io thread ---

  void run() {
    try {
      ioc.run();
    } catch (const std::exception& e) {
      auto why = fmt::format("the WebSocket to {} stopped: {}", where, e.what());
      {
        std::lock_guard g(mu);
        if (!opened) open_failure = failure(Kind::Io, ErrorKind::Internal, why);
        opened = true;
      }
      finish(failed(ErrorKind::Internal, why));
    }
    std::lock_guard g(mu);
    io_done = true;
    cv.notify_all();
  }

  void opening_done(std::optional<StreamFailure> f) {
    std::lock_guard g(mu);
    if (abort_reason) f = abort_reason;  // the handshake failed because the caller cut it short
    open_failure = std::move(f);
    opened = true;
    cv.notify_all();
  }

  void start_opening() {
    std::visit(Overloaded{[](std::monostate&) {},
                          [&](std::unique_ptr<PlainWs>& p) { upgrade(*p); },
                          [&](std::unique_ptr<TlsWs>& p) {
                            auto& tls = p->next_layer();
                            if (auto e = expect_peer_identity(tls.native_handle(), url.host); !e)
                              return opening_done(failure(Kind::Tls, ErrorKind::Internal,
                                                          fmt::format("TLS with {}: {}", where, e.error().message)));
                            tls.async_handshake(ssl::stream_base::client, [this, &s = *p](const error_code& ec) {
                              if (ec)
                                return opening_done(failure(Kind::Tls, ErrorKind::Unavailable,
                                                            fmt::format("TLS with {}: {}", where,
                                                                        tls_failure_text(s.next_layer().native_handle(), ec.message()))));
                              upgrade(s);
                            });
                          }},
               ws);
  }

  template <class Ws>
  void upgrade(Ws& s) {
    // The caller's wait enforces connect_timeout (it closes the socket), so Beast's own handshake
    // limit is off here; it is set for the closing handshake once the connection is open.
    websocket::stream_base::timeout t{};
    t.handshake_timeout = websocket::stream_base::none();
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    s.set_option(t);
    s.set_option(websocket::stream_base::decorator([headers = options.headers](websocket::request_type& req) {
      req.set(beast::http::field::user_agent, "moat");
      for (const auto& [k, v] : headers) req.set(k, v);
    }));
    s.read_message_max(options.max_message);
    s.async_handshake(upgrade_response, url.authority(), url.path, [this, &s](const error_code& ec) {
      if (ec == websocket::error::upgrade_declined) {
        const auto& r = upgrade_response;
        return opening_done(failure(Kind::Protocol, ErrorKind::Unavailable,
                                    fmt::format("{} declined the WebSocket upgrade of {}: HTTP {} {}{}", where, url.path,
                                                r.result_int(), std::string(r.reason()),
                                                r.body().empty() ? "" : ": " + excerpt(r.body()))));
      }
      if (ec)
        return opening_done(failure(not_websocket(ec) ? Kind::Protocol : Kind::Io, ErrorKind::Unavailable,
                                    fmt::format("the WebSocket upgrade with {} failed: {}", where, ec.message())));
      websocket::stream_base::timeout open{};
      open.handshake_timeout = options.close_timeout;  // Beast applies it to the closing handshake
      open.idle_timeout = options.idle_timeout.count() > 0 ? Clock::duration(options.idle_timeout) : websocket::stream_base::none();
      open.keep_alive_pings = true;
      s.set_option(open);
      opening_done(std::nullopt);
      read_next();
    });
  }

  void read_next() {
    with_ws([&](auto& s) { s.async_read(read_buf, [this](const error_code& ec, size_t) { on_read(ec); }); });
  }

  void on_read(const error_code& ec) {
    if (ec) return on_read_error(ec);
    WebSocketEvent m;
    m.kind = WebSocketEvent::Kind::Message;
    m.data = beast::buffers_to_string(read_buf.data());
    read_buf.consume(read_buf.size());
    with_ws([&](auto& s) { m.binary = s.got_binary(); });
    bool more;
    {
      std::lock_guard g(mu);
      if (ended) return;
      inbox.push_back(std::move(m));
      ++counters.received;
      more = inbox.size() < options.max_buffered_messages;
      reading_paused = !more;
      cv.notify_all();
    }
    if (more) read_next();
  }

  void on_read_error(const error_code& ec) {
    websocket::close_reason reason;
    with_ws([&](auto& s) { reason = s.reason(); });
    const bool we_closed = close_started;
    if (ec == websocket::error::closed) return finish(closed(reason.code, std::string(reason.reason.c_str()), !we_closed));
    if (ec == websocket::error::message_too_big)
      return finish(failed(ErrorKind::ResourceLimit,
                           fmt::format("{} sent a message over {} bytes (max_message); the connection was closed with 1009",
                                       where, options.max_message)));
    if (ec == beast::error::timeout)
      return finish(failed(ErrorKind::Unavailable,
                           fmt::format("the connection to {} is dead: nothing came for {} ms (idle_timeout), not even a pong",
                                       where, options.idle_timeout.count())));
    if (we_closed)
      return finish(closed(1006, fmt::format("the connection ended without the server's close frame ({})", ec.message()), false));
    finish(failed(ErrorKind::Unavailable,
                  fmt::format("the connection to {} broke without a close frame: {}", where, ec.message())));
  }

  void write_next() {
    Outgoing* o;
    {
      std::lock_guard g(mu);
      if (outbox.empty() || ended) {
        writing = false;
        return;
      }
      o = &outbox.front();  // stays put while others append: a deque's push_back keeps references valid
    }
    with_ws([&](auto& s) {
      s.binary(o->binary);
      s.async_write(asio::buffer(o->data), [this](const error_code& ec, size_t) { on_written(ec); });
    });
  }

  void on_written(const error_code& ec) {
    if (ec) {
      fail_now(fmt::format("sending to {} failed: {}", where, ec.message()));
      return;
    }
    std::optional<websocket::close_reason> close_now;
    bool next;
    {
      std::lock_guard g(mu);
      outbox.pop_front();
      ++counters.sent;
      next = !outbox.empty() && !ended;
      if (!next) {
        writing = false;
        close_now = std::exchange(close_queued, std::nullopt);
      }
    }
    if (close_now) return start_close(*close_now);
    if (next) write_next();
  }

  void request_close(websocket::close_reason r) {
    {
      std::lock_guard g(mu);
      if (ended) return;
      if (writing) {
        close_queued = r;  // after the queued messages (on_written starts it)
        return;
      }
    }
    start_close(r);
  }

  void start_close(const websocket::close_reason& r) {
    close_started = true;
    with_ws([&](auto& s) {
      s.async_close(r, [this, &s](const error_code& ec) {
        if (ec && ec != asio::error::operation_aborted) {
          fail_now(fmt::format("closing the WebSocket to {} failed: {}", where, ec.message()));
          return;
        }
        // Normally the pending read has already ended with the server's close frame; if not, it is this.
        auto reason = s.reason();
        if (!ec) finish(closed(reason.code, std::string(reason.reason.c_str()), false));
      });
    });
  }

  // Ends the connection at once, with `why`, and drops the socket so that pending reads end too.
  void fail_now(std::string why) {
    finish(failed(ErrorKind::Unavailable, std::move(why)));
    drop_socket();
  }

  void drop_socket() {
    with_ws([&](auto& s) { beast::get_lowest_layer(s).close(); });
  }

  static WebSocketEvent closed(uint16_t code, std::string reason, bool by_server) {
    WebSocketEvent e;
    e.kind = WebSocketEvent::Kind::Closed;
    e.close_code = code;
    e.close_reason = std::move(reason);
    e.closed_by_server = by_server;
    return e;
  }

  static WebSocketEvent failed(ErrorKind kind, std::string message) {
    WebSocketEvent e;
    e.kind = WebSocketEvent::Kind::Failed;
    e.error = Error{kind, std::move(message)};
    return e;
  }

  // The end, once: the last event receive() gives.
  void finish(WebSocketEvent e) {
    std::lock_guard g(mu);
    if (ended) return;
    ended = e;
    inbox.push_back(std::move(e));
    cv.notify_all();
  }

  // --- the caller's side ---

  std::expected<void, StreamFailure> open() {
    const auto deadline = Clock::now() + options.connect_timeout;
    StreamCall call{options.connect_timeout, options.cancelled};
    if (url.tls()) {
      tls_ctx.emplace(ssl::context::tls_client);
      if (auto c = configure_client_tls(tls_ctx->native_handle(), {.extra_ca_file = options.extra_ca_file, .alpn = "http/1.1"}); !c)
        return std::unexpected(StreamFailure{Kind::Tls, c.error()});
    }
    Dialer dialer(options.proxy, options.address_check);
    auto fd = dialer.dial(url, deadline, call);
    if (!fd) return std::unexpected(fd.error());
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&ss), &len);
    tcp::socket sock(ioc);
    error_code ec;
    sock.assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd->get(), ec);
    if (ec)
      return std::unexpected(failure(Kind::Io, ErrorKind::Internal, fmt::format("cannot use the connection to {}: {}", where, ec.message())));
    fd->release();  // the socket owns it now
    if (url.tls())
      ws = std::make_unique<TlsWs>(beast::tcp_stream(std::move(sock)), *tls_ctx);
    else
      ws = std::make_unique<PlainWs>(beast::tcp_stream(std::move(sock)));

    io = std::thread([this] { run(); });
    asio::post(ioc, [this] { start_opening(); });

    // Wait for the handshakes, cutting them short at the deadline or when the caller cancels.
    std::unique_lock l(mu);
    while (!opened) {
      cv.wait_for(l, std::chrono::milliseconds(100));
      if (opened || abort_reason) continue;
      if (options.cancelled && options.cancelled())
        abort_reason = failure(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
      else if (Clock::now() >= deadline)
        abort_reason = failure(Kind::Io, ErrorKind::Unavailable,
                               fmt::format("{} did not complete the {} handshake within {} ms", where,
                                           url.tls() ? "TLS and WebSocket" : "WebSocket", options.connect_timeout.count()));
      if (abort_reason) asio::post(ioc, [this] { drop_socket(); });
    }
    if (open_failure) {
      auto f = *open_failure;
      l.unlock();
      stop_io(std::chrono::milliseconds(0));
      return std::unexpected(f);
    }
    connected = true;
    return {};
  }

  // Ends the io thread: lets it finish what the dropped socket aborts within `grace`, then stops it.
  void stop_io(std::chrono::milliseconds grace) {
    if (!io.joinable()) return;
    asio::post(ioc, [this] {
      drop_socket();
      work.reset();
    });
    {
      std::unique_lock l(mu);
      cv.wait_for(l, grace + std::chrono::milliseconds(500), [&] { return io_done; });
    }
    ioc.stop();  // anything still queued is dropped, not run
    io.join();
  }

  Status send(std::string data, bool binary) {
    std::lock_guard g(mu);
    if (ended) return fail(ErrorKind::Unavailable, "the WebSocket to {} has ended; nothing more can be sent", where);
    if (closing) return fail(ErrorKind::Unavailable, "the WebSocket to {} is closing; nothing more can be sent", where);
    if (outbox.size() >= options.max_queued_sends)
      return fail(ErrorKind::ResourceLimit, "{} messages are already waiting to be sent to {} (max_queued_sends)",
                  outbox.size(), where);
    outbox.push_back(Outgoing{std::move(data), binary});
    if (!writing) {
      writing = true;
      asio::post(ioc, [this] { write_next(); });
    }
    return {};
  }

  std::optional<WebSocketEvent> receive(Clock::time_point deadline) {
    std::unique_lock l(mu);
    if (!cv.wait_until(l, deadline, [&] { return !inbox.empty(); })) return std::nullopt;
    WebSocketEvent e = inbox.front();
    bool is_end = e.kind != WebSocketEvent::Kind::Message;
    if (!is_end) inbox.pop_front();  // the end stays, for every later call
    if (reading_paused && !ended && inbox.size() < options.max_buffered_messages) {
      reading_paused = false;
      asio::post(ioc, [this] { read_next(); });
    }
    return e;
  }

  void close(uint16_t code, std::string_view reason) {
    {
      std::lock_guard g(mu);
      if (ended || closing) return;
      closing = true;
    }
    websocket::close_reason r(static_cast<websocket::close_code>(code), beast::string_view(reason.data(), std::min<size_t>(reason.size(), 123)));
    asio::post(ioc, [this, r] { request_close(r); });
  }

  ~Impl() {
    if (connected) {
      close(websocket::close_code::going_away, {});
      std::unique_lock l(mu);
      cv.wait_for(l, options.close_timeout, [&] { return ended.has_value(); });
    }
    stop_io(std::chrono::milliseconds(0));
  }
};

WebSocket::WebSocket(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WebSocket::~WebSocket() = default;

std::expected<std::unique_ptr<WebSocket>, StreamFailure> WebSocket::connect(const Url& url, WebSocketOptions options) {
  if (url.scheme != Scheme::Ws && url.scheme != Scheme::Wss)
    return std::unexpected(failure(Kind::Connect, ErrorKind::InvalidInput,
                                   fmt::format("{} is not a WebSocket URL: it must start with ws:// or wss://", url.origin())));
  auto impl = std::make_unique<Impl>(url, std::move(options));
  if (auto r = impl->open(); !r) return std::unexpected(r.error());
  return std::unique_ptr<WebSocket>(new WebSocket(std::move(impl)));
}

Status WebSocket::send(std::string text) { return impl_->send(std::move(text), false); }
Status WebSocket::send_binary(std::string data) { return impl_->send(std::move(data), true); }
std::optional<WebSocketEvent> WebSocket::receive(Clock::time_point deadline) { return impl_->receive(deadline); }
void WebSocket::close(uint16_t code, std::string_view reason) { impl_->close(code, reason); }

std::optional<WebSocketEvent> WebSocket::end() const {
  std::lock_guard g(impl_->mu);
  return impl_->ended;
}

WebSocketStats WebSocket::stats() const {
  std::lock_guard g(impl_->mu);
  return impl_->counters;
}

const std::string& WebSocket::where() const { return impl_->where; }

}  // namespace moat::net
