#include "guest/exec_session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "guest/connection.h"
#include "guest/log.h"
#include "guest/reaper.h"
#include "wire/frame.h"

extern char** environ;

namespace moat::guest {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kOutHighWater = 512 << 10;  // stop reading the command's output above this much unsent
constexpr size_t kInHighWater = 4 << 20;     // stop reading the host's stdin above this much unwritten
constexpr auto kDrainAfterExit = std::chrono::milliseconds(100);

// Why the child could not start (see ChildSpec).
enum class Stage : int { Exec = 0, Chdir = 1, User = 2, Terminal = 3 };
struct StartFailure {
  Stage stage;
  int err;
};

struct Pipe {
  UniqueFd r, w;
  bool open() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return false;
    r.reset(p[0]);
    w.reset(p[1]);
    return true;
  }
};

struct Pty {
  UniqueFd master;
  std::string slave_path;
};

std::optional<Pty> open_pty(uint16_t rows, uint16_t cols, int& err) {
  Pty p;
  p.master.reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.master || grantpt(p.master.get()) != 0 || unlockpt(p.master.get()) != 0) {
    err = errno;
    return std::nullopt;
  }
  char name[128];
  if (ptsname_r(p.master.get(), name, sizeof name) != 0) {
    err = errno;
    return std::nullopt;
  }
  p.slave_path = name;
  winsize ws{};
  ws.ws_row = rows ? rows : 24;
  ws.ws_col = cols ? cols : 80;
  ioctl(p.master.get(), TIOCSWINSZ, &ws);
  return p;
}


// In the forked child: becomes the requested command or reports why not.
std::vector<std::string> base_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  return env;
}

// Replaces the entry with the same key, or appends.
void set_env_entry(std::vector<std::string>& env, const std::string& entry) {
  auto key = entry.substr(0, entry.find('=') + 1);
  for (auto& e : env) {
    if (e.compare(0, key.size(), key) == 0) {
      e = entry;
      return;
    }
  }
  env.push_back(entry);
}

// Everything the command's child needs, built before it is cloned: the child shares moat-init's memory
// (CLONE_VM|CLONE_VFORK, as posix_spawn does) and may only make system calls, never allocate.
struct ChildSpec {
  const wire::ExecStart* req = nullptr;
  char** argv = nullptr;
  char** envp = nullptr;
  std::vector<const char*> candidates;  // where execvp would look for argv[0], in order
  std::vector<char*> sh_argv;           // {"/bin/sh", <candidate>, argv[1..], nullptr}: scripts without #!
  int in_fd = -1, out_fd = -1, errout_fd = -1;
  const char* slave_path = nullptr;
  // Why the child could not start, written by the child before it exits: the parent reads it once
  // clone returns (CLONE_VFORK: by then the child has exec'd or exited), so no pipe is needed.
  volatile bool failed = false;
  volatile Stage failed_stage = Stage::Exec;
  volatile int failed_errno = 0;
};

[[noreturn]] void child_fail(ChildSpec& c, Stage stage, int err) {
  c.failed_stage = stage;
  c.failed_errno = err;
  c.failed = true;
  _exit(stage == Stage::Exec && (err == ENOENT || err == ENOTDIR) ? 127 : 126);
}

// execvp's search, done in the parent: PATH comes from the command's environment, not moat-init's.
void plan_path_search(ChildSpec& c, const std::string& file, const std::vector<std::string>& env,
                      std::vector<std::string>& storage) {
  if (file.empty()) return;  // nothing to try: ENOENT
  if (file.find('/') != std::string::npos) {
    storage.push_back(file);
  } else {
    std::string_view path = "/bin:/usr/bin";  // glibc's default when PATH is unset
    for (const auto& e : env)
      if (e.starts_with("PATH=")) path = std::string_view(e).substr(5);
    for (;;) {
      auto colon = path.find(':');
      auto dir = path.substr(0, colon);
      storage.push_back(fmt::format("{}/{}", dir.empty() ? "." : dir, file));  // an empty element is "."
      if (colon == std::string_view::npos) break;
      path.remove_prefix(colon + 1);
    }
  }
  for (const auto& s : storage) c.candidates.push_back(s.c_str());
  c.sh_argv.push_back(const_cast<char*>("/bin/sh"));
  c.sh_argv.push_back(nullptr);  // the candidate, filled in by the child
  for (size_t i = 1; c.argv[i]; ++i) c.sh_argv.push_back(c.argv[i]);
  c.sh_argv.push_back(nullptr);
}

