#include "net/dial.h"


#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "base/text.h"

namespace moat::net {
namespace {

using Kind = StreamFailure::Kind;

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

}  // namespace

// --- proxy settings ---

ProxySettings ProxySettings::parse(std::string_view https_proxy, std::string_view no_proxy) {
  ProxySettings p;
  for (size_t start = 0; start <= no_proxy.size();) {
    size_t comma = no_proxy.find(',', start);
    auto entry = ascii_lower(trim_space(no_proxy.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start)));
    while (!entry.empty() && entry.front() == ' ') entry.erase(0, 1);
    if (entry.starts_with("*.")) entry.erase(0, 2);
    if (entry.starts_with(".")) entry.erase(0, 1);
    if (!entry.empty()) p.no_proxy.push_back(entry);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  auto text = trim_space(https_proxy);
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
  std::string host = ascii_lower(host_text);
  auto host_ip = parse_ip_literal(host);
  for (const auto& e : no_proxy) {
    if (e == "*") return true;
    if (auto slash = e.find('/'); slash != std::string::npos) {
      auto net = parse_ip_literal(std::string_view(e).substr(0, slash));
      auto bits = parse_number<unsigned>(std::string_view(e).substr(slash + 1));
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

// --- waiting ---

std::expected<void, StreamFailure> wait_ready(int fd, short events, Clock::time_point deadline, const StreamCall& call,
                                            std::string_view where) {
  for (;;) {
    if (call.cancelled && call.cancelled()) return stream_failed(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
    auto now = Clock::now();
    if (now >= deadline)
      return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("{} did not answer within {} ms", where, call.timeout.count()));
    auto slice = std::min<Clock::duration>(deadline - now, std::chrono::milliseconds(100));
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count()));
    if (rc > 0) return {};
    if (rc < 0 && errno != EINTR) return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("poll: {}", std::strerror(errno)));
  }
}

// --- dialing ---

struct Dialer::Address {
  sockaddr_storage ss{};
};

// The addresses to try: every one the host resolves to that the AddressCheck allows.
std::expected<std::vector<Dialer::Address>, StreamFailure> Dialer::resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  std::string port_text = std::to_string(port);
  // getaddrinfo blocks without a timeout; for the few hosts moatd calls that is acceptable.
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0)
    return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  std::vector<Address> out;
  std::optional<Error> refusal;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    Address a;
    std::memcpy(&a.ss, ai->ai_addr, ai->ai_addrlen);
    if (address_check_) {
      if (auto ok = address_check_(to_ip(a.ss)); !ok) {
        if (!refusal) refusal = ok.error();
        continue;
      }
    }
    out.push_back(a);
  }
  if (out.empty() && refusal) return std::unexpected(StreamFailure{Kind::Refused, *refusal});
  if (out.empty()) return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("{} has no address", host));
  return out;
}

// A TCP connection to the first of `addrs` that answers.
std::expected<UniqueFd, StreamFailure> Dialer::connect_any(const std::vector<Address>& addrs, const std::string& where,
                                                         Clock::time_point deadline, const StreamCall& call) {
  std::string last = "no address";
  for (const auto& [ss] : addrs) {
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
      auto w = wait_ready(fd.get(), POLLOUT, deadline, call, where);
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
    opened_.fetch_add(1);
    return fd;
  }
  return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot connect to {}: {}", where, last));
}

