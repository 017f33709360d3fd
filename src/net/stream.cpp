#include "net/stream.h"

#include <arpa/inet.h>
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
#include <cstdlib>
#include <cstring>

#include "net/tls_errors.h"

namespace moat::net {
namespace {

using Kind = StreamFailure::Kind;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

template <class T>
std::optional<T> parse_num(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Waits until fd is ready for `events`, in 100 ms slices so that cancellation is noticed quickly.
std::expected<void, StreamFailure> wait_fd(int fd, short events, Clock::time_point deadline, const StreamCall& call,
                                           std::string_view where) {
  for (;;) {
    if (call.cancelled && call.cancelled()) return stream_failed(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
    auto now = Clock::now();
    if (now >= deadline)
      return stream_failed(Kind::Io, ErrorKind::Unavailable,
                           fmt::format("{} did not answer within {} ms", where, call.timeout.count()));
    auto slice = std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(100));
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
    if (rc > 0) return {};
    if (rc < 0 && errno != EINTR)
      return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("poll: {}", std::strerror(errno)));
  }
}

IpAddress to_ip(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET6) {
    const auto& s6 = reinterpret_cast<const sockaddr_in6&>(ss);
    boost::asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &s6.sin6_addr, b.size());
    return boost::asio::ip::address_v6(b, s6.sin6_scope_id);
  }
  const auto& s4 = reinterpret_cast<const sockaddr_in&>(ss);
  return boost::asio::ip::address_v4(ntohl(s4.sin_addr.s_addr));
}

// Every address `host` resolves to that `check` allows (all of them without one).
std::expected<std::vector<sockaddr_storage>, StreamFailure> resolve(const std::string& host, uint16_t port,
                                                                    const AddressCheck& check, std::string_view what) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  std::string port_text = std::to_string(port);
  // getaddrinfo blocks without a timeout; for the few hosts moatd calls that is acceptable.
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0)
    return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot resolve {}{}: {}", what, host, gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  std::vector<sockaddr_storage> out;
  std::optional<Error> refusal;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    if (check) {
      if (auto ok = check(to_ip(ss)); !ok) {
        if (!refusal) refusal = ok.error();
        continue;
      }
    }
    out.push_back(ss);
  }
  if (out.empty() && refusal) return std::unexpected(StreamFailure{Kind::Refused, *refusal});
  if (out.empty()) return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("{}{} has no address", what, host));
  return out;
}

// A TCP connection to the first of `addrs` that answers.
std::expected<UniqueFd, StreamFailure> connect_any(const std::vector<sockaddr_storage>& addrs, const std::string& where,
                                                   Clock::time_point deadline, const StreamCall& call,
                                                   std::atomic<size_t>* opened) {
  std::string last = "no address";
  for (const auto& ss : addrs) {
    UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      last = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
      if (errno != EINPROGRESS) {
        last = std::strerror(errno);
        continue;
      }
      auto w = wait_fd(fd.get(), POLLOUT, deadline, call, where);
      if (!w) {
        if (w.error().kind == Kind::Cancelled) return std::unexpected(w.error());
        last = w.error().error.message;
        continue;
      }
      int err = 0;
      socklen_t elen = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen);
      if (err != 0) {
        last = std::strerror(err);
        continue;
      }
    }
    if (opened) opened->fetch_add(1);
    return fd;
  }
  return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot connect to {}: {}", where, last));
}

// The prefix bits of two addresses of one family are equal.
bool same_prefix(const IpAddress& a, const IpAddress& b, unsigned bits) {
  auto cmp = [&](const auto& x, const auto& y) {
    for (unsigned i = 0; i < x.size() && bits > 0; ++i, bits = bits >= 8 ? bits - 8 : 0) {
      unsigned mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
      if ((x[i] & mask) != (y[i] & mask)) return false;
    }
    return true;
  };
  if (a.is_v4() && b.is_v4()) return cmp(a.to_v4().to_bytes(), b.to_v4().to_bytes());
  if (a.is_v6() && b.is_v6()) return cmp(a.to_v6().to_bytes(), b.to_v6().to_bytes());
  return false;
}

std::string env(const char* upper, const char* lower_name) {
  if (const char* v = std::getenv(upper); v && *v) return v;
  if (const char* v = std::getenv(lower_name); v && *v) return v;
  return {};
}

}  // namespace

// --- proxy settings ---

