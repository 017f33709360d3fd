#include "guest/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "guest/exec_session.h"
#include "guest/file_ops.h"
#include "guest/log.h"
#include "guest/reaper.h"
#include "wire/frame.h"
#include "wire/messages.h"

namespace moat::guest {
namespace {

constexpr int kRequestTimeoutSec = 30;  // handshake and file transfers: longest silence tolerated

void set_recv_timeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

void serve_health(int fd, const ConnContext& ctx) {
  wire::HealthInfo h;
  h.uptime_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - ctx.started).count());
  // moat-init's own processes (the listener and its forks: the spare, per-connection children, the relay)
  // are not counted.
  auto own = [&](const ProcEntry& e) {
    return e.pid == ctx.init_pid || (e.ppid == ctx.init_pid && e.comm == ctx.init_comm) || e.pid == getpid();
  };
  uint32_t n = 0;
  for (const auto& e : ctx.is_pid1 ? list_processes() : descendants(ctx.init_pid))
    if (e.state != 'Z' && !own(e)) ++n;
  h.processes = n;
  (void)wire::write_frame(fd, wire::FrameType::HealthOk, wire::encode(h));
}

}  // namespace

void send_error(int fd, std::string_view message) {
  (void)wire::write_frame(fd, wire::FrameType::Error, wire::encode(wire::ErrorMsg{std::string(message)}));
}

void serve_connection(UniqueFd conn, const ConnContext& ctx) {
  int fd = conn.get();
  if (ctx.host_peers_only) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != 0) {
      logf("refused a connection from pid {} inside the sandbox (--host-peers-only)", cred.pid);
      send_error(fd, "moat-init: connections from inside the sandbox are refused");
      return;
    }
  }
  set_recv_timeout(fd, kRequestTimeoutSec);

  auto hello = wire::read_frame(fd);
  if (!hello) {
    if (hello.error().kind != ErrorKind::Unavailable) send_error(fd, hello.error().message);
    return;
  }
  if (hello->type != wire::FrameType::Hello) {
    send_error(fd, "protocol error: expected Hello, got " + wire::frame_type_name(hello->type));
    return;
  }
  auto h = wire::decode<wire::HelloMsg>(hello->payload);
  if (!h) return send_error(fd, h.error().message);
  if (h->version != wire::kProtocolVersion) {
    send_error(fd, fmt::format("protocol version {} is not supported (moat-init speaks version {})", h->version,
                               wire::kProtocolVersion));
    return;
  }
  if (!wire::write_frame(fd, wire::FrameType::HelloOk, wire::encode(wire::HelloMsg{wire::kProtocolVersion, "moat-init"})))
    return;

  auto req = wire::read_frame(fd);
  if (!req) {
    if (req.error().kind != ErrorKind::Unavailable) send_error(fd, req.error().message);
    return;
  }
  switch (req->type) {
    case wire::FrameType::ExecStart: {
      auto m = wire::decode<wire::ExecStart>(req->payload);
      if (!m) return send_error(fd, m.error().message);
      set_recv_timeout(fd, 0);
      run_exec(std::move(conn), *m);
      return;
    }
    case wire::FrameType::FilePut: {
      auto m = wire::decode<wire::FilePut>(req->payload);
      if (!m) return send_error(fd, m.error().message);
      serve_file_put(fd, *m);
      return;
    }
    case wire::FrameType::FileGet: {
      auto m = wire::decode<wire::FileGet>(req->payload);
      if (!m) return send_error(fd, m.error().message);
      serve_file_get(fd, *m);
      return;
    }
    case wire::FrameType::Health:
      serve_health(fd, ctx);
      return;
    default:
      send_error(fd, "protocol error: expected a request (ExecStart, FilePut, FileGet or Health), got " +
                         wire::frame_type_name(req->type));
      return;
  }
}

}  // namespace moat::guest
