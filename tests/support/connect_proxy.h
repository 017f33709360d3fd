#pragma once
// A real HTTP CONNECT proxy on loopback, standing in for the HTTPS_PROXY a host's outbound traffic
// must go through: one thread per client, a tunnel pumped both ways. It records what each CONNECT
// asked for, so tests can see that the client used it (and with which target). Used by the HTTP and
// WebSocket client tests.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"

namespace moat::testing {

class ConnectProxy {
 public:
  ConnectProxy();  // listens on 127.0.0.1, any free port; throws if it cannot
  ~ConnectProxy();
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  uint16_t port() const { return port_; }
  std::vector<std::string> targets();  // each CONNECT's "host:port", in order

 private:
  void accept_loop();
  void serve(UniqueFd client);

  UniqueFd fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread accept_;
  std::vector<std::thread> tunnels_;  // only the accept thread adds to it; joined after it ends
  std::mutex mu_;
  std::vector<std::string> targets_;
};

}  // namespace moat::testing
