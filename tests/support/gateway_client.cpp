#include "support/gateway_client.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace moat::testing {

GatewayClient::GatewayClient(const std::filesystem::path& socket) {
  fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, socket.c_str(), sizeof a.sun_path - 1);
  if (!fd_ || ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    throw std::runtime_error("cannot connect to " + socket.string() + ": " + std::strerror(errno));
}

GatewayClient::~GatewayClient() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
}

void GatewayClient::send(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ssl_ ? SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()))
                     : ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) throw std::runtime_error("send to the gateway failed");
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

size_t GatewayClient::read_some(char* buf, size_t n) {
  if (ssl_) {
    int r = SSL_read(ssl_, buf, static_cast<int>(n));
    return r > 0 ? static_cast<size_t>(r) : 0;
  }
  ssize_t r = ::read(fd_.get(), buf, n);
  return r > 0 ? static_cast<size_t>(r) : 0;
}

bool GatewayClient::fill() {
  char buf[16384];
  size_t n = read_some(buf, sizeof buf);
  if (n == 0) return false;
  pending_.append(buf, n);
  return true;
}

std::string GatewayClient::read_line() {
  for (;;) {
    auto pos = pending_.find("\r\n");
    if (pos != std::string::npos) {
      std::string line = pending_.substr(0, pos);
      pending_.erase(0, pos + 2);
      return line;
    }
    if (!fill()) {
      std::string rest = std::move(pending_);
      pending_.clear();
      return rest;
    }
  }
}

HttpReply GatewayClient::read_reply(const std::function<void(std::string_view)>& on_body, bool head_only) {
  HttpReply r;
  std::string status = read_line();
  if (status.size() < 12 || !status.starts_with("HTTP/1.")) return r;
  r.status = std::stoi(status.substr(9, 3));
  r.head = status + "\r\n";
  for (;;) {
    std::string line = read_line();
    r.head += line + "\r\n";
    if (line.empty()) break;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    r.headers[name] = value;
  }
  if (head_only) return r;
  auto deliver = [&](std::string_view piece) {
    r.body.append(piece);
    if (on_body) on_body(piece);
  };
  if (auto te = r.headers.find("transfer-encoding"); te != r.headers.end() && te->second.find("chunked") != std::string::npos) {
    for (;;) {
      size_t size = std::stoul(read_line(), nullptr, 16);
      if (size == 0) {
        while (!read_line().empty()) {
        }
        break;
      }
      while (pending_.size() < size + 2 && fill()) {
      }
      deliver(std::string_view(pending_).substr(0, size));
      pending_.erase(0, std::min(pending_.size(), size + 2));
    }
  } else if (auto cl = r.headers.find("content-length"); cl != r.headers.end()) {
    size_t size = std::stoul(cl->second);
    while (pending_.size() < size && fill()) {
    }
    deliver(std::string_view(pending_).substr(0, size));
    pending_.erase(0, std::min(pending_.size(), size));
  } else if (r.status != 204 && r.status != 304 && !(r.status >= 100 && r.status < 200)) {
    for (;;) {
      if (!pending_.empty()) {
        deliver(pending_);
        pending_.clear();
      }
      if (!fill()) break;
    }
  }
  return r;
}

HttpReply GatewayClient::connect(const std::string& authority) {
  send("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n");
  auto r = read_reply({}, true);
  if (r.status != 200) {
    // Refusals carry a body; read it so the caller can check the words.
    if (auto cl = r.headers.find("content-length"); cl != r.headers.end()) {
      size_t size = std::stoul(cl->second);
      while (pending_.size() < size && fill()) {
      }
      r.body = pending_.substr(0, size);
      pending_.erase(0, std::min(pending_.size(), size));
    }
  }
  return r;
}

std::string GatewayClient::start_tls(const std::filesystem::path& ca_file, const std::string& sni, const std::string& verify_host) {
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr) != 1) return "cannot load " + ca_file.string();
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  ssl_ = SSL_new(ctx_);
  SSL_set_fd(ssl_, fd_.get());
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, sni.c_str());
  if (!verify_host.empty()) {
    if (verify_host.find_first_not_of("0123456789.") == std::string::npos)
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), verify_host.c_str());
    else
      SSL_set1_host(ssl_, verify_host.c_str());
  }
  if (SSL_connect(ssl_) != 1) {
    long vr = SSL_get_verify_result(ssl_);
    std::string why = vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "handshake failed";
    unsigned long e = ERR_get_error();
    if (e) why += std::string(": ") + ERR_error_string(e, nullptr);
    ERR_clear_error();
    SSL_free(ssl_);
    ssl_ = nullptr;
    return why;
  }
  return {};
}

bool GatewayClient::closed_within(std::chrono::milliseconds timeout) {
  char c;
  // TLS may already hold the peer's close_notify (or the bytes carrying it) from an earlier read.
  if (ssl_ && ((SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN) || SSL_has_pending(ssl_))) return SSL_peek(ssl_, &c, 1) <= 0;
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  // Inside TLS the peer's close_notify is bytes on the socket: closed is what the TLS layer says.
  if (ssl_) return SSL_peek(ssl_, &c, 1) <= 0;
  ssize_t n = ::recv(fd_.get(), &c, 1, MSG_PEEK);
  return n <= 0;
}

}  // namespace moat::testing
