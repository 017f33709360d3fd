#pragma once
// A client of the egress gateway for tests and benchmarks: it connects to a sandbox's gateway socket
// on the host (exactly what moat-init's relay does for the sandbox's processes, so the gateway sees
// that sandbox's identity), speaks HTTP/1.1 by hand, and can switch to TLS inside a CONNECT tunnel
// with OpenSSL, verifying against a CA file.
#include <openssl/ssl.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "base/unique_fd.h"

namespace moat::testing {

struct HttpReply {
  int status = 0;              // 0 = the connection closed before a status line
  std::string head;            // status line and headers, as received
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;            // de-chunked
};

class GatewayClient {
 public:
  // Connects to the unix socket; throws std::runtime_error when it cannot.
  explicit GatewayClient(const std::filesystem::path& socket);
  ~GatewayClient();
  GatewayClient(const GatewayClient&) = delete;
  GatewayClient& operator=(const GatewayClient&) = delete;

  void send(std::string_view bytes);
  // Reads one response (Content-Length, chunked, or until close). `on_body` sees each piece of the body
  // as it arrives (for streaming checks); `head_only` stops after the headers (CONNECT answers).
  HttpReply read_reply(const std::function<void(std::string_view)>& on_body = {}, bool head_only = false);
  // send + read_reply.
  HttpReply request(std::string_view bytes) {
    send(bytes);
    return read_reply();
  }
  // CONNECT authority; returns the gateway's answer (200 means the tunnel is open).
  HttpReply connect(const std::string& authority);
  // TLS handshake inside the tunnel, verifying the server against `ca_file` and (when non-empty)
  // host name `verify_host`. Returns "" or OpenSSL's reason for failing.
  std::string start_tls(const std::filesystem::path& ca_file, const std::string& sni, const std::string& verify_host);
  // True when the peer closed (EOF or reset) within `timeout` without sending anything.
  bool closed_within(std::chrono::milliseconds timeout);
  int fd() const { return fd_.get(); }

 private:
  size_t read_some(char* buf, size_t n);  // 0 = EOF
  bool fill();                            // more bytes into pending_; false at EOF
  std::string read_line();

  UniqueFd fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string pending_;
};

}  // namespace moat::testing
