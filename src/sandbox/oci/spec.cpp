#include "sandbox/oci/spec.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>

namespace moat::oci {
namespace {

constexpr uint64_t kCpuPeriodUs = 100000;
constexpr std::string_view kDefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Docker's masked paths: kernel state that leaks host information or offers an attack surface, hidden
// by a bind of /dev/null (files) or an empty read-only tmpfs (directories).
constexpr std::string_view kMaskedPaths[] = {
    "/proc/asound",      "/proc/acpi",        "/proc/interrupts", "/proc/kcore",
    "/proc/keys",        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi",        "/sys/firmware",    "/sys/devices/virtual/powercap",
};
// Kernel knobs that stay visible but must not be written from inside.
constexpr std::string_view kReadonlyPaths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

bool has(const std::vector<std::string>& v, std::string_view s) { return std::find(v.begin(), v.end(), s) != v.end(); }

Json mount(std::string_view dest, std::string_view type, std::string_view source,
           std::initializer_list<std::string_view> options) {
  Json opts = Json::array();
  for (auto o : options) opts.push_back(o);
  return Json{{"destination", dest}, {"type", type}, {"source", source}, {"options", opts}};
}

// The file systems every sandbox gets: its own /proc, a minimal /dev on tmpfs (the runtime adds
// null, zero, full, random, urandom, tty and a ptmx link to the private devpts), read-only /sys and
// cgroup views.
Json base_mounts() {
  Json m = Json::array();
  m.push_back(mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}));
  m.push_back(mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}));
  // gid=5 (tty) exists only when the gid range is mapped; without a user namespace it is the host's.
  m.push_back(mount("/dev/pts", "devpts", "devpts",
                    {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}));
  m.push_back(mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}));
  m.push_back(mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}));
  m.push_back(mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}));
  m.push_back(mount("/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro"}));
  return m;
}

Json extra_mount(const Mount& mt) {
  std::vector<std::string> opts = mt.options;
  if (mt.type == "bind") {
    // A bind never brings device nodes or setuid binaries from the host into the sandbox.
    if (!has(opts, "bind") && !has(opts, "rbind")) opts.insert(opts.begin(), "rbind");
    for (auto o : {"nosuid", "nodev"})
      if (!has(opts, o)) opts.emplace_back(o);
  }
  return Json{{"destination", mt.destination}, {"type", mt.type}, {"source", mt.source}, {"options", opts}};
}

// The runtime sets rlimits from inside the new user namespace, where raising a hard limit above the
// one it inherited from us is refused (EPERM, and the create fails). So a limit is clamped to this
// process's own hard limit: a sandbox never gets more than moatd has, and never fails to start over it.
Json rlimit(std::string_view type, int resource, uint64_t value) {
  rlimit64 own{};
  if (getrlimit64(static_cast<__rlimit_resource>(resource), &own) == 0 && own.rlim_max != RLIM64_INFINITY)
    value = std::min<uint64_t>(value, own.rlim_max);
  return Json{{"type", type}, {"soft", value}, {"hard", value}};
}

// Every capability a kernel of this era knows, for a policy that opts out of dropping them. Inside a
// user namespace they still confer nothing over host resources.
std::vector<std::string> all_capabilities() {
  return {"CAP_CHOWN",           "CAP_DAC_OVERRIDE",   "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
          "CAP_FSETID",          "CAP_KILL",           "CAP_SETGID",          "CAP_SETUID",
          "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
          "CAP_NET_ADMIN",       "CAP_NET_RAW",        "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
          "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",      "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
          "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",      "CAP_SYS_BOOT",        "CAP_SYS_NICE",
          "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",       "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
          "CAP_LEASE",           "CAP_AUDIT_WRITE",    "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
          "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",      "CAP_SYSLOG",          "CAP_WAKE_ALARM",
          "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ"};
}

// The OCI name of each block I/O throttle.
std::string_view throttle_key(Limit l) {
  switch (l) {
    case Limit::IoReadBps: return "throttleReadBpsDevice";
    case Limit::IoWriteBps: return "throttleWriteBpsDevice";
    case Limit::IoReadIops: return "throttleReadIOPSDevice";
    case Limit::IoWriteIops: return "throttleWriteIOPSDevice";
    default: return "";
  }
}

}  // namespace

// Docker's default set minus two:
//   - CAP_NET_RAW: raw and packet sockets must fail inside a sandbox (invariant 3: raw TCP/UDP/ICMP
//     have nowhere to go); the sandbox has only loopback anyway, and ping is not worth the surface.
//   - CAP_MKNOD: /dev is the runtime's minimal set; inside a user namespace device nodes cannot be
//     opened anyway, so the capability would only let an agent create confusing, useless nodes.
// Kept: what package managers and ordinary daemons need as "root" inside the box (chown, setuid,
// setgid, file caps via setfcap, privileged ports, chroot for build tools, kill, audit_write for
// login tools).
std::vector<std::string> default_capabilities() {
  return {"CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",     "CAP_SETGID",
          "CAP_SETUID", "CAP_SETFCAP",      "CAP_SETPCAP",          "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
          "CAP_KILL",   "CAP_AUDIT_WRITE"};
}

