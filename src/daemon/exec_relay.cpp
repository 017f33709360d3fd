#include "daemon/exec_relay.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"
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
  // Why the relay ended early, for moatd's log (the audit record says only "connection_lost").
  auto lost = [&](std::string_view why) {
    log::warn("exec relay ended before the command's exit: {}", why);
    return rec;
  };
  bool guest_writable = true;
  for (;;) {
    pollfd fds[2] = {{client_fd, POLLIN, 0}, {guest_fd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return lost(fmt::format("poll: {}", strerror(errno)));
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(client_fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return lost("the client went away");  // closing the guest side kills the command's tree
      from_client.feed(std::string_view(buf, n));
      for (;;) {
        auto f = from_client.next();
        if (!f) return lost(fmt::format("client: {}", f.error().message));
        if (!*f) break;
        if (!allowed_from_client((*f)->type))
          return lost(fmt::format("client sent {}", wire::frame_type_name((*f)->type)));
        // moat-init closes its side right after Exit: a write that fails then (stdin arriving after the
        // command ended) is not the end; the Exit frame is still waiting to be read below.
        if (guest_writable && !wire::write_frame(guest_fd, (*f)->type, (*f)->payload)) guest_writable = false;
      }
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(guest_fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) rec.guest_gone = true;
      if (n < 0) return lost(fmt::format("reading from moat-init: {}", strerror(errno)));
      if (n == 0) return lost("moat-init closed the connection");
      from_guest.feed(std::string_view(buf, n));
      for (;;) {
        auto f = from_guest.next();
        if (!f) return lost(fmt::format("moat-init: {}", f.error().message));
        if (!*f) break;
        auto& frame = **f;
        if (frame.type == wire::FrameType::Stdout) rec.stdout_bytes += frame.payload.size();
        if (frame.type == wire::FrameType::Stderr) rec.stderr_bytes += frame.payload.size();
        bool delivered = wire::write_frame(client_fd, frame.type, frame.payload).has_value();
        if (frame.type == wire::FrameType::Exit) {
          if (auto e = wire::decode<wire::ExecExit>(frame.payload); e) rec.exit = *e;
          rec.lost = false;
          return rec;
        }
        if (frame.type == wire::FrameType::Error) return lost(fmt::format("moat-init: {}", frame.payload));
        // Nobody reads the output any more (`moat exec ... | head` ended): stop the command rather than
        // let it run on unseen until its timeout, or for ever without one.
        if (!delivered) return lost("the client stopped reading the command's output");
      }
    }
  }
}

}  // namespace moat
