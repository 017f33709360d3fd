#include "agent/providers/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include "base/unique_fd.h"

namespace moat::agent {
namespace {

using Clock = std::chrono::steady_clock;
using Failure = HttpFailure;
using Kind = HttpFailure::Kind;

std::unexpected<Failure> failure(Kind kind, ErrorKind error_kind, std::string message) {
  return std::unexpected(Failure{kind, Error{error_kind, std::move(message)}});
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// One connection: a non-blocking socket, optionally wrapped in TLS. Every wait goes through
// wait_io(), which polls in short slices so cancellation is noticed within ~100 ms.
class Connection {
 public:
  Connection(const Url& url, const HttpOptions& options) : url_(url), options_(options) {}

  std::expected<void, Failure> open(Clock::time_point deadline) {
    if (auto r = connect_tcp(deadline); !r) return r;
    if (url_.tls) return handshake(deadline);
    return {};
  }

  std::expected<void, Failure> write_all(std::string_view data, Clock::time_point deadline) {
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
          if (auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w) return w;
          continue;
        }
        return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", where(), openssl_errors()));
      }
      ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (auto w = wait_io(POLLOUT, deadline); !w) return w;
        continue;
      }
      return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", where(), std::strerror(errno)));
    }
    return {};
  }

  // Some bytes into buf; 0 = the peer closed the connection.
  std::expected<size_t, Failure> read_some(char* buf, size_t cap, Clock::time_point deadline) {
    for (;;) {
      if (ssl_) {
        size_t n = 0;
        ERR_clear_error();
        int rc = SSL_read_ex(ssl_.get(), buf, cap, &n);
        if (rc == 1) return n;
        int err = SSL_get_error(ssl_.get(), rc);
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          if (auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline); !w)
            return std::unexpected(w.error());
          continue;
        }
        // A peer that closes without close_notify: treat as EOF, the framing decides if it was early.
        if (err == SSL_ERROR_SYSCALL || (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) ==
                                                                      SSL_R_UNEXPECTED_EOF_WHILE_READING))
          return 0;
        return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", where(), openssl_errors()));
      }
      ssize_t n = ::recv(fd_.get(), buf, cap, 0);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EAGAIN || errno == EINTR) {
        if (auto w = wait_io(POLLIN, deadline); !w) return std::unexpected(w.error());
        continue;
      }
      if (errno == ECONNRESET) return 0;
      return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", where(), std::strerror(errno)));
    }
  }

  std::string where() const { return fmt::format("{}:{}", url_.host, url_.port); }

 private:
  std::expected<void, Failure> wait_io(short events, Clock::time_point deadline) {
    for (;;) {
      if (options_.cancelled && options_.cancelled())
        return failure(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
      auto now = Clock::now();
      if (now >= deadline)
        return failure(Kind::Io, ErrorKind::Unavailable,
                       fmt::format("{} did not answer within {} ms", where(), options_.timeout.count()));
      auto slice = std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(100));
      pollfd p{fd_.get(), events, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
      if (rc > 0) return {};
      if (rc < 0 && errno != EINTR)
        return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("poll: {}", std::strerror(errno)));
    }
  }

  std::expected<void, Failure> connect_tcp(Clock::time_point deadline) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    addrinfo* res = nullptr;
    std::string port = std::to_string(url_.port);
    // getaddrinfo blocks without a timeout; for the few provider hosts that is acceptable.
    if (int rc = ::getaddrinfo(url_.host.c_str(), port.c_str(), &hints, &res); rc != 0)
      return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot resolve {}: {}", url_.host, gai_strerror(rc)));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
    std::string last = "no address";
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
      if (!fd) {
        last = std::strerror(errno);
        continue;
      }
      int one = 1;
      ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
          last = std::strerror(errno);
          continue;
        }
        fd_ = std::move(fd);
        auto w = wait_io(POLLOUT, deadline);
        if (!w) {
          if (w.error().kind == Kind::Cancelled) return w;
          last = w.error().error.message;
          fd_.reset();
          continue;
        }
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          last = std::strerror(err);
          fd_.reset();
          continue;
        }
        return {};
      }
      fd_ = std::move(fd);
      return {};
    }
    return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot connect to {}: {}", where(), last));
  }

  std::expected<void, Failure> handshake(Clock::time_point deadline) {
    auto tls_fail = [&](std::string what) {
      return failure(Kind::Tls, ErrorKind::Unavailable, fmt::format("TLS with {}: {}", where(), what));
    };
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx_) return tls_fail(openssl_errors());
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    if (SSL_CTX_set_default_verify_paths(ctx_.get()) != 1) return tls_fail("cannot load the host's CA store");
    if (!options_.extra_ca_file.empty() &&
        SSL_CTX_load_verify_locations(ctx_.get(), options_.extra_ca_file.c_str(), nullptr) != 1)
      return failure(Kind::Tls, ErrorKind::InvalidInput,
                     fmt::format("cannot load the extra CA file '{}': {}", options_.extra_ca_file.string(),
                                 openssl_errors()));
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx_.get(), kAlpn, sizeof kAlpn);

    ssl_.reset(SSL_new(ctx_.get()));
    if (!ssl_) return tls_fail(openssl_errors());
    in6_addr ip{};
    bool is_ip = ::inet_pton(AF_INET, url_.host.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, url_.host.c_str(), &ip) == 1;
    if (is_ip) {
      // No SNI for address literals (RFC 6066); the certificate must carry the IP as a SAN.
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), url_.host.c_str()) != 1)
        return tls_fail("cannot set the expected address");
    } else {
      if (SSL_set_tlsext_host_name(ssl_.get(), url_.host.c_str()) != 1 || SSL_set1_host(ssl_.get(), url_.host.c_str()) != 1)
        return tls_fail("cannot set the expected host name");
      X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl_.get()), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    SSL_set_fd(ssl_.get(), fd_.get());
    for (;;) {
      ERR_clear_error();
      int rc = SSL_connect(ssl_.get());
      if (rc == 1) return {};
      int err = SSL_get_error(ssl_.get(), rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
        if (!w) return w;
        continue;
      }
      long vr = SSL_get_verify_result(ssl_.get());
      if (vr != X509_V_OK) return tls_fail(fmt::format("certificate verification failed: {}", X509_verify_cert_error_string(vr)));
      return tls_fail(openssl_errors());
    }
  }

  const Url& url_;
  const HttpOptions& options_;
  UniqueFd fd_;
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;  // declared after ctx_: freed first
};

