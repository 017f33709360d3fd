// moat-probe: the hostile agent. A small static program run inside a sandbox by tests/hostile/: with no
// mode it tries, one by one, each thing a contained agent must not be able to do and prints
// "NAME: denied (reason)", "NAME: ALLOWED" or "NAME: REACHABLE"; the modes (membomb, fdbomb,
// inodebomb, proxyflood) each push one limit until it stops them and print where it stopped.
// Tests copy it in with `moat cp` and fail on any line that is not "denied".
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
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <net/ethernet.h>
#include <arpa/inet.h>
#include <sys/io.h>
#include <sys/swap.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <glob.h>

static int failures;

// A call counts as denied only when it failed for lack of permission (EPERM, EACCES), because the
// syscall is filtered (ENOSYS) or the target is read-only or absent (EROFS, ENOENT, ESRCH). Any other
// failure (EFAULT, EINVAL...) means the kernel accepted the call itself, so it counts as reachable.
static void report(const char* name, long rc) {
  int e = errno;
  if (rc >= 0) {
    printf("%s: ALLOWED\n", name);
    failures++;
  } else if (e == EPERM || e == EACCES || e == ENOSYS || e == EROFS || e == ENOENT || e == ESRCH || e == EAFNOSUPPORT ||
             e == EOPNOTSUPP) {
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

// Asks the kernel (rtnetlink) for one change to the sandbox's network and returns its answer: 0 if it
// was made, -1 with errno set otherwise. Root inside has no CAP_NET_ADMIN, so every change is refused.
static long netlink_change(struct nlmsghdr* msg) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -1;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  long rc = -1;
  if (sendto(fd, msg, msg->nlmsg_len, 0, (struct sockaddr*)&kernel, sizeof kernel) >= 0) {
    char buf[4096];
    long n = recv(fd, buf, sizeof buf, 0);
    struct nlmsghdr* h = (struct nlmsghdr*)buf;
    if (n >= (long)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && h->nlmsg_type == NLMSG_ERROR) {
      int err = ((struct nlmsgerr*)NLMSG_DATA(h))->error;
      if (err == 0) rc = 0;
      else errno = -err;
    } else if (n >= 0) {
      errno = EPROTO;
    }
  }
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

static void add_attr(struct nlmsghdr* msg, unsigned short type, const void* data, unsigned short len) {
  struct rtattr* a = (struct rtattr*)((char*)msg + NLMSG_ALIGN(msg->nlmsg_len));
  a->rta_type = type;
  a->rta_len = RTA_LENGTH(len);
  memcpy(RTA_DATA(a), data, len);
  msg->nlmsg_len = NLMSG_ALIGN(msg->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static void probe_netlink(void) {
  struct {
    struct nlmsghdr h;
    union {
      struct ifaddrmsg ifa;
      struct rtmsg rt;
    } u;
    char attrs[64];
  } req;
  struct in_addr addr;
  inet_pton(AF_INET, "10.66.0.1", &addr);
  int lo = 1;

  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
  req.h.nlmsg_type = RTM_NEWADDR;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  req.u.ifa.ifa_family = AF_INET;
  req.u.ifa.ifa_prefixlen = 32;
  req.u.ifa.ifa_index = lo;
  add_attr(&req.h, IFA_LOCAL, &addr, sizeof addr);
  report("netlink-add-address", netlink_change(&req.h));

  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
  req.h.nlmsg_type = RTM_NEWROUTE;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  req.u.rt.rtm_family = AF_INET;
  req.u.rt.rtm_table = RT_TABLE_MAIN;
  req.u.rt.rtm_protocol = RTPROT_BOOT;
  req.u.rt.rtm_scope = RT_SCOPE_LINK;
  req.u.rt.rtm_type = RTN_UNICAST;
  add_attr(&req.h, RTA_OIF, &lo, sizeof lo);
  report("netlink-add-default-route", netlink_change(&req.h));
}

// A socket family the seccomp filter refuses must be refused by the filter itself (EPERM), not by
// the kernel finding the family unbuilt or its module absent (EAFNOSUPPORT): that would pass here
// and fail on the next host. So only EPERM counts as denied.
static void report_filtered(const char* name, long rc) {
  int e = errno;
  if (rc >= 0) {
    printf("%s: ALLOWED\n", name);
    failures++;
    if (rc > 2) close((int)rc);
  } else if (e == EPERM) {
    printf("%s: denied (%s)\n", name, strerror(e));
  } else {
    printf("%s: REACHABLE (%s: the kernel saw the call; the seccomp filter did not refuse it)\n", name, strerror(e));
    failures++;
  }
}

// socket() and socketpair() with every family but AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK are
// refused by seccomp; those four still work (the sandbox's own IPC, loopback, the proxy, `ip`).
static void probe_socket_families(void) {
  static const struct {
    const char* name;
    int family, type;
  } forbidden[] = {
      {"socket-af-alg", 38, SOCK_SEQPACKET},     {"socket-af-tipc", 30, SOCK_RDM},
      {"socket-af-rds", 21, SOCK_SEQPACKET},     {"socket-af-can", 29, SOCK_RAW},
      {"socket-af-can-bcm", 29, SOCK_DGRAM},     {"socket-af-xdp", 44, SOCK_RAW},
      {"socket-af-packet-dgram", AF_PACKET, SOCK_DGRAM}, {"vsock-socket", 40, SOCK_STREAM},
      {"socket-af-bluetooth", 31, SOCK_SEQPACKET}, {"socket-af-key", 15, SOCK_RAW},
      {"socket-af-x25", 9, SOCK_SEQPACKET},      {"socket-af-appletalk", 5, SOCK_DGRAM},
      {"socket-af-smc", 43, SOCK_STREAM},        {"socket-af-llc", 26, SOCK_DGRAM},
  };
  for (size_t i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++)
    report_filtered(forbidden[i].name, socket(forbidden[i].family, forbidden[i].type, 0));
  int sv[2];
  long rc = socketpair(30 /*AF_TIPC*/, SOCK_STREAM, 0, sv);
  if (rc == 0) close(sv[0]), close(sv[1]);
  report_filtered("socketpair-af-tipc", rc);
  rc = socketpair(38 /*AF_ALG*/, SOCK_SEQPACKET, 0, sv);
  if (rc == 0) close(sv[0]), close(sv[1]);
  report_filtered("socketpair-af-alg", rc);

  // The families a sandbox needs: a failure here is a broken sandbox, reported as a failure.
  static const struct {
    const char* what;
    int family, type, protocol, pair;
  } needed[] = {
      {"socketpair(AF_UNIX)", AF_UNIX, SOCK_STREAM, 0, 1}, {"socket(AF_UNIX)", AF_UNIX, SOCK_DGRAM, 0, 0},
      {"socket(AF_INET)", AF_INET, SOCK_STREAM, 0, 0},     {"socket(AF_INET6)", AF_INET6, SOCK_DGRAM, 0, 0},
      {"socket(AF_NETLINK)", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE, 0},
  };
  int broken = 0;
  for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
    int fd = -1;
    if (needed[i].pair) {
      rc = socketpair(needed[i].family, needed[i].type, needed[i].protocol, sv);
      if (rc == 0) close(sv[0]), close(sv[1]);
    } else {
      rc = fd = socket(needed[i].family, needed[i].type, needed[i].protocol);
      if (fd >= 0) close(fd);
    }
    if (rc < 0) {
      printf("needed-socket-family: BROKEN (%s: %s)\n", needed[i].what, strerror(errno));
      failures++;
      broken++;
    }
  }
  // No "name: outcome" line when they work: the report counts only attempts that must be denied.
  if (!broken) printf("needed socket families work (unix socketpair, unix, inet, inet6, netlink)\n");
}

// The cgroup v1 escape: make the kernel run a program of ours on the host when a cgroup empties.
static void probe_release_agent(void) {
  glob_t g;
  int tried = 0;
  if (glob("/sys/fs/cgroup/*/release_agent", 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      long rc = write_file(g.gl_pathv[i], "/workspace/pwn");
      if (rc >= 0 || tried == 0) {
        report_file("cgroup-release-agent", rc);
        tried = 1;
        if (rc >= 0) break;
      }
    }
    globfree(&g);
  }
  if (!tried) report_file("cgroup-release-agent", write_file("/sys/fs/cgroup/release_agent", "/workspace/pwn"));
  report_file("cgroup-notify-on-release", write_file("/sys/fs/cgroup/memory/notify_on_release", "1"));
  report_file("cgroup-raise-own-memory-limit", write_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"));
  mkdir("/tmp/moat-probe-cg", 0700);
  report("mount-cgroup-v1", mount("cgroup", "/tmp/moat-probe-cg", "cgroup", 0, "memory"));
  rmdir("/tmp/moat-probe-cg");
}

// runc CVE-2019-5736: reopen a host-side binary through a process's /proc/PID/exe and overwrite it.
// Here PID 1 is moat-init, a host file the sandbox sees bind-mounted read-only at /.moat/init.
static void probe_host_binary_overwrite(void) {
  report_file("write-/proc/1/exe", open("/proc/1/exe", O_WRONLY | O_TRUNC));
  int path = open("/proc/1/exe", O_PATH);
  long rc = -1;
  if (path >= 0) {
    char via[64];
    snprintf(via, sizeof via, "/proc/self/fd/%d", path);
    rc = open(via, O_WRONLY);
    int e = errno;
    close(path);
    errno = e;
  }
  report_file("reopen-/proc/1/exe-for-writing", rc);
  report_file("write-/.moat/init", open("/.moat/init", O_WRONLY));
  close(open("/tmp/moat-probe-init", O_CREAT | O_WRONLY, 0700));
  report_file("replace-/.moat/init", rename("/tmp/moat-probe-init", "/.moat/init"));
  unlink("/tmp/moat-probe-init");
}

// The new mount API is a way to mount without mount(2).
static void probe_new_mount_api(void) {
  report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
  report("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 1 /*OPEN_TREE_CLONE*/));
  report("move_mount", syscall(SYS_move_mount, AT_FDCWD, "/tmp", AT_FDCWD, "/mnt", 0));
  report("umount-gateway-dir", umount2("/run/moat-gateway", MNT_DETACH));
}

// Pushes RLIMIT_NOFILE: opens /dev/null until refused.
static int fdbomb(void) {
  long n = 0;
  while (open("/dev/null", O_RDONLY) >= 0) n++;
  printf("fdbomb: stopped at %ld open files (%s)\n", n, strerror(errno));
  return errno == EMFILE || errno == ENFILE ? 0 : 1;
}

// Creates empty files in DIR until the file system refuses, then removes them again.
static int inodebomb(const char* dir) {
  char path[4096];
  long n = 0;
  for (;; n++) {
    snprintf(path, sizeof path, "%s/i%ld", dir, n);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd < 0) break;
    close(fd);
  }
  int e = errno;
  printf("inodebomb: stopped at %ld files (%s)\n", n, strerror(e));
  for (long i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s/i%ld", dir, i);
    unlink(path);
  }
  return e == ENOSPC || e == EDQUOT ? 0 : 1;
}

// Opens COUNT connections to the proxy (moat-init's relay, 127.0.0.1:3128) and asks for a CONNECT
// tunnel to TARGET on each, holding every tunnel open; prints how many the gateway opened (200) and
// how many the relay or the gateway refused, by status.
static int proxyflood(int count, const char* target) {
  struct sockaddr_in proxy = {.sin_family = AF_INET, .sin_port = htons(3128)};
  inet_pton(AF_INET, "127.0.0.1", &proxy.sin_addr);
  int* fds = calloc(count, sizeof *fds);
  char ask[256];
  snprintf(ask, sizeof ask, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
  int connected = 0, opened = 0, relay_503 = 0, refused = 0, silent = 0, connect_failed = 0;
  char other[64] = "";
  for (int i = 0; i < count; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr*)&proxy, sizeof proxy) != 0) {
      connect_failed++;
      continue;
    }
    connected++;
    if (write(fds[i], ask, strlen(ask)) < 0) continue;
  }
  for (int i = 0; i < count; i++) {
    if (fds[i] < 0) continue;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    long n = read(fds[i], buf, sizeof buf - 1);
    if (n <= 0) {
      silent++;
      continue;
    }
    buf[n] = 0;
    if (strncmp(buf, "HTTP/1.1 200", 12) == 0 || strncmp(buf, "HTTP/1.0 200", 12) == 0) {
      opened++;
    } else if (strstr(buf, " 503 ") && strstr(buf, "too many connections through the proxy")) {
      relay_503++;
    } else {
      refused++;
      if (!other[0]) snprintf(other, sizeof other, "%.*s", (int)strcspn(buf, "\r\n"), buf);
    }
  }
  printf("proxyflood: %d of %d connected; %d tunnels opened, %d refused by the relay (503), %d refused by the gateway (%s), "
         "%d silent, %d failed to connect\n",
         connected, count, opened, relay_503, refused, other[0] ? other : "-", silent, connect_failed);
  return 0;
}

// Connects to moat-init's socket at PATH as a process inside the sandbox would, and reports what
// moat-init does: refuse at once (an Error frame naming the refusal) or wait for a Hello (served).
static int initsock(const char* path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0) {
    printf("initsock: connect failed: %s\n", strerror(errno));
    return 0;
  }
  struct timeval tv = {.tv_sec = 3};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  long n = read(fd, buf, sizeof buf - 1);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    printf("initsock: served (moat-init waited for a Hello)\n");
    return 0;
  }
  if (n <= 0) {
    printf("initsock: closed without a word\n");
    return 0;
  }
  buf[n] = 0;
  for (long i = 0; i < n; i++)
    if (buf[i] < 0x20 || buf[i] > 0x7e) buf[i] = '.';  // the frame header is binary
  char* msg = strstr(buf, "moat-init:");
  if (msg) msg[strcspn(msg, "\"")] = 0;  // the message ends where its JSON string does
  printf("initsock: %s: %s\n", strstr(buf, "refused") ? "refused" : "answered", msg ? msg : buf);
  return 0;
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
  if (argc > 1 && strcmp(argv[1], "fdbomb") == 0) return fdbomb();
  if (argc > 2 && strcmp(argv[1], "inodebomb") == 0) return inodebomb(argv[2]);
  if (argc > 3 && strcmp(argv[1], "proxyflood") == 0) return proxyflood(atoi(argv[2]), argv[3]);
  if (argc > 2 && strcmp(argv[1], "initsock") == 0) return initsock(argv[2]);
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
  {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    report("settimeofday", settimeofday(&tv, NULL));
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_OFFSET;
    report("adjtimex-offset", adjtimex(&tx));
  }
  report("iopl", iopl(3));
  report("ioperm", ioperm(0x80, 1, 1));
  report("swapon", swapon("/workspace/swap", 0));
  {
    char local[16], remote[16];
    struct iovec l = {local, sizeof local}, r = {(void*)0x400000, sizeof remote};
    report("process_vm_readv-pid1", process_vm_readv(1, &l, 1, &r, 1, 0));
  }
  report_file("read-dev-mem", read_some("/dev/mem"));
  report_file("write-core-pattern", write_file("/proc/sys/kernel/core_pattern", "|/workspace/pwn"));
  probe_socket_families();
  probe_netlink();
  probe_release_agent();
  probe_host_binary_overwrite();
  probe_new_mount_api();
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