ProxySettings ProxySettings::parse(std::string_view https_proxy, std::string_view no_proxy) {
  ProxySettings p;
  for (size_t start = 0; start <= no_proxy.size();) {
    size_t comma = no_proxy.find(',', start);
    auto entry = lower(trim(no_proxy.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start)));
    while (!entry.empty() && entry.front() == ' ') entry.erase(0, 1);
    if (entry.starts_with("*.")) entry.erase(0, 2);
    if (entry.starts_with(".")) entry.erase(0, 1);
    if (!entry.empty()) p.no_proxy.push_back(entry);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  auto text = trim(https_proxy);
  if (text.empty()) return p;
  std::string with_scheme = text.find("://") == std::string_view::npos ? fmt::format("http://{}", text) : std::string(text);
  auto url = parse_url(with_scheme);
  if (!url) {
    p.error = fmt::format("HTTPS_PROXY '{}' is not usable: {} (expected http://host:port)", text, url.error().message);
  } else if (url->tls()) {
    p.error = fmt::format("HTTPS_PROXY '{}' is not usable: TLS to the proxy is not supported; use http://host:port", text);
  } else {
    p.https_proxy = HostPort{url->host, url->port};
  }
  return p;
}

ProxySettings ProxySettings::from_environment() {
  return parse(env("HTTPS_PROXY", "https_proxy"), env("NO_PROXY", "no_proxy"));
}

bool ProxySettings::bypasses(std::string_view host_text) const {
  std::string host = lower(host_text);
  auto host_ip = parse_ip_literal(host);
  for (const auto& e : no_proxy) {
    if (e == "*") return true;
    if (auto slash = e.find('/'); slash != std::string::npos) {
      auto net = parse_ip_literal(std::string_view(e).substr(0, slash));
      auto bits = parse_num<unsigned>(std::string_view(e).substr(slash + 1));
      if (host_ip && net && bits && same_prefix(unmap(*host_ip), unmap(*net), *bits)) return true;
      continue;
    }
    if (auto ip = parse_ip_literal(e)) {
      if (host_ip && unmap(*ip) == unmap(*host_ip)) return true;
      continue;
    }
    if (host == e || (host.size() > e.size() && host.ends_with(e) && host[host.size() - e.size() - 1] == '.')) return true;
  }
  return false;
}

// --- TLS settings ---

std::expected<TlsContext, StreamFailure> TlsContext::make(const TlsSettings& settings) {
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return stream_failed(Kind::Tls, ErrorKind::Internal, fmt::format("TLS setup: {}", tls_errors()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (settings.system_store && SSL_CTX_set_default_verify_paths(ctx.get()) != 1)
    return stream_failed(Kind::Tls, ErrorKind::Unavailable, "TLS setup: cannot load the host's CA store");
  if (!settings.extra_ca_file.empty() &&
      SSL_CTX_load_verify_locations(ctx.get(), settings.extra_ca_file.c_str(), nullptr) != 1)
    return stream_failed(Kind::Tls, ErrorKind::InvalidInput,
                         fmt::format("cannot load the CA file '{}': {}", settings.extra_ca_file.string(), tls_errors()));
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (!settings.alpn.empty()) {
    if (settings.alpn.size() > 255)
      return stream_failed(Kind::Tls, ErrorKind::InvalidInput, "TLS setup: the ALPN protocol name is too long");
    std::string wire(1, static_cast<char>(settings.alpn.size()));
    wire += settings.alpn;
    SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()), static_cast<unsigned>(wire.size()));
  }
  TlsContext out;
  out.ctx_ = std::move(ctx);
  return out;
}

// --- the stream ---

void Stream::SslFree::operator()(ssl_st* s) const { SSL_free(s); }

Stream::Stream(UniqueFd fd, std::string where) : fd_(std::move(fd)), where_(std::move(where)) {}
Stream::~Stream() = default;