Json make_runtime_spec(const SandboxSpec& s) {
  const Hardening& h = s.hardening;

  Json env = Json::array();
  bool has_path = false;
  for (const auto& e : s.env) {
    if (e.starts_with("PATH=")) has_path = true;
    env.push_back(e);
  }
  if (!has_path) env.insert(env.begin(), kDefaultPath);

  auto caps = h.drop_capabilities ? default_capabilities() : all_capabilities();
  Json capabilities{{"bounding", caps}, {"effective", caps}, {"permitted", caps}};

  Json rlimits = Json::array();
  rlimits.push_back(rlimit("RLIMIT_NOFILE", RLIMIT_NOFILE, s.limits.nofile));
  rlimits.push_back(rlimit("RLIMIT_CORE", RLIMIT_CORE, 0));  // no core dumps of agent processes onto the host's disk
  // RLIMIT_NPROC counts per (user namespace, uid); each sandbox has its own host uid range, so this is
  // the sandbox's own count and backs the pids cgroup where a runtime cannot enforce it (runsc).
  if (s.limits.pids > 0) rlimits.push_back(rlimit("RLIMIT_NPROC", RLIMIT_NPROC, s.limits.pids));

  Json process{
      {"terminal", false},
      {"user", {{"uid", 0}, {"gid", 0}}},
      {"args", s.args},
      {"env", env},
      {"cwd", "/"},
      {"capabilities", capabilities},
      {"rlimits", rlimits},
      {"noNewPrivileges", h.no_new_privileges},
      {"oomScoreAdj", kSandboxOomScoreAdj},
  };

  Json mounts = base_mounts();
  for (const auto& m : s.extra_mounts) mounts.push_back(extra_mount(m));

  Json namespaces = Json::array();
  for (auto ns : {"pid", "network", "ipc", "uts", "mount", "cgroup"}) namespaces.push_back(Json{{"type", ns}});

  Json resources{{"devices", Json::array({Json{{"allow", false}, {"access", "rwm"}}})}};
  if (s.limits.memory_bytes > 0) {
    // swap == limit: memory+swap may not exceed the RAM limit, so the sandbox never swaps.
    resources["memory"] = Json{{"limit", s.limits.memory_bytes}, {"swap", s.limits.memory_bytes}};
  }
  if (s.limits.pids > 0) resources["pids"] = Json{{"limit", s.limits.pids}};
  if (s.limits.cpus > 0) {
    auto quota = static_cast<int64_t>(std::llround(s.limits.cpus * kCpuPeriodUs));
    resources["cpu"] = Json{{"quota", std::max<int64_t>(quota, 1000)}, {"period", kCpuPeriodUs}};
  }

  if (s.limits.io_device) {
    // One entry per throttle, on the sandbox's own disk only: every byte it reads or writes there is a
    // bio on that device (the runtime writes blkio.throttle.* on cgroup v1, io.max on v2).
    Json block_io = Json::object();
    for (const auto& f : io_fields<uint64_t>()) {
      uint64_t rate = s.limits.io.*f.field;
      if (rate == 0) continue;
      const auto& dev = *s.limits.io_device;
      block_io[std::string(throttle_key(f.limit))] =
          Json::array({Json{{"major", dev.major}, {"minor", dev.minor}, {"rate", rate}}});
    }
    if (!block_io.empty()) resources["blockIO"] = block_io;
  }

  Json linux{{"namespaces", namespaces}, {"resources", resources}};
  if (h.user_namespace) {
    namespaces.push_back(Json{{"type", "user"}});
    linux["namespaces"] = namespaces;
    Json mapping = Json::array({Json{{"containerID", 0}, {"hostID", s.uid_base}, {"size", s.uid_count}}});
    linux["uidMappings"] = mapping;
    linux["gidMappings"] = mapping;
  }
  if (!s.cgroup_path.empty()) linux["cgroupsPath"] = s.cgroup_path;
  if (h.seccomp) linux["seccomp"] = default_seccomp_profile();
  if (h.mask_paths) {
    Json masked = Json::array(), ro = Json::array();
    for (auto p : kMaskedPaths) masked.push_back(p);
    for (auto p : kReadonlyPaths) ro.push_back(p);
    linux["maskedPaths"] = masked;
    linux["readonlyPaths"] = ro;
  }

  return Json{
      {"ociVersion", "1.0.2"},
      {"process", process},
      {"root", {{"path", s.rootfs.string()}, {"readonly", false}}},
      {"hostname", s.hostname.empty() ? s.id : s.hostname},
      {"mounts", mounts},
      {"linux", linux},
  };
}

}  // namespace moat::oci
