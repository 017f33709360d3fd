#include "support/syslog_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

namespace moat::testing {

namespace {

constexpr size_t kMaxFrame = 64 * 1024;

// The next space-delimited header field (RFC 5424: no spaces inside), or nullopt.
std::optional<std::string> field(std::string_view& s) {
  auto sp = s.find(' ');
  if (sp == std::string_view::npos || sp == 0) return std::nullopt;
  std::string out(s.substr(0, sp));
  s.remove_prefix(sp + 1);
  return out;
}

// STRUCTURED-DATA: "-" or one or more "[id param="value" ...]" ('\' escapes '"', '\' and ']').
std::optional<std::string> structured_data(std::string_view& s) {
  if (s.starts_with('-')) {
    s.remove_prefix(1);
    return std::string("-");
  }
  size_t i = 0;
  while (i < s.size() && s[i] == '[') {
    bool quoted = false;
    for (++i;; ++i) {
      if (i >= s.size()) return std::nullopt;
      char c = s[i];
      if (quoted && c == '\\') {
        ++i;
        continue;
      }
      if (c == '"') quoted = !quoted;
      if (!quoted && c == ']') break;
    }
    ++i;
  }
  if (i == 0) return std::nullopt;
  std::string out(s.substr(0, i));
  s.remove_prefix(i);
  return out;
}

}  // namespace

std::optional<SyslogMessage> parse_rfc5424(std::string_view s) {
  SyslogMessage m;
  m.raw = std::string(s);
  // PRI: "<" 1-3 digits ">", then VERSION (1-2 digits, not starting with 0).
  if (!s.starts_with('<')) return std::nullopt;
  auto close = s.find('>');
  if (close == std::string_view::npos || close < 2 || close > 4) return std::nullopt;
  int pri = 0;
  for (char c : s.substr(1, close - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    pri = pri * 10 + (c - '0');
  }
  if (pri > 191) return std::nullopt;
  m.facility = pri / 8;
  m.severity = pri % 8;
  s.remove_prefix(close + 1);
  auto version = field(s);
  if (!version || version->size() > 2 || (*version)[0] < '1' || (*version)[0] > '9') return std::nullopt;
  m.version = std::stoi(*version);
  auto ts = field(s), host = field(s), app = field(s), proc = field(s), msgid = field(s);
  if (!ts || !host || !app || !proc || !msgid) return std::nullopt;
  if (*ts != "-" && (ts->size() < 20 || (*ts)[4] != '-' || (*ts)[10] != 'T')) return std::nullopt;
  m.timestamp = *ts;
  m.hostname = *host;
  m.app_name = *app;
  m.procid = *proc;
  m.msgid = *msgid;
  if (m.hostname.size() > 255 || m.app_name.size() > 48 || m.procid.size() > 128 || m.msgid.size() > 32)
    return std::nullopt;
  auto sd = structured_data(s);
  if (!sd) return std::nullopt;
  m.structured_data = *sd;
  if (!s.empty()) {
    if (s.front() != ' ') return std::nullopt;
    s.remove_prefix(1);
    if (s.starts_with("\xEF\xBB\xBF")) s.remove_prefix(3);
    m.msg = std::string(s);
  }
  return m;
}

SyslogServer::SyslogServer(std::filesystem::path capture, uint16_t port, std::optional<CertFiles> tls)
    : capture_(std::move(capture)), port_(port) {
  if (tls) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx.get(), tls->cert_path.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), tls->key_path.c_str(), SSL_FILETYPE_PEM) != 1)
      throw std::runtime_error("syslog double: cannot load the TLS certificate");
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    tls_ = ctx;
  }
  start();
}

SyslogServer::~SyslogServer() { stop(); }

std::string SyslogServer::url() const {
  return fmt::format("syslog+{}://127.0.0.1:{}", tls_ ? "tls" : "tcp", port_);
}

void SyslogServer::listen() {
  listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener_) throw std::runtime_error(fmt::format("syslog double: socket: {}", strerror(errno)));
  int one = 1;
  ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port_);
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener_.get(), 16) != 0)
    throw std::runtime_error(fmt::format("syslog double: bind/listen on port {}: {}", port_, strerror(errno)));
  socklen_t len = sizeof a;
  ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
}