// Buffered reading on top of Connection: lines for the head and chunk sizes, bytes for bodies.
class Reader {
 public:
  Reader(Connection& c, const HttpOptions& o) : conn_(c), options_(o) {}

  Clock::time_point deadline = Clock::time_point::max();
  bool idle_deadline = false;  // after the head: each read gets a fresh `timeout`

  // false = EOF before anything more.
  std::expected<bool, Failure> fill() {
    char buf[16384];
    auto d = idle_deadline ? Clock::now() + options_.timeout : deadline;
    auto n = conn_.read_some(buf, sizeof buf, d);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) return false;
    buf_.append(buf, *n);
    return true;
  }

  std::expected<std::string, Failure> line(size_t limit = 65536) {
    for (;;) {
      if (auto pos = buf_.find('\n', pos_); pos != std::string::npos) {
        std::string out = buf_.substr(pos_, pos - pos_);
        pos_ = pos + 1;
        if (!out.empty() && out.back() == '\r') out.pop_back();
        return out;
      }
      if (buf_.size() - pos_ > limit + 2) return protocol("a header line is too long");
      compact();
      auto more = fill();
      if (!more) return std::unexpected(more.error());
      if (!*more) return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("{} closed the connection early", conn_.where()));
    }
  }

  // Up to n bytes already buffered or newly read; empty = EOF.
  std::expected<std::string_view, Failure> some(size_t n) {
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
      auto more = fill();
      if (!more) return std::unexpected(more.error());
      if (!*more) return std::string_view{};
    }
    size_t take = std::min(n, buf_.size() - pos_);
    std::string_view out(buf_.data() + pos_, take);
    pos_ += take;
    return out;
  }

  std::unexpected<Failure> protocol(std::string_view what) {
    return failure(Kind::Protocol, ErrorKind::Unavailable, fmt::format("{} sent a bad HTTP response: {}", conn_.where(), what));
  }

 private:
  void compact() {
    if (pos_ > 0) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }
  Connection& conn_;
  const HttpOptions& options_;
  std::string buf_;
  size_t pos_ = 0;
};

template <class T>
std::optional<T> parse_num(std::string_view s, int base = 10) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<std::string> header_value(const HeaderList& headers, std::string_view name) {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return std::nullopt;
}

std::string Url::authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if ((tls && port == 443) || (!tls && port == 80)) return h;
  return fmt::format("{}:{}", h, port);
}

Result<Url> parse_url(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(ErrorKind::InvalidInput, "base_url '{}' is not usable: {} (expected http[s]://host[:port][/path])", text, why);
  };
  Url u;
  std::string_view rest = text;
  if (rest.starts_with("https://")) {
    u.tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    return bad("the scheme must be http or https");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) return bad("it has a query or fragment");
  auto slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (hostport.find('@') != std::string_view::npos) return bad("credentials belong in the vault, not the URL");
  std::string_view port_text;
  if (hostport.starts_with("[")) {
    auto close = hostport.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 literal");
    u.host = std::string(hostport.substr(1, close - 1));
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("junk after the IPv6 literal");
      port_text = after.substr(1);
    }
  } else {
    auto colon = hostport.find(':');
    u.host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) port_text = hostport.substr(colon + 1);
  }
  if (u.host.empty()) return bad("no host");
  if (!port_text.empty()) {
    auto p = parse_num<uint32_t>(port_text);
    if (!p || *p == 0 || *p > 65535) return bad("bad port");
    u.port = static_cast<uint16_t>(*p);
  } else {
    u.port = u.tls ? 443 : 80;
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  u.path = std::string(path);
  return u;
}

