#include "guest/server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "base/result.h"
#include "guest/connection.h"
#include "guest/exec_session.h"
#include "guest/log.h"
#include "guest/reaper.h"
#include "guest/workers.h"

namespace moat::guest {
namespace {

// The socket is bound under a temporary name and renamed into place once listening, so a client that
// sees `path` can connect at once (no ECONNREFUSED window between bind and listen).
Result<UniqueFd> make_listener(const std::string& path, ino_t& inode) {
  std::string tmp = path + ".new";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || tmp.size() >= sizeof addr.sun_path)
    return fail(ErrorKind::InvalidInput, "socket path '{}' is empty or longer than {} bytes", path, sizeof addr.sun_path - 5);
  memcpy(addr.sun_path, tmp.data(), tmp.size());
  // Whatever the agent left at these names in moat-init's own directory (a stale socket, a file, a
  // symlink planted to lock it out of its sandbox) is removed: unlink takes away the name, never what
  // a link points at. Only a directory is refused, since removing one could take the agent's files.
  for (const auto& p : {path, tmp}) {
    struct stat st {};
    if (lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) return fail(ErrorKind::Conflict, "'{}' is a directory; refusing to replace it with a socket", p);
    if (unlink(p.c_str()) != 0) return fail(ErrorKind::Internal, "cannot remove '{}' to listen there: {}", p, strerror(errno));
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail(ErrorKind::Internal, "socket: {}", strerror(errno));
  mode_t old = umask(0177);
  int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int e = errno;
  umask(old);
  if (rc != 0) return fail(ErrorKind::Internal, "cannot bind '{}': {}", tmp, strerror(e));
  chmod(tmp.c_str(), 0600);
  if (listen(fd.get(), 256) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
    e = errno;
    unlink(tmp.c_str());
    return fail(ErrorKind::Internal, "cannot listen on '{}': {}", path, strerror(e));
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) inode = st.st_ino;
  return fd;
}

class Server {
 public:
  explicit Server(const ServerOptions& o) : opts_(o), proxy_(o.proxy) {
    ctx_.started = std::chrono::steady_clock::now();
    ctx_.init_pid = getpid();
    ctx_.is_pid1 = ctx_.init_pid == 1;
    ctx_.host_peers_only = o.host_peers_only;
    ctx_.init_comm = process_comm(ctx_.init_pid);
  }

  int run() {
    // Not PID 1 (tests, or a runtime that runs its own init): still adopt and reap our orphans.
    if (!ctx_.is_pid1) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    note_signal_dispositions();
    sigfd_ = make_signalfd({SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2});
    if (!sigfd_) {
      logf("cannot create signalfd: {}", strerror(errno));
      return 1;
    }
    auto l = make_listener(opts_.listen_path, inode_);
    if (!l) {
      logf("{}", l.error().message);
      return 1;
    }
    listener_ = std::move(*l);
    logf("listening on {} (pid {}{})", opts_.listen_path, ctx_.init_pid, ctx_.is_pid1 ? ", PID 1" : "");
    workers_.emplace(ctx_, listener_.get());
    if (!workers_->open()) workers_.reset();
    start_worker();
    proxy_.start();

    for (;;) {
      pollfd fds[3];
      nfds_t n = 0;
      fds[n++] = pollfd{sigfd_.get(), POLLIN, 0};
      // While a worker is idle, workers accept; PID 1 accepts (forking per connection) only without one.
      int listen_slot = -1;
      if (listener_ && !(workers_ && workers_->any_idle())) {
        listen_slot = static_cast<int>(n);
        fds[n++] = pollfd{listener_.get(), POLLIN, 0};
      }
      if (workers_ && workers_->notes_fd() >= 0) fds[n++] = pollfd{workers_->notes_fd(), POLLIN, 0};
      // A relay that died within a second of its last start is retried on a timer, not in a tight loop;
      // so is a worker that could not be forked or died idle.
      int timeout = terminating_ ? 50 : (proxy_.enabled() && !proxy_.running() ? 1000 : -1);
      if (!terminating_ && listener_ && workers_) {
        int retry = workers_->retry_in_ms();
        if (retry >= 0) timeout = timeout < 0 ? retry : std::min(timeout, retry);
      }
      int r = ::poll(fds, n, timeout);
      if (r < 0 && errno != EINTR) {
        logf("poll: {}", strerror(errno));
        return 1;
      }
      if (fds[0].revents) {
        for (int sig : drain_signalfd(sigfd_.get())) on_signal(sig);
      }
      if (listen_slot >= 0 && fds[listen_slot].revents) accept_all();
      // Before reaping: a worker that took a connection and already finished has said so by now.
      if (workers_) workers_->read_notes();
      reap_children([this](pid_t pid, int status) {
        if (workers_ && workers_->on_reaped(pid, status)) return;
        proxy_.on_reaped(pid, status, terminating_);
      });
      if (!terminating_) {
        start_worker();
        proxy_.start();
      }
      if (terminating_ && nothing_left()) {
        logf("all processes are gone; exiting");
        return 0;
      }
    }
  }

 private:
  void on_signal(int sig) {
    if (sig == SIGCHLD) return;  // reaped after every wakeup
    if (ctx_.is_pid1) {
      ::kill(-1, sig);  // every process in the sandbox but us
    } else {
      signal_descendants(sig);  // kill(-1) outside a pid namespace would reach the whole machine
    }
    if (sig == SIGTERM || (sig == SIGINT && !ctx_.is_pid1)) {
      if (!terminating_) logf("received signal {}; stopping once every process has exited", sig);
      terminating_ = true;
      stop_listening();
    }
  }

  bool nothing_left() {
    if (ctx_.is_pid1) return ::kill(-1, 0) != 0 && errno == ESRCH;
    for (const auto& e : descendants(getpid()))
      if (e.state != 'Z') return false;
    return true;
  }

  void stop_listening() {
    if (!listener_) return;
    listener_.reset();
    if (workers_) workers_->stop();  // idle workers hold the listener too (and block SIGTERM)
    struct stat st {};
    if (lstat(opts_.listen_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == inode_)
      unlink(opts_.listen_path.c_str());
  }

  void start_worker() {
    if (!workers_ || !listener_) return;
    workers_->start([this] { sigfd_.reset(); });
  }

  void accept_all() {
    for (;;) {
      int c = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) logf("accept: {}", strerror(errno));
        return;
      }
      UniqueFd conn(c);
      pid_t pid = fork();
      if (pid < 0) {
        logf("cannot fork for a connection: {}", strerror(errno));
        send_error(conn.get(), fmt::format("moat-init: cannot fork: {}", strerror(errno)));
        continue;
      }
      if (pid == 0) {
        listener_.reset();
        sigfd_.reset();
        if (workers_) workers_->close_in_child();
        // The connection process adopts whatever the exec leaves behind so it can kill the whole tree.
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        serve_connection(std::move(conn), ctx_);
        _exit(0);
      }
    }
  }

  ServerOptions opts_;
  ProxyProcess proxy_;
  ConnContext ctx_;
  UniqueFd sigfd_, listener_;
  std::optional<Workers> workers_;
  ino_t inode_ = 0;
  bool terminating_ = false;
};

}  // namespace

int run_server(const ServerOptions& opts) { return Server(opts).run(); }

}  // namespace moat::guest
