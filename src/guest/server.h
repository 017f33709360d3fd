#pragma once
// moat-init's main loop: the listening socket, one forked process per connection, reaping, signal
// forwarding and shutdown.
#include <string>

#include "guest/proxy_listener.h"

namespace moat::guest {

struct ServerOptions {
  // Unix socket to create (mode 0600; a stale socket there is replaced). It appears at this path only once
  // moat-init accepts connections, so waiting for the path to exist is a valid readiness check.
  std::string listen_path;
  bool host_peers_only = false;
  ProxyOptions proxy;  // the egress relay moat-init keeps running; off when proxy.gateway_socket is empty
};

// Serves until shut down (SIGTERM, or SIGINT when not PID 1); returns the process exit code.
int run_server(const ServerOptions& opts);

}  // namespace moat::guest