std::expected<HttpResponseHead, HttpFailure> http_send(const Url& url, const HttpRequest& request,
                                                       const HttpOptions& options, const HeadCallback& on_head,
                                                       const BodyCallback& on_body) {
  Connection conn(url, options);
  const auto deadline = Clock::now() + options.timeout;
  if (auto r = conn.open(deadline); !r) return std::unexpected(r.error());

  std::string head = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\n", request.method, request.target, url.authority());
  for (const auto& [k, v] : request.headers) {
    head += k;
    head += ": ";
    head += v;
    head += "\r\n";
  }
  head += fmt::format("Content-Length: {}\r\nConnection: close\r\n\r\n", request.body.size());
  auto sent = conn.write_all(head, deadline);
  // The head may carry credentials: wipe our copy whatever happened.
  OPENSSL_cleanse(head.data(), head.size());
  if (!sent) return std::unexpected(sent.error());
  if (auto r = conn.write_all(request.body, deadline); !r) return std::unexpected(r.error());

  Reader in(conn, options);
  in.deadline = deadline;
  HttpResponseHead resp;
  for (;;) {  // skip 1xx interim responses
    auto status_line = in.line();
    if (!status_line) return std::unexpected(status_line.error());
    std::string_view sl = *status_line;
    if (!sl.starts_with("HTTP/1.") || sl.size() < 12 || sl[8] != ' ') return in.protocol("bad status line");
    auto status = parse_num<int>(sl.substr(9, 3));
    if (!status) return in.protocol("bad status code");
    resp = {};
    resp.status = *status;
    resp.reason = std::string(trim(sl.size() > 13 ? sl.substr(13) : std::string_view{}));
    for (;;) {
      auto l = in.line();
      if (!l) return std::unexpected(l.error());
      if (l->empty()) break;
      auto colon = l->find(':');
      if (colon == std::string::npos) return in.protocol("header line without a colon");
      resp.headers.emplace_back(l->substr(0, colon), std::string(trim(std::string_view(*l).substr(colon + 1))));
      if (resp.headers.size() > 200) return in.protocol("too many headers");
    }
    if (resp.status >= 200) break;
  }
  if (on_head) on_head(resp);
  in.idle_deadline = true;

  auto deliver = [&](std::string_view piece) -> std::expected<void, Failure> {
    // A fast stream never blocks in wait_io, so cancellation is also checked here.
    if (options.cancelled && options.cancelled())
      return failure(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
    if (piece.empty() || !on_body || on_body(piece)) return {};
    return failure(Kind::Aborted, ErrorKind::Unavailable, "stopped reading the response");
  };
  auto early = [&] {
    return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("{} closed the connection mid-response", conn.where()));
  };

  auto te = resp.header("transfer-encoding");
  auto cl = resp.header("content-length");
  if (resp.status == 204 || resp.status == 304) return resp;
  if (te && te->find("chunked") != std::string::npos) {
    for (;;) {
      auto size_line = in.line(1024);
      if (!size_line) return std::unexpected(size_line.error());
      std::string_view hex = trim(std::string_view(*size_line).substr(0, size_line->find(';')));
      auto size = parse_num<uint64_t>(hex, 16);
      if (!size) return in.protocol("bad chunk size");
      if (*size == 0) break;
      for (uint64_t left = *size; left > 0;) {
        auto piece = in.some(static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
        if (!piece) return std::unexpected(piece.error());
        if (piece->empty()) return early();
        left -= piece->size();
        if (auto d = deliver(*piece); !d) return std::unexpected(d.error());
      }
      auto crlf = in.line(0);
      if (!crlf) return std::unexpected(crlf.error());
      if (!crlf->empty()) return in.protocol("chunk not followed by CRLF");
    }
    for (;;) {  // trailers
      auto t = in.line();
      if (!t) return std::unexpected(t.error());
      if (t->empty()) break;
    }
    return resp;
  }
  if (cl) {
    auto total = parse_num<uint64_t>(trim(*cl));
    if (!total) return in.protocol("bad Content-Length");
    for (uint64_t left = *total; left > 0;) {
      auto piece = in.some(static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
      if (!piece) return std::unexpected(piece.error());
      if (piece->empty()) return early();
      left -= piece->size();
      if (auto d = deliver(*piece); !d) return std::unexpected(d.error());
    }
    return resp;
  }
  for (;;) {  // no framing: the body ends when the server closes
    auto piece = in.some(1 << 20);
    if (!piece) return std::unexpected(piece.error());
    if (piece->empty()) return resp;
    if (auto d = deliver(*piece); !d) return std::unexpected(d.error());
  }
}

}  // namespace moat::agent