// Signals whose disposition is not the default: SIG_IGN would be inherited through exec, and a handler
// must not run in the child on moat-init's memory. PID 1 records them once (note_signal_dispositions) so
// each command's child resets just those rather than making a system call per signal; unknown means
// reset them all.
sigset_t g_changed_signals;
bool g_changed_known = false;

alignas(64) char g_child_stack[64 << 10];  // one spawn at a time: the connection process is single-threaded

// In the cloned child: becomes the requested command or reports why not.
[[noreturn]] void exec_child(ChildSpec& c) {
  // Every signal is still blocked (the parent blocked them around clone), so nothing of moat-init's
  // runs on the shared memory while dispositions are reset; then the command starts with none blocked.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) {
    if (s == SIGKILL || s == SIGSTOP || (g_changed_known && !sigismember(&g_changed_signals, s))) continue;
    sigaction(s, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  setsid();
  int in_fd = c.in_fd, out_fd = c.out_fd, errout_fd = c.errout_fd;
  if (c.slave_path) {
    // Opened without O_NOCTTY by a session leader: becomes the controlling terminal.
    int t = ::open(c.slave_path, O_RDWR);
    if (t < 0) child_fail(c, Stage::Terminal, errno);
    ioctl(t, TIOCSCTTY, 0);
    in_fd = out_fd = errout_fd = t;
  }
  if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(errout_fd, 2) < 0) child_fail(c, Stage::Terminal, errno);
  // Nothing of moat-init's leaks into the command.
  syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
  const auto& req = *c.req;
  if (geteuid() == 0) {
    // Raw system calls: glibc's wrappers may coordinate with other threads, which this child has none of.
    if (syscall(SYS_setgroups, 0, nullptr) != 0 || syscall(SYS_setgid, req.gid) != 0 || syscall(SYS_setuid, req.uid) != 0)
      child_fail(c, Stage::User, errno);
  } else if (req.uid != geteuid() || req.gid != getegid()) {
    child_fail(c, Stage::User, EPERM);
  }
  if (chdir(req.cwd.empty() ? "/" : req.cwd.c_str()) != 0) child_fail(c, Stage::Chdir, errno);
  // execvp's rules: skip places without the file, remember EACCES, stop at any other error; a file
  // the kernel cannot execute is run as a /bin/sh script.
  int err = ENOENT;
  bool eacces = false;
  for (const char* path : c.candidates) {
    execve(path, c.argv, c.envp);
    err = errno;
    if (err == ENOEXEC) {
      c.sh_argv[1] = const_cast<char*>(path);
      execve(c.sh_argv[0], c.sh_argv.data(), c.envp);
      err = errno;
    }
    if (err == EACCES) {
      eacces = true;
    } else if (err != ENOENT && err != ESTALE && err != ENOTDIR && err != ENODEV && err != ETIMEDOUT) {
      break;
    }
  }
  if (eacces && (err == ENOENT || err == ESTALE || err == ENOTDIR || err == ENODEV || err == ETIMEDOUT)) err = EACCES;
  child_fail(c, Stage::Exec, err);
}

int exec_child_entry(void* arg) { exec_child(*static_cast<ChildSpec*>(arg)); }

// F_SETFL replaces the status flags, which a fresh pipe end or socket does not have: one call, not two.
void set_nonblock_fresh(int fd) { fcntl(fd, F_SETFL, O_NONBLOCK); }

