#include "net/stream.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "net/tls_errors.h"

namespace moat::net {

using Kind = StreamFailure::Kind;

// --- TLS settings ---

std::expected<TlsContext, StreamFailure> TlsContext::make(const TlsSettings& settings) {
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return stream_failed(Kind::Tls, ErrorKind::Internal, fmt::format("TLS setup: {}", tls_errors()));
  if (auto c = configure_client_tls(ctx.get(), settings); !c)
    return std::unexpected(StreamFailure{Kind::Tls, c.error()});
  TlsContext out;
  out.ctx_ = std::move(ctx);
  return out;
}

// --- the stream ---

void Stream::SslFree::operator()(ssl_st* s) const { SSL_free(s); }

Stream::Stream(UniqueFd fd, std::string where) : fd_(std::move(fd)), where_(std::move(where)) {}
Stream::~Stream() = default;

std::expected<std::unique_ptr<Stream>, StreamFailure> Stream::connect(Dialer& dialer, const std::string& host,
                                                                      uint16_t port, const TlsContext* tls,
                                                                      Clock::time_point deadline, const StreamCall& call) {
  auto fd = dialer.dial(host, port, tls != nullptr, deadline, call);
  if (!fd) return std::unexpected(fd.error());
  std::unique_ptr<Stream> conn(new Stream(std::move(*fd), authority_text(host, port)));
  if (tls)
    if (auto h = conn->handshake(*tls, host, deadline, call); !h) return std::unexpected(h.error());
  return conn;
}

std::expected<void, StreamFailure> Stream::write_all(std::string_view data, Clock::time_point deadline,
                                                     const StreamCall& call) {
  while (!data.empty()) {
    if (ssl_) {
      size_t n = 0;
      ERR_clear_error();
      int rc = SSL_write_ex(ssl_.get(), data.data(), data.size(), &n);
      if (rc == 1) {
        data.remove_prefix(n);
        continue;
      }
      int err = SSL_get_error(ssl_.get(), rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, call); !w) return w;
        continue;
      }
      return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", where_, tls_errors()));
    }
    ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (auto w = wait_io(POLLOUT, deadline, call); !w) return w;
      continue;
    }
    return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", where_, std::strerror(errno)));
  }
  return {};
}

std::expected<size_t, StreamFailure> Stream::read_some(char* buf, size_t cap, Clock::time_point deadline,
                                                       const StreamCall& call) {
  for (;;) {
    if (ssl_) {
      size_t n = 0;
      ERR_clear_error();
      int rc = SSL_read_ex(ssl_.get(), buf, cap, &n);
      if (rc == 1) return n;
      int err = SSL_get_error(ssl_.get(), rc);
      if (err == SSL_ERROR_ZERO_RETURN) return 0;
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, call); !w)
          return std::unexpected(w.error());
        continue;
      }
      if (err == SSL_ERROR_SYSCALL ||
          (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING))
        return 0;
      return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", where_, tls_errors()));
    }
    ssize_t n = ::recv(fd_.get(), buf, cap, 0);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EAGAIN || errno == EINTR) {
      if (auto w = wait_io(POLLIN, deadline, call); !w) return std::unexpected(w.error());
      continue;
    }
    if (errno == ECONNRESET) return 0;
    return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", where_, std::strerror(errno)));
  }
}

std::expected<void, StreamFailure> Stream::wait_io(short events, Clock::time_point deadline, const StreamCall& call) {
  return wait_ready(fd_.get(), events, deadline, call, where_);
}

bool Stream::idle_and_open() const {
  if (ssl_ && SSL_pending(ssl_.get()) > 0) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

bool Stream::peer_closed() {
  if (!fd_) return true;
  pollfd p{fd_.get(), POLLIN | POLLRDHUP, 0};
  int rc = ::poll(&p, 1, 0);
  if (rc < 0) return errno != EINTR;
  if (rc == 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  if (!(p.revents & POLLIN)) return false;
  if (!ssl_) return true;
  // TLS 1.3 servers send session tickets after the handshake: handshake records are not the peer
  // talking. Read them (the socket does not block); only application data or a close counts.
  char byte;
  size_t n = 0;
  ERR_clear_error();
  int rc2 = SSL_read_ex(ssl_.get(), &byte, 1, &n);
  if (rc2 == 1) return true;
  int err = SSL_get_error(ssl_.get(), rc2);
  ERR_clear_error();
  return err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE;
}

std::expected<void, StreamFailure> Stream::handshake(const TlsContext& ctx, const std::string& host,
                                                     Clock::time_point deadline, const StreamCall& call) {
  auto tls_fail = [&](std::string what) {
    return stream_failed(Kind::Tls, ErrorKind::Unavailable, fmt::format("TLS with {}: {}", where_, what));
  };
  ctx_ = ctx;
  ssl_.reset(SSL_new(ctx.get()));
  if (!ssl_) return tls_fail(tls_errors());
  if (auto e = expect_peer_identity(ssl_.get(), host); !e) return tls_fail(e.error().message);
  SSL_set_fd(ssl_.get(), fd_.get());
  for (;;) {
    ERR_clear_error();
    int rc = SSL_connect(ssl_.get());
    if (rc == 1) return {};
    int err = SSL_get_error(ssl_.get(), rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, call);
      if (!w) return w;
      continue;
    }
    return tls_fail(tls_failure_text(ssl_.get(), tls_errors()));
  }
}

}  // namespace moat::net
