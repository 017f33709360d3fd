#include "daemon/exec_relay.h"

#include <poll.h>
#include <unistd.h>

#include "wire/frame.h"
#include "wire/messages.h"

namespace moat {
namespace {

bool allowed_from_client(wire::FrameType t) {
  using T = wire::FrameType;
  return t == T::Stdin || t == T::StdinEof || t == T::Resize || t == T::Signal;
}

}  // namespace

ExecRecord relay_exec(int client_fd, int guest_fd) {
  ExecRecord rec;
  rec.lost = true;
  wire::FrameDecoder from_client, from_guest;
  char buf[1 << 16];
  for (;;) {
    pollfd fds[2] = {{client_fd, POLLIN, 0}, {guest_fd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return rec;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(client_fd, buf, sizeof buf);
      if (n <= 0) return rec;  // the CLI went away: closing the guest side kills the command's tree
      from_client.feed(std::string_view(buf, n));
      for (;;) {
        auto f = from_client.next();
        if (!f || !*f) {
          if (!f) return rec;
          break;
        }
        if (!allowed_from_client((*f)->type)) return rec;
        if (!wire::write_frame(guest_fd, (*f)->type, (*f)->payload)) return rec;
      }
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(guest_fd, buf, sizeof buf);
      if (n <= 0) return rec;
      from_guest.feed(std::string_view(buf, n));
      for (;;) {
        auto f = from_guest.next();
        if (!f) return rec;
        if (!*f) break;
        auto& frame = **f;
        if (frame.type == wire::FrameType::Stdout) rec.stdout_bytes += frame.payload.size();
        if (frame.type == wire::FrameType::Stderr) rec.stderr_bytes += frame.payload.size();
        // A vanished CLI does not stop the bookkeeping: keep reading until Exit for the audit record.
        (void)wire::write_frame(client_fd, frame.type, frame.payload);
        if (frame.type == wire::FrameType::Exit) {
          if (auto e = wire::decode<wire::ExecExit>(frame.payload); e) rec.exit = *e;
          rec.lost = false;
          return rec;
        }
        if (frame.type == wire::FrameType::Error) return rec;
      }
    }
  }
}

}  // namespace moat
