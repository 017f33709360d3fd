#pragma once
// One host connection, served in its own forked process: handshake, then exactly one request
// (exec, file put, file get, health). See wire/frame.h for the conversation.
#include <sys/types.h>

#include <chrono>
#include <string>

#include "base/unique_fd.h"

namespace moat::guest {

struct ConnContext {
  std::chrono::steady_clock::time_point started;  // when moat-init started (health uptime)
  pid_t init_pid = 0;                               // the listening moat-init process
  bool is_pid1 = false;
  bool host_peers_only = false;
  std::string init_comm;  // its process name: its forks (spare, connections, relay) share it
};

// Serves the connection to completion. Runs in the per-connection child process, which is a child
// subreaper so it can kill everything an exec started.
void serve_connection(UniqueFd conn, const ConnContext& ctx);

// Sends an Error frame (best effort; the peer may be gone).
void send_error(int fd, std::string_view message);

}  // namespace moat::guest
