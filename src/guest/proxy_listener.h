#pragma once
// moat-init's proxy listener: the sandbox's only way out. A child process of moat-init accepts TCP on
// 127.0.0.1:3128 (and [::1]:3128) inside the sandbox and relays each connection, byte for byte, to
// the host's egress gateway over the sandbox's own unix socket. It understands nothing of HTTP:
// policy, name resolution and credentials all live on the host, which knows the sandbox by the
// socket the connection arrived on.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace moat::guest {

struct ProxyOptions {
  std::string gateway_socket;  // e.g. /run/moat-gateway/gateway.sock; empty = no proxy
  uint16_t port = 3128;
  // Relays open at once. moatd sets it to the agent's egress max_connections: each relay holds a
  // connection into moatd, so without it a flood of connections the gateway will refuse anyway
  // would still pile up file descriptors in moatd while they wait to be refused.
  size_t max_connections = 4096;
};

// The relay runs in its own process so that a fault in it never takes PID 1 down; moat-init starts it
// again when it exits (at most once a second).
class ProxyProcess {
 public:
  explicit ProxyProcess(ProxyOptions opts) : opts_(std::move(opts)) {}
  bool enabled() const { return !opts_.gateway_socket.empty(); }
  bool running() const { return pid_ > 0; }
  // Forks the relay unless it runs or was started less than a second ago.
  void start();
  // Called for every reaped child; true when it was the relay (which is then started again unless
  // `stopping`).
  bool on_reaped(pid_t pid, int status, bool stopping);

 private:
  ProxyOptions opts_;
  pid_t pid_ = -1;
  std::chrono::steady_clock::time_point last_start_{};
};

// The relay's event loop; never returns.
[[noreturn]] void run_proxy(const ProxyOptions& opts);

}  // namespace moat::guest
