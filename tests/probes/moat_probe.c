// moat-probe: a small static program run as the agent inside a sandbox. Each probe tries one thing a
// contained agent must not be able to do and prints "NAME: denied (reason)" or "NAME: ALLOWED".
// Tests copy it in with `moat cp` and assert that no line says ALLOWED.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <net/ethernet.h>

static int failures;

// A call counts as denied only when it failed for lack of permission (EPERM, EACCES), because the
// syscall is filtered (ENOSYS) or the target is read-only or absent (EROFS, ENOENT, ESRCH). Any other
// failure (EFAULT, EINVAL...) means the kernel accepted the call itself, so it counts as reachable.
static void report(const char* name, long rc) {
  int e = errno;
  if (rc >= 0) {
    printf("%s: ALLOWED\n", name);
    failures++;
  } else if (e == EPERM || e == EACCES || e == ENOSYS || e == EROFS || e == ENOENT || e == ESRCH || e == EAFNOSUPPORT) {
    printf("%s: denied (%s)\n", name, strerror(e));
  } else {
    printf("%s: REACHABLE (%s)\n", name, strerror(e));
    failures++;
  }
}

// File probes: any failure to write means the write did not happen, whatever the errno (gVisor's
// procfs answers EIO). Returns 0 on a successful write, -1 with errno set otherwise.
static void report_file(const char* name, long rc) {
  int e = errno;
  if (rc >= 0) {
    printf("%s: ALLOWED\n", name);
    failures++;
  } else {
    printf("%s: denied (%s)\n", name, strerror(e));
  }
}

static long write_file(const char* path, const char* text) {
  int fd = open(path, O_WRONLY);
  if (fd < 0) return -1;
  long n = write(fd, text, strlen(text));
  int e = errno;
  close(fd);
  errno = e;
  return n < 0 ? -1 : 0;
}

static long read_some(const char* path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  char buf[64];
  long n = read(fd, buf, sizeof buf);
  int e = n == 0 ? EACCES : errno;  // an empty read (a masked path) gives nothing away
  close(fd);
  errno = e;
  return n <= 0 ? -1 : 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  // The probes really do these things where they are allowed: never run them on the host.
  if (access("/.moat/init", X_OK) != 0) {
    fprintf(stderr, "moat-probe: refusing to run outside a moat sandbox (no /.moat/init)\n");
    return 2;
  }
  // moat-probe membomb: touch memory until killed; reaching 2 GiB means no limit held.
  if (argc > 1 && strcmp(argv[1], "membomb") == 0) {
    for (size_t total = 0; total < (2ull << 30); total += 1 << 20) {
      char* p = malloc(1 << 20);
      if (!p) {
        printf("malloc failed at %zu MiB\n", total >> 20);
        return 3;
      }
      memset(p, 1, 1 << 20);
    }
    printf("membomb: ALLOWED 2 GiB\n");
    return 1;
  }
  report("mount", mount("none", "/mnt", "tmpfs", 0, NULL));
  report("unshare-userns", unshare(CLONE_NEWUSER));
  report("unshare-mountns", unshare(CLONE_NEWNS));
  report("unshare-netns", unshare(CLONE_NEWNET));
  {
    int fd = open("/proc/1/ns/mnt", O_RDONLY);
    report("setns", fd < 0 ? -1 : setns(fd, 0));
    if (fd >= 0) close(fd);
  }
  report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
  report("ptrace-attach-pid1", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
  {
    static char image[64];
    report("init_module", syscall(SYS_init_module, image, sizeof image, ""));
  }
  {
    int fd = open("/proc/self/exe", O_RDONLY);
    report("finit_module", syscall(SYS_finit_module, fd, "", 0));
    if (fd >= 0) close(fd);
  }
  report("delete_module", syscall(SYS_delete_module, "ext4", 0));
  report("raw-socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  report("packet-socket", socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
  report_file("write-proc-sys", write_file("/proc/sys/kernel/hostname", "pwned"));
  report_file("write-sysrq-trigger", write_file("/proc/sysrq-trigger", "h"));
  report_file("write-sys", write_file("/sys/kernel/uevent_helper", "/x"));
  report_file("read-kcore", read_some("/proc/kcore"));  // masked: /dev/null reads nothing
  report_file("read-kmsg", read_some("/dev/kmsg"));
  // On the sandbox's own root (its host-backed overlay), not a tmpfs the runtime may provide.
  {
    long rc = mknod("/moat-probe-sda", S_IFBLK | 0600, makedev(8, 0));
    int e = errno;
    if (rc == 0) {
      int fd = open("/moat-probe-sda", O_RDONLY);
      rc = fd;  // a node that cannot be opened leads nowhere
      e = errno;
      if (fd >= 0) close(fd);
      unlink("/moat-probe-sda");
    }
    errno = e;
    report_file("mknod-block-device", rc);
  }
  {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  }
  {
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    report("perf_event_open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
  }
  report("userfaultfd", syscall(SYS_userfaultfd, 0));
  {
    char params[120];
    memset(params, 0, sizeof params);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 4, params));
  }
  report("keyctl", syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -3, 0));
  report("add_key", syscall(SYS_add_key, "user", "moat", "x", 1, -3));
  report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
  {
    struct { unsigned int bytes; int type; unsigned char data[8]; } handle = {8, 1, {0}};
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &handle, O_RDONLY));
  }
  report("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc /*RB_POWER_OFF*/, NULL));
  {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    report("clock_settime", clock_settime(CLOCK_REALTIME, &ts));
  }
  // The 32-bit system call ABI (int $0x80) must be closed too, not a way around the filter: unshare
  // there (i386 number 310) in a child, which the filter may kill outright.
  {
    pid_t child = fork();
    if (child == 0) {
      long ret;
      __asm__ volatile("int $0x80" : "=a"(ret) : "a"(310L), "b"((long)CLONE_NEWUSER) : "memory");
      _exit(ret >= 0 ? 0 : (ret == -EPERM || ret == -ENOSYS || ret == -EACCES) ? 1 : 2);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFSIGNALED(status)) {
      printf("compat-int80-unshare: denied (killed by signal %d)\n", WTERMSIG(status));
    } else if (WEXITSTATUS(status) == 1) {
      printf("compat-int80-unshare: denied (error)\n");
    } else {
      printf("compat-int80-unshare: %s\n", WEXITSTATUS(status) == 0 ? "ALLOWED" : "REACHABLE");
      failures++;
    }
  }
  // A host pid (passed by the test) must not be signalable: it is not in the sandbox's pid namespace.
  if (argc > 1) report("signal-host-process", kill(atoi(argv[1]), 0));
  printf("%d allowed\n", failures);
  return failures == 0 ? 0 : 1;
}
