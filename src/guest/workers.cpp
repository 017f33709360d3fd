#include "guest/workers.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "guest/log.h"

namespace moat::guest {

// One page shared by PID 1 and every worker (MAP_SHARED before the forks).
struct Workers::Shared {
  std::atomic<int> idle;        // idle workers, kept by the workers themselves: the cap on reuse
  std::atomic<bool> stopping;   // set by PID 1 on shutdown: busy workers exit instead of serving again
};

Workers::~Workers() {
  if (shared_) munmap(shared_, sizeof(Shared));
}

bool Workers::open() {
  void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    logf("workers: mmap: {}", strerror(errno));
    return false;
  }
  shared_ = new (p) Shared{};
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    logf("workers: pipe: {}", strerror(errno));
    return false;
  }
  notes_r_.reset(fds[0]);
  notes_w_.reset(fds[1]);
  // Workers block on a full pipe rather than lose a note (PID 1 drains it on every wakeup).
  fcntl(notes_w_.get(), F_SETFL, 0);
  return true;
}

int Workers::retry_in_ms() const {
  if (!notes_w_ || stopping_ || !idle_.empty()) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(retry_at_ - std::chrono::steady_clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left + 1, 0, 1000));
}

void Workers::start(const std::function<void()>& in_child) {
  if (!notes_w_ || stopping_ || !idle_.empty()) return;
  if (std::chrono::steady_clock::now() < retry_at_) return;
  shared_->idle.fetch_add(1);
  pid_t pid = fork();
  if (pid < 0) {
    shared_->idle.fetch_sub(1);
    logf("cannot fork a connection worker: {}", strerror(errno));
    retry_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    return;
  }
  if (pid == 0) {
    if (in_child) in_child();
    run_worker();
  }
  idle_.push_back(pid);
  all_.push_back(pid);
}

void Workers::read_notes() {
  if (!notes_r_) return;
  Note notes[32];
  for (;;) {
    ssize_t n = ::read(notes_r_.get(), notes, sizeof notes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(Note); ++i) {
      pid_t pid = notes[i].pid;
      std::erase(idle_, pid);
      if (!notes[i].idle) continue;
      if (stopping_) {
        ::kill(pid, SIGKILL);  // came back after shutdown began
        continue;
      }
      idle_.push_back(pid);
    }
  }
}

bool Workers::on_reaped(pid_t pid, int status) {
  auto it = std::find(all_.begin(), all_.end(), pid);
  if (it == all_.end()) return false;
  all_.erase(it);
  if (std::find(idle_.begin(), idle_.end(), pid) != idle_.end()) {
    // Died while waiting for a connection: not its normal way out.
    std::erase(idle_, pid);
    shared_->idle.fetch_sub(1);
    if (!stopping_) {
      logf("a connection worker died while idle ({}); forking another in a second",
           WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status)) : fmt::format("status {}", WEXITSTATUS(status)));
      retry_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
  }
  return true;
}

void Workers::stop() {
  if (stopping_) return;
  stopping_ = true;
  if (shared_) shared_->stopping.store(true);
  for (pid_t pid : idle_) ::kill(pid, SIGKILL);
}

void Workers::close_in_child() {
  notes_r_.reset();
  notes_w_.reset();
  if (shared_) munmap(shared_, sizeof(Shared));
  shared_ = nullptr;
}

void Workers::tell(bool idle) {
  Note n{self_, idle ? 1 : 0};
  ssize_t w;
  do w = ::write(notes_w_.get(), &n, sizeof n);
  while (w < 0 && errno == EINTR);
}

int Workers::accept_one() {
  for (;;) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno != EINTR) _exit(1);
    // Non-blocking listener: another idle worker may have taken this connection first.
    int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c >= 0) return c;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
    logf("connection worker: accept: {}", strerror(errno));
    _exit(1);
  }
}

bool Workers::can_serve_again() {
  // Reap what the session left; a living child means descendants remain (the exec's command is gone,
  // so each of them descends from a child of ours): exit and let them pass to PID 1.
  for (;;) {
    pid_t p = waitpid(-1, nullptr, WNOHANG | __WALL);
    if (p > 0) continue;
    if (p == 0) return false;
    if (errno == EINTR) continue;
    break;  // ECHILD: nothing left
  }
  if (shared_->stopping.load()) return false;
  int n = shared_->idle.load();
  do {
    if (n >= kMaxIdle) return false;
  } while (!shared_->idle.compare_exchange_weak(n, n + 1));
  // A session that moved a lot of data leaves free heap behind; give it back before idling.
  if (mallinfo2().fordblks > (1u << 20)) malloc_trim(0);
  return true;
}

void Workers::run_worker() {
  notes_r_.reset();
  self_ = getpid();
  // The worker adopts whatever an exec leaves behind so it can kill the whole tree.
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  for (;;) {
    // Outside a pid namespace nothing else would end an idle worker if moat-init died.
    if (!ctx_.is_pid1) {
      prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
      if (getppid() != ctx_.init_pid) _exit(0);
    }
    int c = accept_one();
    shared_->idle.fetch_sub(1);
    tell(false);
    if (!ctx_.is_pid1) prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);  // a busy worker outlives moat-init, as before
    serve_connection(UniqueFd(c), ctx_);
    if (!can_serve_again()) _exit(0);
    tell(true);
  }
}

}  // namespace moat::guest
