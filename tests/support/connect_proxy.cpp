#include "support/connect_proxy.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <memory>
#include <stdexcept>
#include <string_view>

namespace moat::testing {
namespace {

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 50) > 0;
}

}  // namespace

ConnectProxy::ConnectProxy() {
  fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_.get(), 16) != 0 ||
      ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("proxy: cannot listen");
  port_ = ntohs(a.sin_port);
  accept_ = std::thread([this] { accept_loop(); });
}

ConnectProxy::~ConnectProxy() {
  stop_ = true;
  accept_.join();
  for (auto& t : tunnels_) t.join();
}

std::vector<std::string> ConnectProxy::targets() {
  std::lock_guard g(mu_);
  return targets_;
}

void ConnectProxy::accept_loop() {
  while (!stop_) {
    if (!readable(fd_.get())) continue;
    UniqueFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (c) tunnels_.emplace_back([this, c = std::make_shared<UniqueFd>(std::move(c))] { serve(std::move(*c)); });
  }
}

void ConnectProxy::serve(UniqueFd client) {
  std::string head;
  char ch;
  while (!head.ends_with("\r\n\r\n") && !stop_) {
    if (!readable(client.get())) continue;
    if (::recv(client.get(), &ch, 1, 0) != 1) return;
    head.push_back(ch);
  }
  auto target = head.substr(8, head.find(' ', 8) - 8);  // "CONNECT host:port HTTP/1.1"
  {
    std::lock_guard g(mu_);
    targets_.push_back(target);
  }
  // "host:port" or "[v6]:port"
  auto colon = target.rfind(':');
  if (colon == std::string::npos) return;
  std::string host = target.substr(0, colon), port = target.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo* res = nullptr;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return;
  UniqueFd up;
  int rc = -1;
  for (addrinfo* ai = res; ai && rc != 0; ai = ai->ai_next) {  // every address, as a real proxy does
    up = UniqueFd(::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    rc = ::connect(up.get(), ai->ai_addr, ai->ai_addrlen);
  }
  ::freeaddrinfo(res);
  std::string_view answer = rc == 0 ? "HTTP/1.1 200 Connection established\r\n\r\n" : "HTTP/1.1 502 Bad Gateway\r\n\r\n";
  if (::send(client.get(), answer.data(), answer.size(), MSG_NOSIGNAL) < 0 || rc != 0) return;
  char buf[16384];
  while (!stop_) {
    pollfd p[2] = {{client.get(), POLLIN, 0}, {up.get(), POLLIN, 0}};
    if (::poll(p, 2, 50) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (!p[i].revents) continue;
      ssize_t n = ::recv(p[i].fd, buf, sizeof buf, 0);
      if (n <= 0 || ::send(p[1 - i].fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) return;
    }
  }
}

}  // namespace moat::testing
