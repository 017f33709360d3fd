#include "base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

extern char** environ;

namespace moat {
namespace {

std::vector<std::string> build_env(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos && extra.contains(std::string(kv.substr(0, eq)))) continue;
    env.emplace_back(kv);
  }
  for (auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

void split_lines(std::string& pending, std::string_view chunk, const std::function<void(std::string_view)>& cb) {
  if (!cb) return;
  pending.append(chunk);
  size_t start = 0, nl;
  while ((nl = pending.find('\n', start)) != std::string::npos) {
    cb(std::string_view(pending).substr(start, nl - start));
    start = nl + 1;
  }
  pending.erase(0, start);
}

// Resolves argv[0], builds the environment and spawns it. The child gets `in`/`out`/`err` as its
// stdio (-1 = /dev/null) and keeps `keep` open; a program that cannot be executed is an error here.
Result<ChildProcess> fork_exec(const std::vector<std::string>& argv_in, const std::map<std::string, std::string>& env_extra,
                               int in, int out, int err, const std::vector<int>& keep, const char* cwd,
                               bool new_session) {
  if (argv_in.empty()) return fail(ErrorKind::Internal, "cannot run a program: empty argv");
  auto exe = find_program(argv_in[0]);
  if (!exe) return std::unexpected(exe.error());
  std::vector<std::string> argv = argv_in;
  argv[0] = *exe;
  auto env = build_env(env_extra);
  auto cargv = c_strings(argv);
  auto cenv = c_strings(env);
  // posix_spawn, not fork: glibc clones with CLONE_VM|CLONE_VFORK, so moatd's page tables (a large,
  // threaded process) are not copied for a child that execs at once. That copy, and the copy-on-write
  // faults it leaves every thread, cost milliseconds per runtime call where page tables are dear.
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  struct Cleanup {
    posix_spawn_file_actions_t* a;
    posix_spawnattr_t* t;
    ~Cleanup() {
      posix_spawn_file_actions_destroy(a);
      posix_spawnattr_destroy(t);
    }
  } cleanup{&actions, &attr};
  int stdio[3] = {in, out, err};
  for (int target = 0; target < 3; ++target) {
    if (stdio[target] >= 0) posix_spawn_file_actions_adddup2(&actions, stdio[target], target);
    else posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_RDWR, 0);
  }
  for (int fd : keep) posix_spawn_file_actions_adddup2(&actions, fd, fd);  // same number: clears FD_CLOEXEC
  if (cwd) posix_spawn_file_actions_addchdir_np(&actions, cwd);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, static_cast<short>(POSIX_SPAWN_SETSIGMASK | (new_session ? POSIX_SPAWN_SETSID : 0)));
  pid_t pid = -1;
  if (int rc = posix_spawn(&pid, cargv[0], &actions, &attr, cargv.data(), cenv.data()); rc != 0)
    return fail(rc == ENOENT ? ErrorKind::Unavailable : ErrorKind::Internal, "cannot run {}: {}", argv[0], strerror(rc));
  return ChildProcess(pid);
}

}  // namespace

Result<std::string> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (access(name.c_str(), X_OK) == 0) return name;
    return fail(ErrorKind::Unavailable, "program {} is missing or not executable", name);
  }
  const char* path = getenv("PATH");
  std::string_view p = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  while (!p.empty()) {
    auto colon = p.find(':');
    auto dir = p.substr(0, colon);
    std::string candidate = fmt::format("{}/{}", dir, name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    p.remove_prefix(colon + 1);
  }
  return fail(ErrorKind::Unavailable, "program '{}' was not found in PATH; install it (scripts/install-deps does)",
              name);
}

