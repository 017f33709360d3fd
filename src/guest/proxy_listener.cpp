#include "guest/proxy_listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "base/unique_fd.h"
#include "guest/log.h"

namespace moat::guest {
namespace {

constexpr size_t kBufferSize = 64 * 1024;
constexpr int kGatewaySendBuffer = 1 << 20;  // bench/egress_bench.cpp uses the same for its gateway client

UniqueFd listen_tcp(int family, uint16_t port) {
  UniqueFd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fd;
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_loopback;
    rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0 || listen(fd.get(), 1024) != 0) return UniqueFd();
  return fd;
}

// A connection to the gateway, or an invalid fd with errno set.
UniqueFd connect_gateway(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return UniqueFd();
  }
  memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fd;
  // What waits for the gateway to read is bounded by this side's send buffer (212 KiB by default);
  // a bigger one lets the gateway take more per wake-up: about a quarter more upload throughput
  // through it, measured on 2 busy cores (the gateway does the same for its side). The kernel
  // doubles the value.
  int sndbuf = kGatewaySendBuffer;
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return fd;
}

// One direction of a relayed connection. From the client's TCP socket to the gateway the bytes are
// spliced (splice(2)) into a pipe and from it to the unix socket, so they never enter this process;
// back from the gateway they are copied through a buffer, allocated when first needed (splicing unix
// socket pages into TCP measured slower than copying them, in the gateway as here). Only an empty
// pipe is filled, so EAGAIN on the way in means "nothing to read", and on the way out "the
// destination is full". Without a pipe (fd limit), or where the kernel cannot splice the socket, the
// direction copies too.
struct Direction {
  UniqueFd pipe_r, pipe_w;  // invalid = copy through `buf`
  std::unique_ptr<char[]> buf;
  size_t begin = 0, end = 0;  // buf: bytes [begin, end) wait; pipe: end - begin bytes wait
  bool read_eof = false;      // the source said EOF
  bool write_shut = false;    // the EOF was passed on (shutdown(SHUT_WR) on the destination)
  bool empty() const { return begin == end; }
  bool full() const { return pipe_r ? !empty() : end == kBufferSize; }
  bool done() const { return write_shut; }

  explicit Direction(bool splice_it) {
    int p[2];
    if (splice_it && pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
      pipe_r = UniqueFd(p[0]);
      pipe_w = UniqueFd(p[1]);
    }
  }
  // Moves bytes from `src` into the pipe or buffer: >0 bytes, 0 EOF, -1 errno (EAGAIN: nothing now).
  // A pipe holds what the kernel lets it (16 pages by default), whatever length is asked for.
  ssize_t fill(int src) {
    if (pipe_r) {
      ssize_t n = splice(src, nullptr, pipe_w.get(), nullptr, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n >= 0 || errno != EINVAL) return n;
      pipe_r.reset();  // a kernel (or gVisor) that cannot splice this socket; the pipe is empty here
      pipe_w.reset();
    }
    if (!buf) buf = std::make_unique_for_overwrite<char[]>(kBufferSize);
    return read(src, buf.get() + end, kBufferSize - end);
  }
  // Moves waiting bytes to `dst`: >0 bytes, -1 errno (EAGAIN: the destination is full).
  ssize_t drain(int dst) {
    if (pipe_r) return splice(pipe_r.get(), nullptr, dst, nullptr, end - begin, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    return send(dst, buf.get() + begin, end - begin, MSG_NOSIGNAL);
  }
};

struct Relay {
  UniqueFd fd[2];     // 0 = the client in the sandbox, 1 = the gateway
  Direction dir[2] = {Direction(true), Direction(false)};  // dir[i] carries fd[i] -> fd[1 - i]
  uint32_t interest[2] = {0, 0};
};

class Proxy {
 public:
  explicit Proxy(const ProxyOptions& o) : opts_(o) {}

