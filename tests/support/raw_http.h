#pragma once
// A raw-socket HTTP/1.1 client for tests of moat's HTTP server (net::HttpServer) and the channels
// on it, so what is tested is the bytes a browser or curl would exchange: one request per
// connection, the reply parsed; and a Server-Sent Events reader.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/json.h"
#include "base/unique_fd.h"

namespace moat::testing {


using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct Reply {
  int status = 0;
  std::multimap<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
  Json json() const { return Json::parse(body, nullptr, false); }
};

// A loopback port nothing listens on now (the kernel's pick), for a server whose URL must be known
// before it starts (a webhook URL in its configuration).
inline uint16_t free_loopback_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return 0;
  return ntohs(a.sin_port);
}

inline int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline bool send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads into `buf` until `done(buf)` or EOF or timeout. False on timeout.
template <class Pred>
bool read_until(int fd, std::string& buf, Pred done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done(buf)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char tmp[16384];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return done(buf);
    buf.append(tmp, static_cast<size_t>(n));
  }
  return true;
}

inline void parse_head(std::string_view head, Reply& r) {
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() >= 12) r.status = std::stoi(std::string(status_line.substr(9, 3)));
  head.remove_prefix(std::min(head.size(), eol + 2));
  while (!head.empty()) {
    eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name(line.substr(0, colon));
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    r.headers.emplace(std::move(name), std::string(v));
  }
}

// These bytes on a fresh connection, read to EOF (or 10 s); the reply parsed, and everything
// received in `raw` when given. status 0 = no reply.
inline Reply raw_call(uint16_t port, std::string_view request, std::string* raw = nullptr) {
  Reply r;
  int fd = connect_loopback(port);
  if (fd < 0) return r;
  UniqueFd guard(fd);
  send_all(fd, request);
  std::string buf;
  read_until(fd, buf, [](const std::string&) { return false; }, std::chrono::seconds(10));  // to EOF
  if (raw != nullptr) *raw = buf;
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return r;
  parse_head(std::string_view(buf).substr(0, end), r);
  r.body = buf.substr(end + 4);
  return r;
}

// One request on a fresh connection (Connection: close); the raw reply parsed. status 0 = no reply.
inline Reply http_call(uint16_t port, const std::string& method, const std::string& target, const HeaderList& headers = {},
                       const std::string& body = {}, bool add_host = true) {
  std::string req = method + " " + target + " HTTP/1.1\r\n";
  if (add_host) req += "Host: 127.0.0.1:" + std::to_string(port) + "\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "Connection: close\r\n\r\n" + body;
  return raw_call(port, req);
}

struct SseEvent {
  std::string id, event, data;
};

// A Server-Sent Events subscription: next() returns the next event (comments skipped).
class SseClient {
 public:
  SseClient(uint16_t port, const std::string& target, const HeaderList& headers) {
    int fd = connect_loopback(port);
    fd_ = UniqueFd(fd);
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\nAccept: text/event-stream\r\n";
    for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
    req += "\r\n";
    send_all(fd, req);
    read_until(fd, buf_, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; },
               std::chrono::seconds(5));
    size_t end = buf_.find("\r\n\r\n");
    if (end != std::string::npos) {
      parse_head(std::string_view(buf_).substr(0, end), head_);
      buf_.erase(0, end + 4);
    }
  }
  const Reply& head() const { return head_; }

  std::optional<SseEvent> next(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;  // heartbeats must not extend it
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      if (!read_until(fd_.get(), buf_, [](const std::string& b) { return b.find("\n\n") != std::string::npos; }, left))
        return std::nullopt;
      size_t end = buf_.find("\n\n");
      if (end == std::string::npos) return std::nullopt;  // EOF
      std::string block = buf_.substr(0, end);
      buf_.erase(0, end + 2);
      SseEvent ev;
      bool any = false;
      size_t pos = 0;
      while (pos <= block.size()) {
        size_t eol = block.find('\n', pos);
        std::string line = block.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
        pos = eol == std::string::npos ? block.size() + 1 : eol + 1;
        if (line.empty() || line[0] == ':') continue;
        size_t colon = line.find(':');
        std::string field = line.substr(0, colon);
        std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
        if (!value.empty() && value[0] == ' ') value.erase(0, 1);
        if (field == "id") ev.id = value, any = true;
        if (field == "event") ev.event = value, any = true;
        if (field == "data") ev.data += value, any = true;
      }
      if (any && !(ev.event.empty() && ev.data.empty() && ev.id.empty())) {
        if (!ev.event.empty() || !ev.data.empty()) return ev;
      }
    }
  }

 private:
  UniqueFd fd_;
  std::string buf_;
  Reply head_;
};

}  // namespace moat::testing