// Asks the proxy for a tunnel to `authority` and reads its answer's head, byte by byte so that
// nothing of what follows (the TLS handshake) is consumed.
std::expected<void, StreamFailure> Dialer::tunnel(int fd, const std::string& proxy_where, const std::string& authority,
                                                Clock::time_point deadline, const StreamCall& call) {
  std::string req = fmt::format("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n", authority, authority);
  for (std::string_view left = req; !left.empty();) {
    ssize_t n = ::send(fd, left.data(), left.size(), MSG_NOSIGNAL);
    if (n > 0) {
      left.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (auto w = wait_ready(fd, POLLOUT, deadline, call, proxy_where); !w) return w;
    } else {
      return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("sending to {}: {}", proxy_where, std::strerror(errno)));
    }
  }
  std::string head;
  while (!head.ends_with("\r\n\r\n")) {
    if (head.size() > 16384)
      return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("the proxy {} sent an overlong answer", proxy_where));
    char ch;
    ssize_t n = ::recv(fd, &ch, 1, 0);
    if (n == 1) {
      head.push_back(ch);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (auto w = wait_ready(fd, POLLIN, deadline, call, proxy_where); !w) return w;
      continue;
    }
    if (n < 0 && errno != ECONNRESET)
      return stream_failed(Kind::Io, ErrorKind::Unavailable, fmt::format("reading from {}: {}", proxy_where, std::strerror(errno)));
    return stream_failed(Kind::Connect, ErrorKind::Unavailable,
                   fmt::format("the proxy {} closed the connection instead of opening a tunnel to {}", proxy_where, authority));
  }
  auto status_line = std::string_view(head).substr(0, head.find("\r\n"));
  auto status = status_line.size() >= 12 && status_line.starts_with("HTTP/1.") ? parse_number<int>(status_line.substr(9, 3))
                                                                               : std::nullopt;
  if (!status || *status / 100 != 2)
    return stream_failed(Kind::Connect, ErrorKind::Unavailable,
                   fmt::format("the proxy {} refused a tunnel to {}: {}", proxy_where, authority, status_line));
  return {};
}

std::expected<UniqueFd, StreamFailure> Dialer::dial(const std::string& host, uint16_t port, bool tls, Clock::time_point deadline,
                                                     const StreamCall& call) {
  const std::string where = authority_text(host, port);
  bool proxied = tls && !proxy_.bypasses(host);
  if (proxied && !proxy_.error.empty()) return stream_failed(Kind::Connect, ErrorKind::InvalidInput, proxy_.error);
  proxied = proxied && proxy_.https_proxy.has_value();
  if (!proxied) {
    auto addrs = resolve(host, port);
    if (!addrs) return std::unexpected(addrs.error());
    return connect_any(*addrs, where, deadline, call);
  }

  // With an address check, the host is resolved here even though the proxy would resolve it, and
  // the tunnel asks for a checked address: the proxy's own lookup could answer differently.
  std::vector<std::string> tunnel_to;  // what to ask the proxy for, in order
  if (address_check_) {
    auto addrs = resolve(host, port);
    if (!addrs) return std::unexpected(addrs.error());
    for (const auto& a : *addrs) tunnel_to.push_back(format_endpoint(to_ip(a.ss), port));
  } else {
    tunnel_to.push_back(where);
  }
  const auto& proxy = *proxy_.https_proxy;
  std::string proxy_where = authority_text(proxy.host, proxy.port);
  // The proxy is ours to choose (moatd's environment): no address check applies to it.
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string port_text = std::to_string(proxy.port);
  if (int rc = ::getaddrinfo(proxy.host.c_str(), port_text.c_str(), &hints, &res); rc != 0)
    return stream_failed(Kind::Connect, ErrorKind::Unavailable, fmt::format("cannot resolve the proxy {}: {}", proxy.host, gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  std::vector<Address> proxy_addrs;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    Address a;
    std::memcpy(&a.ss, ai->ai_addr, ai->ai_addrlen);
    proxy_addrs.push_back(a);
  }
  // One tunnel per address to try, as a direct connection tries each address in turn.
  std::optional<StreamFailure> last;
  for (const auto& to : tunnel_to) {
    auto fd = connect_any(proxy_addrs, fmt::format("the proxy {}", proxy_where), deadline, call);
    if (!fd) return std::unexpected(fd.error());
    if (auto t = tunnel(fd->get(), proxy_where, to, deadline, call); !t) {
      if (t.error().kind == Kind::Cancelled) return std::unexpected(t.error());
      last = t.error();
      continue;
    }
    return std::move(*fd);
  }
  return std::unexpected(*last);
}

}  // namespace moat::net