  [[noreturn]] void run() {
    ep_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    if (!ep_) die("epoll_create1");
    for (int family : {AF_INET, AF_INET6}) {
      UniqueFd l = listen_tcp(family, opts_.port);
      if (!l) {
        // A sandbox may lack IPv6 loopback; IPv4 is the one that must work.
        if (family == AF_INET) die("cannot listen on 127.0.0.1");
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenerTag | listeners_.size();
      epoll_ctl(ep_.get(), EPOLL_CTL_ADD, l.get(), &ev);
      listeners_.push_back(std::move(l));
    }
    logf("proxy: listening on 127.0.0.1:{}, relaying to {}", opts_.port, opts_.gateway_socket);
    std::array<epoll_event, 128> events;
    for (;;) {
      int n = epoll_wait(ep_.get(), events.data(), events.size(), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        uint64_t tag = events[i].data.u64;
        if (tag & kListenerTag) {
          accept_all(listeners_[tag & ~kListenerTag].get());
        } else {
          auto it = relays_.find(tag >> 1);
          if (it != relays_.end()) pump(tag >> 1, *it->second);
        }
      }
    }
  }

 private:
  static constexpr uint64_t kListenerTag = 1ull << 63;

  [[noreturn]] void die(const char* what) {
    logf("proxy: {}: {}", what, strerror(errno));
    _exit(1);
  }

  void accept_all(int listener) {
    for (;;) {
      UniqueFd client(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!client) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) logf("proxy: accept: {}", strerror(errno));
        return;
      }
      if (relays_.size() >= opts_.max_connections) {
        refuse(client.get(), "503 Service Unavailable",
               fmt::format("too many connections through the proxy at once (this sandbox's limit is {})", opts_.max_connections));
        continue;
      }
      UniqueFd gw = connect_gateway(opts_.gateway_socket);
      if (!gw) {
        int e = errno;
        logf("proxy: cannot reach the gateway at {}: {}", opts_.gateway_socket, strerror(e));
        refuse(client.get(), "502 Bad Gateway",
               fmt::format("the egress gateway is not reachable ({}); moatd may be restarting", strerror(e)));
        continue;
      }
      int one = 1;
      setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto r = std::make_unique<Relay>();
      r->fd[0] = std::move(client);
      r->fd[1] = std::move(gw);
      uint64_t id = next_id_++;
      for (int side = 0; side < 2; ++side) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = (id << 1) | side;
        epoll_ctl(ep_.get(), EPOLL_CTL_ADD, r->fd[side].get(), &ev);
        r->interest[side] = EPOLLIN;
      }
      relays_.emplace(id, std::move(r));
    }
  }

  // The client hears why in words a proxy client prints; the connection is then closed.
  static void refuse(int fd, std::string_view status, std::string_view why) {
    std::string body = fmt::format("moat: {}\n", why);
    std::string msg = fmt::format("HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                                  status, body.size(), body);
    (void)!write(fd, msg.data(), msg.size());
  }

  // Moves bytes both ways until each socket would block, then re-arms interest; closes when both
  // directions have passed their EOF or a socket failed.
  void pump(uint64_t id, Relay& r) {
    bool failed = false;
    for (int side = 0; side < 2 && !failed; ++side) {
      Direction& d = r.dir[side];
      int src = r.fd[side].get(), dst = r.fd[1 - side].get();
      for (;;) {
        bool progress = false;
        if (!d.read_eof && !d.full()) {
          ssize_t n = d.fill(src);
          if (n > 0) {
            d.end += static_cast<size_t>(n);
            progress = true;
          } else if (n == 0) {
            d.read_eof = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            failed = true;
            break;
          }
        }
        if (!d.empty()) {
          ssize_t n = d.drain(dst);
          if (n > 0) {
            d.begin += static_cast<size_t>(n);
            if (d.empty()) d.begin = d.end = 0;
            progress = true;
          } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            failed = true;
            break;
          }
        }
        if (d.read_eof && d.empty() && !d.write_shut) {
          shutdown(dst, SHUT_WR);
          d.write_shut = true;
        }
        if (!progress) break;
      }
    }
    if (failed || (r.dir[0].done() && r.dir[1].done())) {
      relays_.erase(id);  // closing the fds removes them from the epoll set
      return;
    }
    for (int side = 0; side < 2; ++side) {
      // Read when this side's outgoing buffer has room; write when the other side's has bytes for us.
      uint32_t want = 0;
      if (!r.dir[side].read_eof && !r.dir[side].full()) want |= EPOLLIN;
      if (!r.dir[1 - side].empty()) want |= EPOLLOUT;
      if (want != r.interest[side]) {
        epoll_event ev{};
        ev.events = want;
        ev.data.u64 = (id << 1) | static_cast<uint64_t>(side);
        epoll_ctl(ep_.get(), EPOLL_CTL_MOD, r.fd[side].get(), &ev);
        r.interest[side] = want;
      }
    }
  }

  ProxyOptions opts_;
  UniqueFd ep_;
  std::vector<UniqueFd> listeners_;
  std::map<uint64_t, std::unique_ptr<Relay>> relays_;
  uint64_t next_id_ = 1;
};

}  // namespace

void run_proxy(const ProxyOptions& opts) { Proxy(opts).run(); }

void ProxyProcess::start() {
  if (!enabled() || pid_ > 0) return;
  auto now = std::chrono::steady_clock::now();
  if (last_start_ != std::chrono::steady_clock::time_point{} && now - last_start_ < std::chrono::seconds(1)) return;
  last_start_ = now;
  pid_t pid = fork();
  if (pid < 0) {
    logf("proxy: cannot fork: {}", strerror(errno));
    return;
  }
  if (pid == 0) {
    // moat-init blocks the signals it handles through its signalfd; the relay wants the defaults.
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, nullptr);
    signal(SIGPIPE, SIG_IGN);
    run_proxy(opts_);
  }
  pid_ = pid;
}

bool ProxyProcess::on_reaped(pid_t pid, int status, bool stopping) {
  if (pid != pid_) return false;
  pid_ = -1;
  if (!stopping) {
    logf("proxy: relay exited (status {}); starting it again", status);
    start();
  }
  return true;
}

}  // namespace moat::guest
