#pragma once
// The host side of the moat-init protocol (wire/frame.h): one connection per request to the socket moat-init
// serves inside a sandbox. Reaching the socket never follows anything the agent controls.
#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"
#include "wire/messages.h"

namespace moat {

// Connects to a moat-init socket without following anything the agent controls: opens `dir` with
// O_PATH|O_DIRECTORY, opens `name` beneath it with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS) O_PATH, requires S_ISSOCK, then connect()s to "/proc/self/fd/<n>".
// `name` must be a single path component. Refused links/non-sockets -> InvalidInput; missing socket or
// nobody listening -> Unavailable.
Result<UniqueFd> connect_init_socket(const std::filesystem::path& dir, std::string_view name = "init.sock");

struct ExecResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  uint64_t duration_ms = 0;
  std::string out, err;               // captured output, each at most max_capture bytes
  uint64_t out_bytes = 0, err_bytes = 0;  // everything the command wrote, captured or not
  bool truncated() const { return out_bytes > out.size() || err_bytes > err.size(); }
};

// Relays one exec on a connection from InitClient::start_exec (or the manager's open_exec): stdin
// out as frames, interleaved with reading output so neither side can stall the other; output past
// max_capture per stream is counted in out_bytes/err_bytes and dropped. `res` is filled as frames
// arrive, so byte counts are right even when this fails. Fails when the connection breaks, moat-init
// reports an error, or no Exit arrives by `deadline` (the caller then closes the fd, which kills the
// command's whole tree).
Status relay_exec(int fd, std::string_view stdin_data, size_t max_capture, ExecResult& res,
                  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max());

class InitClient {
 public:
  explicit InitClient(std::filesystem::path socket_dir, std::string socket_name = "init.sock");

  // Hello + Health; fails unless moat-init answers within `timeout`.
  Status health(std::chrono::milliseconds timeout) const;
  Result<wire::HealthInfo> health_info(std::chrono::milliseconds timeout) const;

  // Runs to completion, feeding `stdin_data` then end-of-input, capturing output (each of out/err capped at
  // max_capture bytes; the rest is counted in out_bytes/err_bytes). A command that cannot be started is not
  // an error: it reports exit code 127/126 with moat-init's message in `err`. Fails when moat-init cannot be
  // reached, refuses the request, or the connection drops.
  Result<ExecResult> exec(const wire::ExecStart& req, std::string_view stdin_data = {},
                          size_t max_capture = 64 << 20) const;

  // Opens a connection, does Hello, sends ExecStart and returns the connected (blocking) fd for the caller
  // to relay frames: read Stdout/Stderr/Exit/Error with wire::read_frame, write Stdin/StdinEof/Resize/Signal
  // with wire::write_frame. Closing the fd before Exit kills the command's whole tree.
  Result<UniqueFd> start_exec(const wire::ExecStart& req) const;

  // Writes `data` to `path` inside the sandbox, atomically, with the given mode and owner. The parent
  // directory must exist.
  Status put_file(const std::string& path, std::string_view data, uint32_t mode = 0644, uint32_t uid = 0,
                  uint32_t gid = 0) const;
  // Reads the regular file `path` inside the sandbox; files over max_size are refused (ResourceLimit).
  Result<std::string> get_file(const std::string& path, size_t max_size = 1ull << 30) const;

  // How long file and handshake steps may wait for moat-init (exec output may take as long as it takes).
  void set_io_timeout(std::chrono::milliseconds t) { io_timeout_ = t; }

 private:
  // Connects and completes the Hello exchange with `timeout` as the receive/send timeout. `request`
  // (encoded frames) is sent together with Hello.
  Result<UniqueFd> open_session(std::chrono::milliseconds timeout, std::string_view request = {}) const;

  std::filesystem::path dir_;
  std::string name_;
  std::chrono::milliseconds io_timeout_{60000};
};

}  // namespace moat
