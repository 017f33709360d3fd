#include "net/http_client.h"

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
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>

#include "base/unique_fd.h"
#include "net/tls_errors.h"

namespace moat::net {
namespace {

using Clock = std::chrono::steady_clock;
using Failure = HttpFailure;
using Kind = HttpFailure::Kind;

std::unexpected<Failure> failure(Kind kind, ErrorKind error_kind, std::string message) {
  return std::unexpected(Failure{kind, Error{error_kind, std::move(message)}});
}

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
std::optional<T> parse_num(std::string_view s, int base = 10) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using SslCtx = std::shared_ptr<SSL_CTX>;

// What one call waits with: its options, and a name for messages.
struct CallContext {
  const CallOptions& options;
  std::string where;  // "host:port"
};

// Waits until fd is ready for `events`, in 100 ms slices so that cancellation is noticed quickly.
std::expected<void, Failure> wait_fd(int fd, short events, Clock::time_point deadline, const CallContext& call) {
  for (;;) {
    if (call.options.cancelled && call.options.cancelled())
      return failure(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
    auto now = Clock::now();
    if (now >= deadline)
      return failure(Kind::Io, ErrorKind::Unavailable,
                     fmt::format("{} did not answer within {} ms", call.where, call.options.timeout.count()));
    auto slice = std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(100));
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
    if (rc > 0) return {};
    if (rc < 0 && errno != EINTR) return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("poll: {}", std::strerror(errno)));
  }
}

// One connection: a non-blocking socket, optionally wrapped in TLS.
class Connection {
 public:
  Connection(UniqueFd fd, std::string where) : fd_(std::move(fd)), where_(std::move(where)) {}

  const std::string& where() const { return where_; }
  void rename(std::string where) { where_ = std::move(where); }  // a proxy's tunnel becomes the host's connection
  bool reused = false;            // it served a request before this one
  Clock::time_point idle_since;  // when it went back to the pool

  std::expected<void, Failure> write_all(std::string_view data, Clock::time_point deadline, const CallContext& call) {
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
        return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", where_, tls_errors()));
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
      return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", where_, std::strerror(errno)));
    }
    return {};
  }

