#pragma once
// Process bookkeeping for moat-init: reaping children, finding a process's descendants through /proc,
// and killing a whole tree.
#include <sys/types.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "base/unique_fd.h"

namespace moat::guest {

using ReapedFn = std::function<void(pid_t pid, int status)>;

// Blocks `signals` and returns a non-blocking, close-on-exec signalfd that reports them.
UniqueFd make_signalfd(std::initializer_list<int> signals);
// Reads and discards everything pending on a signalfd, returning the signal numbers seen.
std::vector<int> drain_signalfd(int fd);

// Reaps every exited child without blocking; calls on_reaped for each. Returns false when this process
// has no children left at all (ECHILD).
bool reap_children(const ReapedFn& on_reaped = {});

struct ProcEntry {
  pid_t pid;
  pid_t ppid;
  char state;        // 'R', 'S', 'Z'...
  std::string comm;  // name as in /proc/<pid>/stat
};

// The name of `pid` as /proc/<pid>/stat gives it; empty when it cannot be read.
std::string process_comm(pid_t pid);
// Every process visible in /proc.
std::vector<ProcEntry> list_processes();
// Every process descended from `root` (children, grandchildren...), `root` excluded.
std::vector<ProcEntry> descendants(pid_t root);

// Sends `sig` to every living descendant of this process.
void signal_descendants(int sig);

// SIGKILLs every descendant of this process and reaps them (this process must be their subreaper),
// repeating until none is left or `max_ms` passed. on_reaped sees each reaped child's status.
void kill_descendants(const ReapedFn& on_reaped = {}, int max_ms = 10000);

}  // namespace moat::guest