void SyslogServer::start() {
  if (thread_.joinable()) return;
  listen();
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void SyslogServer::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  thread_.join();
  listener_.reset();
  wake_.reset();
}

std::vector<SyslogMessage> SyslogServer::messages() const {
  std::lock_guard g(mu_);
  return messages_;
}

void SyslogServer::run() {
  struct Conn {
    UniqueFd fd;
    std::string buf;
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl{nullptr, SSL_free};
  };
  auto* ctx = static_cast<SSL_CTX*>(tls_.get());
  // The handshake, blocking with a deadline (the client under test completes it at once).
  auto handshake = [&](Conn& c) {
    c.ssl.reset(SSL_new(ctx));
    int flags = ::fcntl(c.fd.get(), F_GETFL);
    ::fcntl(c.fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    timeval tv{5, 0};
    ::setsockopt(c.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(c.fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL_set_fd(c.ssl.get(), c.fd.get());
    bool ok = SSL_accept(c.ssl.get()) == 1;
    ERR_clear_error();
    ::fcntl(c.fd.get(), F_SETFL, flags | O_NONBLOCK);
    return ok;
  };
  std::vector<Conn> conns;
  std::ofstream capture(capture_, std::ios::app);
  // Whole frames off the front of c.buf; false when the stream is not octet-counted RFC 5424.
  auto take_frames = [&](Conn& c) {
    for (;;) {
      auto sp = c.buf.find(' ');
      if (sp == std::string::npos) return c.buf.size() <= 6 && c.buf.find_first_not_of("0123456789") == std::string::npos;
      std::string_view len_text(c.buf.data(), sp);
      if (len_text.empty() || len_text.size() > 6 || len_text[0] == '0' ||
          len_text.find_first_not_of("0123456789") != std::string_view::npos)
        return false;
      size_t len = std::stoul(std::string(len_text));
      if (len > kMaxFrame) return false;
      if (c.buf.size() < sp + 1 + len) return true;  // wait for the rest
      std::string_view text(c.buf.data() + sp + 1, len);
      auto m = parse_rfc5424(text);
      if (!m) return false;
      std::string line = m->raw;
      for (size_t p = 0; (p = line.find('\n', p)) != std::string::npos;) line.replace(p, 1, "#012");
      capture << line << '\n';
      capture.flush();
      {
        std::lock_guard g(mu_);
        messages_.push_back(std::move(*m));
      }
      c.buf.erase(0, sp + 1 + len);
    }
  };
  while (!stopping_) {
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    for (auto& c : conns) fds.push_back({c.fd.get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) break;
    if (stopping_) break;
    if (fds[1].revents & POLLIN) {
      UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (fd) {
        ++connections_;
        Conn c{std::move(fd), {}};
        if (!ctx || handshake(c)) conns.push_back(std::move(c));
        else ++failed_handshakes_;
      }
    }
    for (size_t i = 0; i + 2 < fds.size(); ++i) {
      if (!fds[i + 2].revents) continue;
      Conn& c = conns[i];
      char buf[16384];
      bool keep = true, got = false;
      if (c.ssl) {
        for (;;) {  // every record TLS has buffered, until it wants more from the socket
          size_t n = 0;
          if (SSL_read_ex(c.ssl.get(), buf, sizeof buf, &n) == 1) {
            c.buf.append(buf, n);
            got = true;
            continue;
          }
          int err = SSL_get_error(c.ssl.get(), 0);
          ERR_clear_error();
          keep = err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
          break;
        }
      } else {
        ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        keep = n > 0;
        if (keep) {
          c.buf.append(buf, static_cast<size_t>(n));
          got = true;
        }
      }
      if (got && !take_frames(c)) {
        ++bad_frames_;
        keep = false;
      }
      if (!keep) {
        c.ssl.reset();
        c.fd.reset();
      }
    }
    std::erase_if(conns, [](const Conn& c) { return !c.fd; });
  }
  // Going down: every connection closes, as a stopped rsyslog's would.
}

}  // namespace moat::testing