Result<RunResult> run_process(const std::vector<std::string>& argv, const RunOptions& opts) {
  int in_pipe[2] = {-1, -1}, out_pipe[2], err_pipe[2];
  if (opts.stdin_data && pipe2(in_pipe, O_CLOEXEC) != 0) return fail(ErrorKind::Internal, "pipe: {}", strerror(errno));
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0)
    return fail(ErrorKind::Internal, "pipe: {}", strerror(errno));
  UniqueFd in_r(in_pipe[0]), in_w(in_pipe[1]), out_r(out_pipe[0]), out_w(out_pipe[1]), err_r(err_pipe[0]),
      err_w(err_pipe[1]);

  auto started = fork_exec(argv, opts.env_extra, in_r.get(), out_w.get(), err_w.get(), opts.inherit_fds,
                           opts.cwd ? opts.cwd->c_str() : nullptr, false);
  if (!started) return std::unexpected(started.error());
  ChildProcess child = std::move(*started);
  pid_t pid = child.pid();
  in_r.reset();
  out_w.reset();
  err_w.reset();

  RunResult res;
  std::string_view to_write = opts.stdin_data ? std::string_view(*opts.stdin_data) : std::string_view{};
  if (in_w) fcntl(in_w.get(), F_SETFL, O_NONBLOCK);
  if (in_w && to_write.empty()) in_w.reset();
  std::string out_pending, err_pending;
  auto deadline = std::chrono::steady_clock::now() + opts.timeout;
  while (out_r || err_r || in_w) {
    pollfd fds[3];
    int n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out_r) { out_i = n; fds[n++] = {out_r.get(), POLLIN, 0}; }
    if (err_r) { err_i = n; fds[n++] = {err_r.get(), POLLIN, 0}; }
    if (in_w) { in_i = n; fds[n++] = {in_w.get(), POLLOUT, 0}; }
    int wait_ms = -1;
    if (opts.timeout.count() > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        kill(pid, SIGKILL);
        res.timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(left.count());
    }
    int r = poll(fds, n, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    char buf[65536];
    auto drain = [&](int idx, UniqueFd& fd, std::string& sink, std::string& pending,
                     const std::function<void(std::string_view)>& cb) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
      ssize_t got = read(fd.get(), buf, sizeof buf);
      if (got <= 0) {
        if (got < 0 && errno == EINTR) return;
        if (cb && !pending.empty()) cb(pending);
        fd.reset();
        return;
      }
      sink.append(buf, got);
      split_lines(pending, std::string_view(buf, got), cb);
    };
    drain(out_i, out_r, res.out, out_pending, opts.on_stdout_line);
    drain(err_i, err_r, res.err, err_pending, opts.on_stderr_line);
    if (in_i >= 0 && (fds[in_i].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = write(in_w.get(), to_write.data(), to_write.size());
      if (w < 0 && errno != EAGAIN && errno != EINTR) in_w.reset();
      if (w > 0) to_write.remove_prefix(w);
      if (to_write.empty()) in_w.reset();
    }
  }
  int status = child.wait();
  if (WIFEXITED(status)) {
    res.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    res.signal = WTERMSIG(status);
  }
  return res;
}

Result<std::string> run_checked(const std::vector<std::string>& argv, const RunOptions& opts) {
  auto r = run_process(argv, opts);
  if (!r) return std::unexpected(r.error());
  if (r->timed_out) return fail(ErrorKind::Internal, "{} timed out", argv[0]);
  if (!r->ok()) {
    std::string err = r->err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    if (err.empty()) err = r->out;
    if (err.size() > 2000) err = err.substr(err.size() - 2000);
    std::string status = r->signal ? fmt::format("was killed by signal {}", r->signal)
                                   : fmt::format("exited with status {}", r->exit_code);
    return fail(ErrorKind::Internal, "{} {}: {}", argv[0], status, err);
  }
  return std::move(r->out);
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) { kill(pid_, SIGKILL); waitpid(pid_, nullptr, 0); }
    pid_ = std::exchange(o.pid_, -1);
  }
  return *this;
}
ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {}
  }
}
int ChildProcess::wait() {
  int status = 0;
  if (pid_ <= 0) return 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) break;
  }
  pid_ = -1;
  return status;
}
pid_t ChildProcess::release() { return std::exchange(pid_, -1); }

Result<ChildProcess> spawn_process(const std::vector<std::string>& argv, const SpawnOptions& opts) {
  return fork_exec(argv, opts.env_extra, opts.stdin_fd, opts.stdout_fd, opts.stderr_fd, opts.inherit_fds, nullptr,
                   opts.new_session);
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended abnormally";
}

}  // namespace moat
