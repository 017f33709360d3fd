// The default seccomp profile: deny by default (EPERM), allow the system calls an ordinary Linux
// userland needs. It follows Docker's default profile for a container without CAP_SYS_ADMIN and
// tightens it where an AI agent's box needs less than a generic container:
//   - ptrace, process_vm_readv/writev: Docker allows them on kernels >= 4.8; an agent has no
//     debugger use that outweighs reading other processes' memory, so they stay denied.
//   - io_uring_setup/enter/register: Docker (until recently) allowed them; io_uring has been the
//     source of a long run of kernel privilege escalations and bypasses seccomp for its operations.
//   - everything Docker allows only with an extra capability (mount, unshare, setns, bpf,
//     perf_event_open, module loading, kexec, open_by_handle_at, ...) is simply absent, since we
//     never grant those capabilities.
// Rules naming a syscall this host's libseccomp does not know are skipped by the runtime, so the
// list may name newer syscalls safely.
#include <algorithm>

#include "sandbox/oci/spec.h"

namespace moat::oci {
namespace {

constexpr int kENOSYS = 38;
// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET:
// clone is allowed only when none of these bits is set, so no new namespace can be made with it.
constexpr uint64_t kCloneNamespaceFlags = 0x7E020000;

// Allowed unconditionally. Docker's list minus the io_uring family (see above).
constexpr std::string_view kAllowed[] = {
    "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "chroot", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64",
    "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
    "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl",
    "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set",
    "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr",
    "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "modify_ldt", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at",
    "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll",
    "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid",
    "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
    "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
    "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "splice",
    "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
    "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
};

Json allow(std::initializer_list<std::string_view> names) {
  Json j = Json::array();
  for (auto n : names) j.push_back(n);
  return Json{{"names", j}, {"action", "SCMP_ACT_ALLOW"}};
}

Json arg(unsigned index, uint64_t value, std::string_view op, uint64_t value_two = 0) {
  Json a{{"index", index}, {"value", value}, {"op", op}};
  if (op == "SCMP_CMP_MASKED_EQ") a["valueTwo"] = value_two;
  return a;
}

}  // namespace

const std::vector<std::string_view>& denied_syscalls() {
  static const std::vector<std::string_view> denied = {
      "ptrace",       "process_vm_readv", "process_vm_writev", "bpf",           "perf_event_open",
      "userfaultfd",  "keyctl",           "add_key",           "request_key",   "io_uring_setup",
      "io_uring_enter", "io_uring_register", "kexec_load",     "kexec_file_load", "open_by_handle_at",
      "mount",        "umount",           "umount2",           "pivot_root",    "unshare",
      "setns",        "init_module",      "finit_module",      "delete_module", "fsopen",
      "fsmount",      "fsconfig",         "fspick",            "move_mount",    "open_tree",
      "mount_setattr", "syslog",          "reboot",            "swapon",        "swapoff",
      "acct",         "quotactl",         "quotactl_fd",       "lookup_dcookie", "iopl",
      "ioperm",       "settimeofday",     "stime",             "clock_settime", "clock_settime64",
      "kcmp",         "pidfd_getfd",      "process_madvise",   "fanotify_init", "sethostname",
      "setdomainname", "vhangup",         "nfsservctl",        "uselib",
  };
  return denied;
}

const std::vector<uint64_t>& sandbox_socket_families() {
  // AF_UNIX (1): moat-init's socket, local IPC; AF_INET (2) and AF_INET6 (10): loopback and the
  // proxy at 127.0.0.1:3128; AF_NETLINK (16): `ip`, glibc's getaddrinfo (RTM_GETADDR).
  static const std::vector<uint64_t> families = {1, 2, 10, 16};
  return families;
}

Json default_seccomp_profile() {
  Json names = Json::array();
  for (auto n : kAllowed) {
    // Belt and braces: a denied syscall must never slip into the allowlist by an edit above.
    const auto& denied = denied_syscalls();
    if (std::find(denied.begin(), denied.end(), n) != denied.end()) continue;
    names.push_back(n);
  }
  Json rules = Json::array();
  rules.push_back(Json{{"names", names}, {"action", "SCMP_ACT_ALLOW"}});

  // socket and socketpair: only the families a sandbox needs (one rule per family: rules for the same
  // syscall are alternatives). Every other family (AF_ALG, TIPC, RDS, CAN, XDP, VSOCK, PACKET,
  // BLUETOOTH, ...) gets the default action, EPERM, before the kernel loads or reaches its code: the
  // rarely used families are where socket-level kernel bugs keep being found. Within the allowed
  // families, raw sockets are refused by the kernel because CAP_NET_RAW is not granted. socketcall,
  // the 32-bit ABI's way to the same calls, is not an x86-64 system call and is not listed.
  for (uint64_t family : sandbox_socket_families()) {
    Json rule = allow({"socket", "socketpair"});
    rule["args"] = Json::array({arg(0, family, "SCMP_CMP_EQ")});
    rules.push_back(rule);
  }

  // personality: only the harmless personas (Linux, Linux32, UNAME26 variants, and the query).
  for (uint64_t persona : {0x0ull, 0x8ull, 0x20000ull, 0x20008ull, 0xffffffffull}) {
    Json p = allow({"personality"});
    p["args"] = Json::array({arg(0, persona, "SCMP_CMP_EQ")});
    rules.push_back(p);
  }

  // clone: threads and forks yes, new namespaces no.
  Json clone = allow({"clone"});
  clone["args"] = Json::array({arg(0, kCloneNamespaceFlags, "SCMP_CMP_MASKED_EQ", 0)});
  rules.push_back(clone);

  // clone3 passes its flags in a struct seccomp cannot inspect; ENOSYS makes libc fall back to clone.
  rules.push_back(Json{{"names", Json::array({"clone3"})}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", kENOSYS}});

  return Json{
      {"defaultAction", "SCMP_ACT_ERRNO"},
      // x86-64 only: a system call of the 32-bit ABIs (int $0x80, x32) matches no architecture of the
      // filter and gets the runtime's bad-architecture action (the thread is killed, or ENOSYS), so
      // 32-bit programs cannot run. Listing them too would double the filter the kernel builds at every
      // start (~14 ms here) to keep a legacy ABI open that agents do not need.
      {"architectures", Json::array({"SCMP_ARCH_X86_64"})},
      {"syscalls", rules},
  };
}

}  // namespace moat::oci