std::string describe_failure(const wire::ExecStart& req, const StartFailure& f) {
  const char* why = strerror(f.err);
  switch (f.stage) {
    case Stage::Exec:
      return fmt::format("moat-init: cannot execute '{}': {}\n", req.argv[0], why);
    case Stage::Chdir:
      return fmt::format("moat-init: cannot change directory to '{}': {}\n", req.cwd, why);
    case Stage::User:
      return fmt::format("moat-init: cannot switch to uid {} gid {}: {}\n", req.uid, req.gid, why);
    case Stage::Terminal:
      return fmt::format("moat-init: cannot set up the terminal for '{}': {}\n", req.argv[0], why);
  }
  return "moat-init: cannot start the command\n";
}

class Session {
 public:
  Session(UniqueFd conn, const wire::ExecStart& req) : conn_(std::move(conn)), req_(req) {}

  void run() {
    started_ = Clock::now();
    if (!start()) return;
    loop();
    finish();
  }

 private:
  bool start() {
    if (!req_.cwd.empty() && req_.cwd[0] != '/') {
      (void)wire::write_frame(conn_.get(), wire::FrameType::Stderr,
                              fmt::format("moat-init: working directory '{}' must be an absolute path\n", req_.cwd));
      wire::ExecExit x;
      x.exit_code = 126;
      (void)wire::write_frame(conn_.get(), wire::FrameType::Exit, wire::encode(x));
      return false;
    }
    sigfd_ = make_signalfd({SIGCHLD});
    Pipe in, out, err;
    std::optional<Pty> pty;
    if (req_.tty) {
      int e = 0;
      pty = open_pty(req_.rows, req_.cols, e);
      if (!pty) {
        send_start_failure(StartFailure{Stage::Terminal, e}, 126);
        return false;
      }
    } else if (!in.open() || !out.open() || !err.open()) {
      send_start_failure(StartFailure{Stage::Terminal, errno}, 126);
      return false;
    }
    // Everything the child needs is built before fork.
    // moat-init's own environment is the sandbox's base (PATH, HOME, the proxy and CA variables,
    // credential placeholders): every process gets it, and the request's K=V entries add or replace.
    std::vector<std::string> env = base_environment();
    if (req_.tty) set_env_entry(env, "TERM=xterm");
    for (const auto& e : req_.env) set_env_entry(env, e);
    std::vector<char*> argv, envp;
    for (auto& a : req_.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    ChildSpec spec;
    spec.req = &req_;
    spec.argv = argv.data();
    spec.envp = envp.data();
    std::vector<std::string> candidates;
    plan_path_search(spec, req_.argv.empty() ? std::string() : req_.argv[0], env, candidates);
    spec.in_fd = in.r.get();
    spec.out_fd = out.w.get();
    spec.errout_fd = err.w.get();
    spec.slave_path = pty ? pty->slave_path.c_str() : nullptr;

    // clone(CLONE_VM|CLONE_VFORK) rather than fork: no copy of moat-init's page tables for a child that
    // execs at once. This process waits until the child has exec'd or failed. Signals stay blocked
    // until the child has reset their dispositions.
    sigset_t all, saved;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &saved);
    pid_t pid = clone(exec_child_entry, g_child_stack + sizeof g_child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &spec);
    int clone_err = errno;
    sigprocmask(SIG_SETMASK, &saved, nullptr);
    if (pid < 0) {
      send_start_failure(StartFailure{Stage::Exec, clone_err}, 126);
      return false;
    }
    pid_ = pid;
    in.r.reset();
    out.w.reset();
    err.w.reset();
    if (spec.failed) {
      int st = 0;
      while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      send_start_failure(StartFailure{spec.failed_stage, spec.failed_errno}, WIFEXITED(st) ? WEXITSTATUS(st) : 126);
      return false;
    }
    if (pty) {
      tty_ = std::move(pty->master);
      set_nonblock_fresh(tty_.get());
    } else {
      stdin_ = std::move(in.w);
      stdout_ = std::move(out.r);
      stderr_ = std::move(err.r);
      fcntl(stdout_.get(), F_SETPIPE_SZ, 1 << 20);  // fewer wakeups for bulk output; best effort
      set_nonblock_fresh(stdin_.get());
      set_nonblock_fresh(stdout_.get());
      set_nonblock_fresh(stderr_.get());
    }
    set_nonblock_fresh(conn_.get());
    return true;
  }