std::expected<std::unique_ptr<Stream>, StreamFailure> Stream::connect(const std::string& host, uint16_t port,
                                                                      const ConnectOptions& options,
                                                                      Clock::time_point deadline, const StreamCall& call) {
  const std::string where = authority_text(host, port);
  const ProxySettings* proxy = options.proxy;
  bool proxied = options.tls && proxy && !proxy->bypasses(host);
  if (proxied && !proxy->error.empty()) return stream_failed(Kind::Connect, ErrorKind::InvalidInput, proxy->error);
  proxied = proxied && proxy->https_proxy.has_value();

  std::unique_ptr<Stream> conn;
  if (proxied) {
    // With an address check, the host is resolved here even though the proxy would resolve it,
    // and the tunnel asks for a checked address: the proxy's own lookup could answer differently.
    std::vector<std::string> tunnel_to;  // what to ask the proxy for, in order
    if (options.address_check) {
      auto addrs = resolve(host, port, options.address_check, "");
      if (!addrs) return std::unexpected(addrs.error());
      for (const auto& a : *addrs) tunnel_to.push_back(format_endpoint(to_ip(a), port));
    } else {
      tunnel_to.push_back(where);
    }
    const auto& via = *proxy->https_proxy;
    std::string proxy_where = authority_text(via.host, via.port);
    // The proxy is ours to choose (moatd's environment): no address check applies to it.
    auto proxy_addrs = resolve(via.host, via.port, nullptr, "the proxy ");
    if (!proxy_addrs) return std::unexpected(proxy_addrs.error());
    // One tunnel per address to try, as a direct connection tries each address in turn.
    std::optional<StreamFailure> last;
    for (const auto& to : tunnel_to) {
      auto fd = connect_any(*proxy_addrs, fmt::format("the proxy {}", proxy_where), deadline, call, options.opened);
      if (!fd) return std::unexpected(fd.error());
      std::unique_ptr<Stream> c(new Stream(std::move(*fd), proxy_where));
      if (auto t = c->tunnel(to, deadline, call); !t) {
        if (t.error().kind == Kind::Cancelled) return std::unexpected(t.error());
        last = t.error();
        continue;
      }
      c->where_ = where;  // the proxy's tunnel is now the host's connection
      conn = std::move(c);
      break;
    }
    if (!conn) return std::unexpected(*last);
  } else {
    auto addrs = resolve(host, port, options.address_check, "");
    if (!addrs) return std::unexpected(addrs.error());
    auto fd = connect_any(*addrs, where, deadline, call, options.opened);
    if (!fd) return std::unexpected(fd.error());
    conn.reset(new Stream(std::move(*fd), where));
  }
  if (options.tls)
    if (auto h = conn->handshake(*options.tls, host, deadline, call); !h) return std::unexpected(h.error());
  return conn;
}

// Asks the proxy for a tunnel to `authority` and reads its answer's head, byte by byte so that
// nothing of what follows (the TLS handshake) is consumed.
std::expected<void, StreamFailure> Stream::tunnel(const std::string& authority, Clock::time_point deadline,
                                                  const StreamCall& call) {
  std::string req = fmt::format("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n", authority, authority);
  if (auto w = write_all(req, deadline, call); !w) return w;
  std::string head;
  while (!head.ends_with("\r\n\r\n")) {
    if (head.size() > 16384)
      return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("the proxy {} sent an overlong answer", where_));
    char ch;
    auto n = read_some(&ch, 1, deadline, call);
    if (!n) return std::unexpected(n.error());
    if (*n == 0)
      return stream_failed(Kind::Connect, ErrorKind::Unavailable,
                           fmt::format("the proxy {} closed the connection instead of opening a tunnel to {}", where_, authority));
    head.push_back(ch);
  }
  auto status_line = std::string_view(head).substr(0, head.find("\r\n"));
  auto status = status_line.size() >= 12 && status_line.starts_with("HTTP/1.") ? parse_num<int>(status_line.substr(9, 3))
                                                                               : std::nullopt;
  if (!status || *status / 100 != 2)
    return stream_failed(Kind::Connect, ErrorKind::Unavailable,
                         fmt::format("the proxy {} refused a tunnel to {}: {}", where_, authority, status_line));
  return {};
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
  return wait_fd(fd_.get(), events, deadline, call, where_);
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
  in6_addr ip{};
  bool is_ip = ::inet_pton(AF_INET, host.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, host.c_str(), &ip) == 1;
  if (is_ip) {
    // No SNI for address literals (RFC 6066); the certificate must carry the IP as a SAN.
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), host.c_str()) != 1)
      return tls_fail("cannot set the expected address");
  } else {
    if (SSL_set_tlsext_host_name(ssl_.get(), host.c_str()) != 1 || SSL_set1_host(ssl_.get(), host.c_str()) != 1)
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
      auto w = wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, call);
      if (!w) return w;
      continue;
    }
    long vr = SSL_get_verify_result(ssl_.get());
    if (vr != X509_V_OK) return tls_fail(fmt::format("certificate verification failed: {}", X509_verify_cert_error_string(vr)));
    return tls_fail(tls_errors());
  }
}

}  // namespace moat::net