  // Some bytes into buf; 0 = the peer closed the connection.
  std::expected<size_t, Failure> read_some(char* buf, size_t cap, Clock::time_point deadline, const CallContext& call) {
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
        // A peer that closes without close_notify: treat as EOF, the framing decides if it was early.
        if (err == SSL_ERROR_SYSCALL || (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) ==
                                                                      SSL_R_UNEXPECTED_EOF_WHILE_READING))
          return 0;
        return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", where_, tls_errors()));
      }
      ssize_t n = ::recv(fd_.get(), buf, cap, 0);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EAGAIN || errno == EINTR) {
        if (auto w = wait_io(POLLIN, deadline, call); !w) return std::unexpected(w.error());
        continue;
      }
      if (errno == ECONNRESET) return 0;
      return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", where_, std::strerror(errno)));
    }
  }

  std::expected<void, Failure> wait_io(short events, Clock::time_point deadline, const CallContext& call) {
    return wait_fd(fd_.get(), events, deadline, call);
  }

  // A pooled connection is usable if nothing is waiting to be read: an idle HTTP/1.1 connection
  // that turns readable was closed by the server (EOF, a TLS close_notify) or is out of step.
  bool idle_and_open() const {
    if (ssl_ && SSL_pending(ssl_.get()) > 0) return false;
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }

  std::expected<void, Failure> handshake(const SslCtx& ctx, const std::string& host, Clock::time_point deadline,
                                         const CallContext& call) {
    auto tls_fail = [&](std::string what) {
      return failure(Kind::Tls, ErrorKind::Unavailable, fmt::format("TLS with {}: {}", where_, what));
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

 private:
  UniqueFd fd_;
  std::string where_;
  SslCtx ctx_;                           // kept alive as long as ssl_ uses it
  std::unique_ptr<SSL, SslFree> ssl_;  // declared after ctx_: freed first
};

// Buffered reading on top of Connection: lines for the head and chunk sizes, bytes for bodies.
class Reader {
 public:
  Reader(Connection& c, const CallContext& call) : conn_(c), call_(call) {}

  Clock::time_point deadline = Clock::time_point::max();
  bool idle_deadline = false;  // after the head: each read gets a fresh `timeout`

  // false = EOF before anything more.
  std::expected<bool, Failure> fill() {
    char buf[16384];
    auto d = idle_deadline ? Clock::now() + call_.options.timeout : deadline;
    auto n = conn_.read_some(buf, sizeof buf, d, call_);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) return false;
    buf_.append(buf, *n);
    received_ += *n;
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

  uint64_t received() const { return received_; }  // bytes from the server so far
  bool drained() const { return pos_ == buf_.size(); }

 private:
  void compact() {
    if (pos_ > 0) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }
  Connection& conn_;
  const CallContext& call_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t received_ = 0;
};

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

// --- the client ---

struct HttpClient::Impl {
  ClientOptions options;
  std::atomic<size_t> opened{0};

  std::mutex mu;
  std::map<std::string, std::deque<std::unique_ptr<Connection>>> idle;  // "https://host:port" -> newest last
  SslCtx ssl_ctx;
  std::optional<Failure> ssl_ctx_error;

  // The TLS settings every connection shares: made once, with the extra CA file loaded once.
  std::expected<SslCtx, Failure> tls_context() {
    std::lock_guard g(mu);
    if (ssl_ctx) return ssl_ctx;
    if (ssl_ctx_error) return std::unexpected(*ssl_ctx_error);
    auto remember = [&](Failure f) {
      ssl_ctx_error = f;
      return std::unexpected(f);
    };
    SslCtx ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    if (!ctx) return remember({Kind::Tls, {ErrorKind::Internal, fmt::format("TLS setup: {}", tls_errors())}});
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1)
      return remember({Kind::Tls, {ErrorKind::Unavailable, "TLS setup: cannot load the host's CA store"}});
    if (!options.extra_ca_file.empty() &&
        SSL_CTX_load_verify_locations(ctx.get(), options.extra_ca_file.c_str(), nullptr) != 1)
      return remember({Kind::Tls, {ErrorKind::InvalidInput, fmt::format("cannot load the extra CA file '{}': {}",
                                                                         options.extra_ca_file.string(), tls_errors())}});
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof kAlpn);
    ssl_ctx = ctx;
    return ctx;
  }

  static std::string pool_key(const Url& url) { return fmt::format("{}://{}", scheme_name(url.scheme), authority_text(url.host, url.port)); }

  std::unique_ptr<Connection> take_idle(const std::string& key) {
    std::lock_guard g(mu);
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto& list = it->second;
    while (!list.empty()) {
      auto c = std::move(list.back());
      list.pop_back();
      if (Clock::now() - c->idle_since <= options.max_idle && c->idle_and_open()) {
        c->reused = true;
        return c;
      }
    }
    return nullptr;
  }

  void give_back(const std::string& key, std::unique_ptr<Connection> c) {
    c->idle_since = Clock::now();
    std::lock_guard g(mu);
    auto& list = idle[key];
    list.push_back(std::move(c));
    while (list.size() > options.max_idle_per_origin) list.pop_front();
  }

  // The addresses to try: every one the host resolves to that the AddressCheck allows.
  std::expected<std::vector<sockaddr_storage>, Failure> resolve(const std::string& host, uint16_t port) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    addrinfo* res = nullptr;
    std::string port_text = std::to_string(port);
    // getaddrinfo blocks without a timeout; for the few hosts moatd calls that is acceptable.
    if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0)
      return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
    std::vector<sockaddr_storage> out;
    std::optional<Error> refusal;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
      sockaddr_storage ss{};
      std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
      if (options.address_check) {
        if (auto ok = options.address_check(to_ip(ss)); !ok) {
          if (!refusal) refusal = ok.error();
          continue;
        }
      }
      out.push_back(ss);
    }
    if (out.empty() && refusal) return std::unexpected(Failure{Kind::Refused, *refusal});
    if (out.empty()) return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("{} has no address", host));
    return out;
  }

  static IpAddress to_ip(const sockaddr_storage& ss) {
    if (ss.ss_family == AF_INET6) {
      const auto& s6 = reinterpret_cast<const sockaddr_in6&>(ss);
      boost::asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &s6.sin6_addr, b.size());
      return boost::asio::ip::address_v6(b, s6.sin6_scope_id);
    }
    const auto& s4 = reinterpret_cast<const sockaddr_in&>(ss);
    return boost::asio::ip::address_v4(ntohl(s4.sin_addr.s_addr));
  }

  static void set_port(sockaddr_storage& ss, uint16_t port) {
    if (ss.ss_family == AF_INET6)
      reinterpret_cast<sockaddr_in6&>(ss).sin6_port = htons(port);
    else
      reinterpret_cast<sockaddr_in&>(ss).sin_port = htons(port);
  }

  // A TCP connection to the first of `addrs` that answers.
  std::expected<UniqueFd, Failure> connect_any(const std::vector<sockaddr_storage>& addrs, const std::string& where,
                                               Clock::time_point deadline, const CallContext& call) {
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
        auto w = wait_fd(fd.get(), POLLOUT, deadline, call);
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
      opened.fetch_add(1);
      return fd;
    }
    return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot connect to {}: {}", where, last));
  }

  // Asks the proxy for a tunnel to `authority` and reads its answer's head, byte by byte so that
  // nothing of what follows (the TLS handshake) is consumed.
  std::expected<void, Failure> tunnel(Connection& c, const std::string& authority, Clock::time_point deadline,
                                      const CallContext& call) {
    std::string req = fmt::format("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n", authority, authority);
    if (auto w = c.write_all(req, deadline, call); !w) return w;
    std::string head;
    while (!head.ends_with("\r\n\r\n")) {
      if (head.size() > 16384)
        return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("the proxy {} sent an overlong answer", c.where()));
      char ch;
      auto n = c.read_some(&ch, 1, deadline, call);
      if (!n) return std::unexpected(n.error());
      if (*n == 0)
        return failure(Kind::Connect, ErrorKind::Unavailable,
                       fmt::format("the proxy {} closed the connection instead of opening a tunnel to {}", c.where(), authority));
      head.push_back(ch);
    }
    auto status_line = std::string_view(head).substr(0, head.find("\r\n"));
    auto status = status_line.size() >= 12 && status_line.starts_with("HTTP/1.") ? parse_num<int>(status_line.substr(9, 3))
                                                                                 : std::nullopt;
    if (!status || *status / 100 != 2)
      return failure(Kind::Connect, ErrorKind::Unavailable,
                     fmt::format("the proxy {} refused a tunnel to {}: {}", c.where(), authority, status_line));
    return {};
  }

  std::expected<std::unique_ptr<Connection>, Failure> open(const Url& url, Clock::time_point deadline,
                                                          const CallContext& call) {
    std::optional<SslCtx> ctx;
    if (url.tls()) {
      auto c = tls_context();
      if (!c) return std::unexpected(c.error());
      ctx = *c;
    }
    bool proxied = url.tls() && !options.proxy.bypasses(url.host);
    if (proxied && !options.proxy.error.empty())
      return failure(Kind::Connect, ErrorKind::InvalidInput, options.proxy.error);
    proxied = proxied && options.proxy.https_proxy.has_value();

    std::unique_ptr<Connection> conn;
    if (proxied) {
      // With an address check, the host is resolved here even though the proxy would resolve it,
      // and the tunnel asks for a checked address: the proxy's own lookup could answer differently.
      std::vector<std::string> tunnel_to;  // what to ask the proxy for, in order
      if (options.address_check) {
        auto addrs = resolve(url.host, url.port);
        if (!addrs) return std::unexpected(addrs.error());
        for (const auto& a : *addrs) tunnel_to.push_back(format_endpoint(to_ip(a), url.port));
      } else {
        tunnel_to.push_back(authority_text(url.host, url.port));
      }
      const auto& proxy = *options.proxy.https_proxy;
      std::string proxy_where = authority_text(proxy.host, proxy.port);
      // The proxy is ours to choose (moatd's environment): no address check applies to it.
      addrinfo hints{};
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      std::string port_text = std::to_string(proxy.port);
      if (int rc = ::getaddrinfo(proxy.host.c_str(), port_text.c_str(), &hints, &res); rc != 0)
        return failure(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot resolve the proxy {}: {}", proxy.host, gai_strerror(rc)));
      std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
      std::vector<sockaddr_storage> proxy_addrs;
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
        sockaddr_storage ss{};
        std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        proxy_addrs.push_back(ss);
      }
      // One tunnel per address to try, as a direct connection tries each address in turn.
      std::optional<Failure> last;
      for (const auto& to : tunnel_to) {
        auto fd = connect_any(proxy_addrs, fmt::format("the proxy {}", proxy_where), deadline, call);
        if (!fd) return std::unexpected(fd.error());
        auto c = std::make_unique<Connection>(std::move(*fd), proxy_where);
        if (auto t = tunnel(*c, to, deadline, call); !t) {
          if (t.error().kind == Kind::Cancelled) return std::unexpected(t.error());
          last = t.error();
          continue;
        }
        c->rename(call.where);
        conn = std::move(c);
        break;
      }
      if (!conn) return std::unexpected(*last);
    } else {
      auto addrs = resolve(url.host, url.port);
      if (!addrs) return std::unexpected(addrs.error());
      auto fd = connect_any(*addrs, call.where, deadline, call);
      if (!fd) return std::unexpected(fd.error());
      conn = std::make_unique<Connection>(std::move(*fd), call.where);
    }
    if (ctx)
      if (auto h = conn->handshake(*ctx, url.host, deadline, call); !h) return std::unexpected(h.error());
    return conn;
  }

  struct Exchange {
    std::expected<HttpResponseHead, Failure> result;
    bool reusable = false;         // the response was read to its end and the server keeps the connection
    bool nothing_received = false;  // failed before the server sent a byte
  };

  Exchange exchange(Connection& conn, const Url& url, const HttpRequest& request, Clock::time_point deadline,
                    const CallContext& call, const HeadCallback& on_head, const BodyCallback& on_body) {
    Exchange ex{HttpResponseHead{}};
    auto fail_with = [&](Failure f, const Reader* in) {
      ex.result = std::unexpected(std::move(f));
      ex.nothing_received = !in || in->received() == 0;
      return std::move(ex);
    };
    std::string head = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\n", request.method, request.target, url.authority());
    for (const auto& [k, v] : request.headers) {
      head += k;
      head += ": ";
      head += v;
      head += "\r\n";
    }
    head += fmt::format("Content-Length: {}\r\n\r\n", request.body.size());
    auto sent = conn.write_all(head, deadline, call);
    // The head may carry credentials: wipe our copy whatever happened.
    OPENSSL_cleanse(head.data(), head.size());
    if (!sent) return fail_with(sent.error(), nullptr);
    if (auto r = conn.write_all(request.body, deadline, call); !r) return fail_with(r.error(), nullptr);

    Reader in(conn, call);
    in.deadline = deadline;
    HttpResponseHead resp;
    bool http11 = false;
    for (;;) {  // skip 1xx interim responses
      auto status_line = in.line();
      if (!status_line) return fail_with(status_line.error(), &in);
      std::string_view sl = *status_line;
      if (!sl.starts_with("HTTP/1.") || sl.size() < 12 || sl[8] != ' ') return fail_with(in.protocol("bad status line").error(), &in);
      http11 = sl[7] == '1';
      auto status = parse_num<int>(sl.substr(9, 3));
      if (!status) return fail_with(in.protocol("bad status code").error(), &in);
      resp = {};
      resp.status = *status;
      resp.reason = std::string(trim(sl.size() > 13 ? sl.substr(13) : std::string_view{}));
      for (;;) {
        auto l = in.line();
        if (!l) return fail_with(l.error(), &in);
        if (l->empty()) break;
        auto colon = l->find(':');
        if (colon == std::string::npos) return fail_with(in.protocol("header line without a colon").error(), &in);
        resp.headers.emplace_back(l->substr(0, colon), std::string(trim(std::string_view(*l).substr(colon + 1))));
        if (resp.headers.size() > 200) return fail_with(in.protocol("too many headers").error(), &in);
      }
      if (resp.status >= 200) break;
    }
    if (on_head) on_head(resp);
    in.idle_deadline = true;

    auto deliver = [&](std::string_view piece) -> std::expected<void, Failure> {
      // A fast stream never blocks in wait_io, so cancellation is also checked here.
      if (call.options.cancelled && call.options.cancelled())
        return failure(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
      if (piece.empty() || !on_body || on_body(piece)) return {};
      return failure(Kind::Aborted, ErrorKind::Unavailable, "stopped reading the response");
    };
    auto early = [&] {
      return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("{} closed the connection mid-response", conn.where()));
    };
    auto connection = lower(resp.header("connection").value_or(""));
    bool keep_alive = http11 && connection.find("close") == std::string::npos;
    auto done = [&] {
      ex.result = resp;
      ex.reusable = keep_alive && in.drained();
      return std::move(ex);
    };

    auto te = resp.header("transfer-encoding");
    auto cl = resp.header("content-length");
    if (resp.status == 204 || resp.status == 304 || request.method == "HEAD") return done();
    if (te && lower(*te).find("chunked") != std::string::npos) {
      for (;;) {
        auto size_line = in.line(1024);
        if (!size_line) return fail_with(size_line.error(), &in);
        std::string_view hex = trim(std::string_view(*size_line).substr(0, size_line->find(';')));
        auto size = parse_num<uint64_t>(hex, 16);
        if (!size) return fail_with(in.protocol("bad chunk size").error(), &in);
        if (*size == 0) break;
        for (uint64_t left = *size; left > 0;) {
          auto piece = in.some(static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
          if (!piece) return fail_with(piece.error(), &in);
          if (piece->empty()) return fail_with(early().error(), &in);
          left -= piece->size();
          if (auto d = deliver(*piece); !d) return fail_with(d.error(), &in);
        }
        auto crlf = in.line(0);
        if (!crlf) return fail_with(crlf.error(), &in);
        if (!crlf->empty()) return fail_with(in.protocol("chunk not followed by CRLF").error(), &in);
      }
      for (;;) {  // trailers
        auto t = in.line();
        if (!t) return fail_with(t.error(), &in);
        if (t->empty()) break;
      }
      return done();
    }
    if (cl) {
      auto total = parse_num<uint64_t>(trim(*cl));
      if (!total) return fail_with(in.protocol("bad Content-Length").error(), &in);
      for (uint64_t left = *total; left > 0;) {
        auto piece = in.some(static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
        if (!piece) return fail_with(piece.error(), &in);
        if (piece->empty()) return fail_with(early().error(), &in);
        left -= piece->size();
        if (auto d = deliver(*piece); !d) return fail_with(d.error(), &in);
      }
      return done();
    }
    keep_alive = false;  // no framing: the body ends when the server closes
    for (;;) {
      auto piece = in.some(1 << 20);
      if (!piece) return fail_with(piece.error(), &in);
      if (piece->empty()) return done();
      if (auto d = deliver(*piece); !d) return fail_with(d.error(), &in);
    }
  }
};

HttpClient::HttpClient(ClientOptions options) : impl_(std::make_unique<Impl>()) { impl_->options = std::move(options); }
HttpClient::~HttpClient() = default;

size_t HttpClient::connections_opened() const { return impl_->opened.load(); }

std::expected<HttpResponseHead, HttpFailure> HttpClient::send(const Url& url, const HttpRequest& request,
                                                              const CallOptions& options, const HeadCallback& on_head,
                                                              const BodyCallback& on_body) {
  CallContext call{options, authority_text(url.host, url.port)};
  const auto deadline = Clock::now() + options.timeout;
  const std::string key = Impl::pool_key(url);
  for (;;) {
    auto conn = impl_->take_idle(key);
    if (!conn) {
      auto fresh = impl_->open(url, deadline, call);
      if (!fresh) return std::unexpected(fresh.error());
      conn = std::move(*fresh);
    }
    auto ex = impl_->exchange(*conn, url, request, deadline, call, on_head, on_body);
    if (ex.result) {
      if (ex.reusable) impl_->give_back(key, std::move(conn));
      return ex.result;
    }
    // A pooled connection the server closed just as we sent: it saw no request (no byte came
    // back), so the request goes again on a fresh connection — once, as pooled ones are used up first.
    auto kind = ex.result.error().kind;
    if (conn->reused && ex.nothing_received && kind == Kind::Io) continue;
    return ex.result;
  }
}

std::expected<HttpResponse, HttpFailure> HttpClient::fetch(const Url& url, const HttpRequest& request,
                                                           const CallOptions& options, size_t max_body) {
  HttpResponse out;
  bool too_big = false;
  auto head = send(url, request, options, nullptr, [&](std::string_view piece) {
    if (out.body.size() + piece.size() > max_body) {
      too_big = true;
      return false;
    }
    out.body.append(piece);
    return true;
  });
  if (!head) {
    if (too_big)
      return failure(Kind::Aborted, ErrorKind::ResourceLimit,
                     fmt::format("{} answered with a body over {} bytes", authority_text(url.host, url.port), max_body));
    return std::unexpected(head.error());
  }
  out.head = std::move(*head);
  return out;
}

}  // namespace moat::net