  void send_start_failure(const StartFailure& f, int code) {
    (void)wire::write_frame(conn_.get(), wire::FrameType::Stderr, describe_failure(req_, f));
    wire::ExecExit x;
    x.exit_code = code;
    x.duration_ms = elapsed_ms();
    (void)wire::write_frame(conn_.get(), wire::FrameType::Exit, wire::encode(x));
  }

  uint64_t elapsed_ms() const {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count());
  }

  size_t out_pending() const { return out_q_.size() - out_off_; }

  // Output still to come: the PTY master (until EOF/EIO), or the stdout/stderr pipes.
  bool output_open() const { return tty_live() || stdout_.valid() || stderr_.valid(); }
  bool tty_live() const { return tty_.valid() && !tty_eof_; }

  void loop() {
    std::optional<Clock::time_point> deadline;
    // Clamped so an absurd timeout cannot overflow the clock into an immediate one (~30 years).
    if (req_.timeout_ms > 0)
      deadline = started_ + std::chrono::milliseconds(std::min<uint64_t>(req_.timeout_ms, uint64_t{1} << 40));
    std::optional<Clock::time_point> drain_until;
    enum Slot { kConn, kSig, kOut, kErr, kIn, kTty };
    for (;;) {
      auto now = Clock::now();
      if (exited_) {
        if (!drain_until) drain_until = now + kDrainAfterExit;
        // While the host is slow to read, the drain clock does not run: the output is not abandoned.
        if (out_pending() >= kOutHighWater) drain_until = std::max(*drain_until, now + kDrainAfterExit);
        if (!output_open() || now >= *drain_until) return;
      }
      if (!exited_ && deadline && now >= *deadline) {
        timed_out_ = true;
        kill_tree();
        continue;
      }
      pollfd fds[6];
      int slot_of[6];
      nfds_t n = 0;
      auto add = [&](Slot s, int fd, short ev) {
        if (fd < 0 || ev == 0) return;
        fds[n] = pollfd{fd, ev, 0};
        slot_of[n++] = s;
      };
      bool want_out = out_pending() < kOutHighWater;
      add(kConn, conn_.get(), static_cast<short>((stdin_q_.size() < kInHighWater ? POLLIN : 0) | (out_pending() ? POLLOUT : 0)));
      add(kSig, sigfd_.get(), POLLIN);
      if (want_out) add(kOut, stdout_.get(), POLLIN);
      if (want_out) add(kErr, stderr_.get(), POLLIN);
      add(kIn, stdin_.get(), stdin_q_.empty() ? 0 : POLLOUT);
      if (tty_live()) add(kTty, tty_.get(), static_cast<short>((want_out ? POLLIN : 0) | (stdin_q_.empty() ? 0 : POLLOUT)));

      int timeout = -1;
      auto until = [&](Clock::time_point t) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count() + 1;
        ms = std::max<int64_t>(0, std::min<int64_t>(ms, 60000));
        timeout = timeout < 0 ? static_cast<int>(ms) : std::min(timeout, static_cast<int>(ms));
      };
      if (deadline && !exited_) until(*deadline);
      if (drain_until) until(*drain_until);
      int r = ::poll(fds, n, timeout);
      if (r < 0) {
        if (errno == EINTR) continue;
        logf("exec: poll failed: {}", strerror(errno));
        kill_tree();
        return;
      }
      for (nfds_t i = 0; i < n; ++i) {
        short re = fds[i].revents;
        if (!re) continue;
        switch (slot_of[i]) {
          case kConn:
            if (re & POLLOUT) {
              if (!flush_some()) return host_gone();
            }
            if (re & (POLLIN | POLLHUP | POLLERR)) {
              if (!read_host()) return host_gone();
            }
            break;
          case kSig:
            drain_signalfd(sigfd_.get());
            reap();
            break;
          case kOut:
            read_output(stdout_, wire::FrameType::Stdout);
            break;
          case kErr:
            read_output(stderr_, wire::FrameType::Stderr);
            break;
          case kIn:
            write_stdin(stdin_);
            break;
          case kTty:
            if (re & POLLOUT) write_stdin(tty_);
            if (tty_live() && (re & (POLLIN | POLLHUP | POLLERR))) read_output(tty_, wire::FrameType::Stdout);
            break;
        }
        if (host_gone_) return host_gone();
      }
    }
  }

  // Reads one chunk of the command's output into the queue for the host; closes the fd at EOF.
  void read_output(UniqueFd& fd, wire::FrameType type) {
    char buf[wire::kMaxChunk];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) {  // EOF, or EIO from a PTY master whose last slave closed
        if (&fd == &tty_) {
          // Keep the master open until the command is reaped: closing it now would hang up the
          // terminal and SIGHUP a command that is between closing its stdio and exiting.
          tty_eof_ = true;
          stdin_q_.clear();
        } else {
          fd.reset();
        }
        return;
      }
      compact();
      wire::append_frame(out_q_, type, std::string_view(buf, static_cast<size_t>(n)));
      return;
    }
  }

  // Non-blocking final drain: whatever the pipes already hold, up to `limit` bytes each.
  void drain_now(UniqueFd& fd, wire::FrameType type, size_t limit) {
    size_t got = 0;
    while (fd.valid() && !(&fd == &tty_ && tty_eof_) && got < limit) {
      size_t before = out_q_.size();
      read_output(fd, type);
      if (out_q_.size() == before) break;
      got += out_q_.size() - before;
    }
  }

  void compact() {
    if (out_off_ > 0 && out_off_ >= out_q_.size() / 2) {
      out_q_.erase(0, out_off_);
      out_off_ = 0;
    }
  }

  // Sends what the socket takes now. False when the host is gone.
  bool flush_some() {
    while (out_pending()) {
      ssize_t n = ::send(conn_.get(), out_q_.data() + out_off_, out_pending(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        return false;
      }
      out_off_ += static_cast<size_t>(n);
    }
    out_q_.clear();
    out_off_ = 0;
    return true;
  }

  void write_stdin(UniqueFd& fd) {
    while (!stdin_q_.empty() && fd.valid()) {
      ssize_t n = ::write(fd.get(), stdin_q_.data(), stdin_q_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        // The command closed its stdin (EPIPE): drop what it will never read.
        stdin_q_.clear();
        if (&fd == &stdin_) fd.reset();
        return;
      }
      stdin_q_.erase(0, static_cast<size_t>(n));
    }
    if (stdin_q_.empty() && stdin_eof_ && stdin_.valid()) stdin_.reset();
  }

  // Reads and handles the host's frames. False when the host is gone or broke the protocol.
  bool read_host() {
    char buf[wire::kMaxChunk];
    ssize_t n = ::read(conn_.get(), buf, sizeof buf);
    if (n < 0) return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0) return false;
    decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    for (;;) {
      auto f = decoder_.next();
      if (!f) {
        protocol_error(f.error().message);
        return false;
      }
      if (!*f) return true;
      if (!handle(**f)) return false;
    }
  }

  bool handle(const wire::Frame& f) {
    using wire::FrameType;
    switch (f.type) {
      case FrameType::Stdin:
        if (!stdin_eof_ && (stdin_.valid() || tty_live())) stdin_q_ += f.payload;
        return true;
      case FrameType::StdinEof:
        if (stdin_eof_) return true;
        stdin_eof_ = true;
        if (tty_live()) {
          // A terminal has no end of input: type the EOF character, as a user pressing ^D would.
          termios t{};
          char eof = tcgetattr(tty_.get(), &t) == 0 && t.c_cc[VEOF] ? static_cast<char>(t.c_cc[VEOF]) : '\x04';
          stdin_q_ += eof;
        } else if (stdin_q_.empty()) {
          stdin_.reset();
        }
        return true;
      case FrameType::Resize: {
        auto m = wire::decode<wire::Resize>(f.payload);
        if (!m) {
          protocol_error(m.error().message);
          return false;
        }
        if (tty_.valid()) {
          winsize ws{};
          ws.ws_row = m->rows;
          ws.ws_col = m->cols;
          ioctl(tty_.get(), TIOCSWINSZ, &ws);  // the kernel sends SIGWINCH to the foreground group
        }
        return true;
      }
      case FrameType::Signal: {
        auto m = wire::decode<wire::SignalMsg>(f.payload);
        if (!m) {
          protocol_error(m.error().message);
          return false;
        }
        if (exited_) return true;
        if (m->signal == SIGKILL) {
          kill_tree();
        } else if (::kill(-pid_, m->signal) != 0) {  // the command's process group (it is a session leader)
          ::kill(pid_, m->signal);
        }
        return true;
      }
      default:
        protocol_error("protocol error: unexpected " + wire::frame_type_name(f.type) + " frame during exec");
        return false;
    }
  }

  void protocol_error(const std::string& message) {
    logf("exec of '{}': {}", req_.argv[0], message);
    flush_some();
    compact();
    wire::append_frame(out_q_, wire::FrameType::Error, wire::encode(wire::ErrorMsg{message}));
    flush_blocking();
  }

  void reap() {
    reap_children([this](pid_t pid, int status) { on_reaped(pid, status); });
  }

  void on_reaped(pid_t pid, int status) {
    if (pid != pid_ || exited_) return;
    exited_ = true;
    status_ = status;
    duration_ms_ = elapsed_ms();
    if (stdin_.valid()) stdin_.reset();
  }

  void kill_tree() {
    kill_descendants([this](pid_t pid, int status) { on_reaped(pid, status); });
    if (!exited_) {  // not reaped (unkillable?): report it as killed anyway
      exited_ = true;
      status_ = SIGKILL;
      duration_ms_ = elapsed_ms();
    }
  }

  void host_gone() {
    host_gone_ = true;
    kill_tree();
  }

  void flush_blocking() {
    if (out_pending()) (void)wire::write_all(conn_.get(), std::string_view(out_q_).substr(out_off_));
    out_q_.clear();
    out_off_ = 0;
  }

  void finish() {
    if (host_gone_) return;
    drain_now(stdout_, wire::FrameType::Stdout, 1 << 20);
    drain_now(stderr_, wire::FrameType::Stderr, 1 << 20);
    drain_now(tty_, wire::FrameType::Stdout, 1 << 20);
    wire::ExecExit x;
    if (timed_out_) {
      x.timed_out = true;
      x.signal = SIGKILL;
    } else if (WIFEXITED(status_)) {
      x.exit_code = WEXITSTATUS(status_);
    } else if (WIFSIGNALED(status_)) {
      x.signal = WTERMSIG(status_);
    }
    x.duration_ms = duration_ms_;
    compact();
    wire::append_frame(out_q_, wire::FrameType::Exit, wire::encode(x));
    flush_blocking();
    // Background children keep running; stop reading their output (they get EOF/SIGPIPE; with a PTY,
    // closing the master hangs up the terminal as closing a terminal window would).
    stdout_.reset();
    stderr_.reset();
    tty_.reset();
  }

  UniqueFd conn_;
  wire::ExecStart req_;
  UniqueFd sigfd_, stdin_, stdout_, stderr_, tty_;
  wire::FrameDecoder decoder_;
  std::string out_q_;  // encoded frames for the host
  size_t out_off_ = 0;
  std::string stdin_q_;
  bool stdin_eof_ = false;
  bool tty_eof_ = false;
  pid_t pid_ = -1;
  bool exited_ = false, timed_out_ = false, host_gone_ = false;
  int status_ = 0;
  uint64_t duration_ms_ = 0;
  Clock::time_point started_;
};

}  // namespace

void run_exec(UniqueFd conn, const wire::ExecStart& req) { Session(std::move(conn), req).run(); }

void note_signal_dispositions() {
  sigemptyset(&g_changed_signals);
  for (int s = 1; s < NSIG; ++s) {
    struct sigaction sa {};
    if (sigaction(s, nullptr, &sa) == 0 && sa.sa_handler != SIG_DFL) sigaddset(&g_changed_signals, s);
  }
  g_changed_known = true;
}

}  // namespace moat::guest
