#include "guest/reaper.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

namespace moat::guest {

UniqueFd make_signalfd(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  return UniqueFd(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
}

std::vector<int> drain_signalfd(int fd) {
  std::vector<int> seen;
  signalfd_siginfo info[16];
  for (;;) {
    ssize_t n = ::read(fd, info, sizeof info);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof info[0]; ++i) seen.push_back(static_cast<int>(info[i].ssi_signo));
  }
  return seen;
}

bool reap_children(const ReapedFn& on_reaped) {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
    if (pid > 0) {
      if (on_reaped) on_reaped(pid, status);
      continue;
    }
    if (pid < 0 && errno == EINTR) continue;
    return !(pid < 0 && errno == ECHILD);
  }
}

namespace {
bool read_stat(pid_t pid, ProcEntry& e) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split at the last ')'.
  char* open_paren = strchr(buf, '(');
  char* close_paren = strrchr(buf, ')');
  if (!open_paren || !close_paren || close_paren < open_paren || close_paren[1] == '\0') return false;
  e.pid = pid;
  e.comm.assign(open_paren + 1, close_paren);
  char state = 0;
  int ppid = 0;
  if (sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) return false;
  e.state = state;
  e.ppid = ppid;
  return true;
}
}  // namespace

std::string process_comm(pid_t pid) {
  ProcEntry e;
  return read_stat(pid, e) ? e.comm : std::string();
}

std::vector<ProcEntry> list_processes() {
  std::vector<ProcEntry> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* de = readdir(d)) {
    char* end = nullptr;
    long pid = strtol(de->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    ProcEntry e;
    if (read_stat(static_cast<pid_t>(pid), e)) out.push_back(std::move(e));
  }
  closedir(d);
  return out;
}

std::vector<ProcEntry> descendants(pid_t root) {
  auto all = list_processes();
  std::unordered_multimap<pid_t, size_t> children;
  for (size_t i = 0; i < all.size(); ++i) children.emplace(all[i].ppid, i);
  std::vector<ProcEntry> out;
  std::vector<pid_t> stack{root};
  while (!stack.empty()) {
    pid_t p = stack.back();
    stack.pop_back();
    auto [b, e] = children.equal_range(p);
    for (auto it = b; it != e; ++it) {
      const auto& c = all[it->second];
      if (c.pid == root) continue;
      out.push_back(c);
      stack.push_back(c.pid);
    }
  }
  return out;
}

void signal_descendants(int sig) {
  for (const auto& e : descendants(getpid()))
    if (e.state != 'Z') ::kill(e.pid, sig);
}

void kill_descendants(const ReapedFn& on_reaped, int max_ms) {
  timespec start{};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    bool alive = false;
    for (const auto& e : descendants(getpid())) {
      if (e.state == 'Z') continue;
      alive = true;
      ::kill(e.pid, SIGKILL);
    }
    reap_children(on_reaped);
    if (!alive) {
      // Children killed in the last round may still be zombies the kernel is finishing; one blocking
      // reap pass per remaining child keeps their statuses.
      reap_children(on_reaped);
      return;
    }
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed > max_ms) return;
    timespec pause{0, 1000000};  // 1 ms: let the kernel deliver the kills and reparent orphans
    nanosleep(&pause, nullptr);
  }
}

}  // namespace moat::guest
