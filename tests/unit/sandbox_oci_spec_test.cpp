// The OCI spec a sandbox runs with: every hardened default present, and the seccomp profile denies
// what issue 2 lists. Pure JSON checks; the runtime tests prove the same spec actually runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "sandbox/oci/spec.h"

namespace moat::oci {
namespace {

SandboxSpec sample() {
  SandboxSpec s;
  s.id = "agent-1";
  s.rootfs = "/var/lib/moat/sandboxes/agent-1/rootfs";
  s.uid_base = 300000;
  s.uid_count = 65536;
  s.args = {"/moat/init"};
  s.env = {"LANG=C.UTF-8"};
  s.cgroup_path = "/moat/agent-1";
  s.limits.memory_bytes = 512ull << 20;
  s.limits.pids = 300;
  s.limits.cpus = 1.5;
  s.extra_mounts.push_back({"/moat/init", "/usr/lib/moat/moat-init", "bind", {"ro"}});
  return s;
}

std::set<std::string> strings(const Json& arr) {
  std::set<std::string> out;
  for (const auto& v : arr) out.insert(v.get<std::string>());
  return out;
}

const Json* find_mount(const Json& spec, std::string_view dest) {
  for (const auto& m : spec["mounts"])
    if (m["destination"] == dest) return &m;
  return nullptr;
}

bool allowed_unconditionally(const Json& profile, std::string_view name) {
  for (const auto& rule : profile["syscalls"]) {
    if (rule["action"] != "SCMP_ACT_ALLOW") continue;
    if (rule.contains("args") && !rule["args"].empty()) continue;
    for (const auto& n : rule["names"])
      if (n == name) return true;
  }
  return false;
}

bool allowed_in_any_rule(const Json& profile, std::string_view name) {
  for (const auto& rule : profile["syscalls"]) {
    if (rule["action"] != "SCMP_ACT_ALLOW") continue;
    for (const auto& n : rule["names"])
      if (n == name) return true;
  }
  return false;
}

TEST(OciSpec, HasEveryNamespaceIncludingUserAndNetwork) {
  auto spec = make_runtime_spec(sample());
  std::set<std::string> types;
  for (const auto& ns : spec["linux"]["namespaces"]) {
    types.insert(ns["type"].get<std::string>());
    EXPECT_FALSE(ns.contains("path")) << "a sandbox joins no existing namespace: " << ns.dump();
  }
  EXPECT_EQ(types, (std::set<std::string>{"pid", "network", "ipc", "uts", "mount", "cgroup", "user"}));
}

TEST(OciSpec, MapsRootToTheSandboxRangeForUidsAndGids) {
  auto spec = make_runtime_spec(sample());
  for (auto key : {"uidMappings", "gidMappings"}) {
    const auto& m = spec["linux"][key];
    ASSERT_EQ(m.size(), 1u) << key;
    EXPECT_EQ(m[0]["containerID"], 0) << key;
    EXPECT_EQ(m[0]["hostID"], 300000) << key;
    EXPECT_EQ(m[0]["size"], 65536) << key;
  }
  EXPECT_EQ(spec["process"]["user"]["uid"], 0);
  EXPECT_EQ(spec["process"]["user"]["gid"], 0);
}

TEST(OciSpec, ProcessIsHardened) {
  auto spec = make_runtime_spec(sample());
  const auto& p = spec["process"];
  EXPECT_EQ(p["noNewPrivileges"], true);
  EXPECT_EQ(p["oomScoreAdj"], kSandboxOomScoreAdj);
  EXPECT_GT(p["oomScoreAdj"].get<int>(), 0) << "the sandbox must die before moatd";
  EXPECT_EQ(p["args"], Json::array({"/moat/init"}));
  auto env = strings(p["env"]);
  EXPECT_TRUE(env.contains("LANG=C.UTF-8"));
  EXPECT_TRUE(std::any_of(env.begin(), env.end(), [](auto& e) { return e.starts_with("PATH="); }));
  EXPECT_EQ(spec["hostname"], "agent-1");
  EXPECT_EQ(spec["root"]["readonly"], false) << "the overlay is the sandbox's writable layer";
}

TEST(OciSpec, CapabilitiesAreDockersDefaultMinusRawAndMknod) {
  auto spec = make_runtime_spec(sample());
  const auto& caps = spec["process"]["capabilities"];
  auto want = default_capabilities();
  std::set<std::string> want_set(want.begin(), want.end());
  for (auto set : {"bounding", "effective", "permitted"}) EXPECT_EQ(strings(caps[set]), want_set) << set;
  EXPECT_FALSE(caps.contains("inheritable") && !caps["inheritable"].empty());
  EXPECT_FALSE(caps.contains("ambient") && !caps["ambient"].empty());
  for (auto bad : {"CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_NET_ADMIN",
                   "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE"})
    EXPECT_FALSE(want_set.contains(bad)) << bad;
  for (auto keep : {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID", "CAP_SETGID",
                    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
                    "CAP_AUDIT_WRITE"})
    EXPECT_TRUE(want_set.contains(keep)) << keep;
}

TEST(OciSpec, MasksAndWriteProtectsProcAndSysLikeDocker) {
  auto spec = make_runtime_spec(sample());
  auto masked = strings(spec["linux"]["maskedPaths"]);
  for (auto p : {"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                 "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                 "/sys/devices/virtual/powercap"})
    EXPECT_TRUE(masked.contains(p)) << p;
  auto ro = strings(spec["linux"]["readonlyPaths"]);
  for (auto p : {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"})
    EXPECT_TRUE(ro.contains(p)) << p;
}

TEST(OciSpec, MountsAMinimalDevAndReadOnlySys) {
  auto spec = make_runtime_spec(sample());
  auto opts = [&](std::string_view dest) {
    auto* m = find_mount(spec, dest);
    EXPECT_NE(m, nullptr) << dest;
    return m ? strings((*m)["options"]) : std::set<std::string>{};
  };
  EXPECT_EQ((*find_mount(spec, "/proc"))["type"], "proc");
  EXPECT_TRUE(opts("/proc").contains("nosuid"));
  EXPECT_EQ((*find_mount(spec, "/dev"))["type"], "tmpfs");
  auto pts = opts("/dev/pts");
  EXPECT_TRUE(pts.contains("newinstance"));
  EXPECT_TRUE(pts.contains("ptmxmode=0666"));
  EXPECT_TRUE(opts("/sys").contains("ro"));
  EXPECT_TRUE(opts("/sys/fs/cgroup").contains("ro"));
  EXPECT_TRUE(opts("/dev/shm").contains("nodev"));
  EXPECT_EQ((*find_mount(spec, "/dev/mqueue"))["type"], "mqueue");
  // No host device is passed in; the runtime creates only its default minimal set.
  EXPECT_FALSE(spec["linux"].contains("devices") && !spec["linux"]["devices"].empty());
  const auto& dev_rules = spec["linux"]["resources"]["devices"];
  ASSERT_FALSE(dev_rules.empty());
  EXPECT_EQ(dev_rules[0]["allow"], false);
  EXPECT_EQ(dev_rules[0]["access"], "rwm");
}

TEST(OciSpec, ExtraBindMountsNeverBringDevicesOrSetuid) {
  auto spec = make_runtime_spec(sample());
  auto* m = find_mount(spec, "/moat/init");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ((*m)["source"], "/usr/lib/moat/moat-init");
  auto o = strings((*m)["options"]);
  for (auto want : {"rbind", "ro", "nosuid", "nodev"}) EXPECT_TRUE(o.contains(want)) << want;
}

TEST(OciSpec, LimitsMemoryWithoutSwapPidsAndCpu) {
  auto spec = make_runtime_spec(sample());
  const auto& r = spec["linux"]["resources"];
  EXPECT_EQ(r["memory"]["limit"], 512ull << 20);
  EXPECT_EQ(r["memory"]["swap"], 512ull << 20) << "memory+swap == memory: no swap";
  EXPECT_EQ(r["pids"]["limit"], 300);
  EXPECT_EQ(r["cpu"]["period"], 100000);
  EXPECT_EQ(r["cpu"]["quota"], 150000);
  EXPECT_EQ(spec["linux"]["cgroupsPath"], "/moat/agent-1");
}

TEST(OciSpec, ThrottlesBlockIoOnTheSandboxsOwnDiskOnly) {
  auto s = sample();
  EXPECT_FALSE(make_runtime_spec(s)["linux"]["resources"].contains("blockIO")) << "no device: nothing to throttle";
  s.limits.io_device = BlockDevice{7, 42};
  s.limits.io = {8ull << 20, 16ull << 20, 100, 0};  // 0: that one unthrottled
  auto spec = make_runtime_spec(s);
  const auto& b = spec["linux"]["resources"]["blockIO"];
  auto one = [&](const char* key) {
    EXPECT_EQ(b[key].size(), 1u) << key;
    return b[key][0];
  };
  EXPECT_EQ(one("throttleReadBpsDevice"), (Json{{"major", 7}, {"minor", 42}, {"rate", 8ull << 20}}));
  EXPECT_EQ(one("throttleWriteBpsDevice"), (Json{{"major", 7}, {"minor", 42}, {"rate", 16ull << 20}}));
  EXPECT_EQ(one("throttleReadIOPSDevice"), (Json{{"major", 7}, {"minor", 42}, {"rate", 100}}));
  EXPECT_FALSE(b.contains("throttleWriteIOPSDevice"));
  EXPECT_FALSE(b.contains("weight")) << "throttles only: no proportional weight";
}

TEST(OciSpec, SetsRlimits) {
  auto spec = make_runtime_spec(sample());
  std::map<std::string, Json> rl;
  for (const auto& r : spec["process"]["rlimits"]) rl[r["type"].get<std::string>()] = r;
  ASSERT_TRUE(rl.contains("RLIMIT_CORE"));
  EXPECT_EQ(rl["RLIMIT_CORE"]["hard"], 0);
  ASSERT_TRUE(rl.contains("RLIMIT_NOFILE"));
  auto nofile = rl["RLIMIT_NOFILE"]["hard"].get<uint64_t>();
  EXPECT_GT(nofile, 1024u);
  EXPECT_LE(nofile, 65536u);
  EXPECT_EQ(rl["RLIMIT_NOFILE"]["soft"], rl["RLIMIT_NOFILE"]["hard"]);
  ASSERT_TRUE(rl.contains("RLIMIT_NPROC"));
  EXPECT_LE(rl["RLIMIT_NPROC"]["hard"].get<uint64_t>(), 300u);
}

TEST(OciSpec, DefaultsAreTheIssuesDefaults) {
  Limits l;
  EXPECT_EQ(l.memory_bytes, 2ull << 30);
  EXPECT_EQ(l.pids, 1024u);
  EXPECT_EQ(l.cpus, 1.0);
  Hardening h;
  EXPECT_TRUE(h.user_namespace && h.seccomp && h.drop_capabilities && h.no_new_privileges && h.mask_paths);
}

TEST(OciSpec, SeccompDefaultDeniesAndListsOnlyX86_64) {
  auto spec = make_runtime_spec(sample());
  const auto& p = spec["linux"]["seccomp"];
  EXPECT_EQ(p, default_seccomp_profile());
  EXPECT_EQ(p["defaultAction"], "SCMP_ACT_ERRNO");
  // The 32-bit ABIs are closed by not being listed (moat-probe's compat-int80-unshare checks it).
  EXPECT_EQ(strings(p["architectures"]), (std::set<std::string>{"SCMP_ARCH_X86_64"}));
}

TEST(OciSpec, SeccompDeniesEveryListedSyscall) {
  auto p = default_seccomp_profile();
  for (auto name : {"ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
                    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
                    "kexec_load", "kexec_file_load", "open_by_handle_at", "mount", "umount2", "pivot_root", "unshare",
                    "setns", "init_module", "finit_module", "delete_module", "fsopen", "fsmount", "move_mount",
                    "open_tree", "clone3"})
    EXPECT_FALSE(allowed_in_any_rule(p, name)) << name << " must not be allowed";
  for (auto name : denied_syscalls()) EXPECT_FALSE(allowed_in_any_rule(p, name)) << name;
}

TEST(OciSpec, SeccompAllowsAnOrdinaryUserland) {
  auto p = default_seccomp_profile();
  for (auto name : {"read", "write", "openat", "execve", "mmap", "futex", "fork", "vfork", "wait4",
                    "connect", "bind", "listen", "accept4", "epoll_wait", "statx", "getdents64", "chown", "setuid",
                    "prctl", "rt_sigaction", "exit_group", "arch_prctl", "chroot"})
    EXPECT_TRUE(allowed_unconditionally(p, name)) << name;
}

TEST(OciSpec, SeccompAllowsCloneOnlyWithoutNamespaceFlagsAndMakesClone3Enosys) {
  auto p = default_seccomp_profile();
  EXPECT_FALSE(allowed_unconditionally(p, "clone"));
  bool clone_rule = false, clone3_rule = false;
  for (const auto& rule : p["syscalls"]) {
    const auto& names = rule["names"];
    if (names == Json::array({"clone"})) {
      clone_rule = true;
      EXPECT_EQ(rule["action"], "SCMP_ACT_ALLOW");
      ASSERT_EQ(rule["args"].size(), 1u);
      const auto& a = rule["args"][0];
      EXPECT_EQ(a["index"], 0);
      EXPECT_EQ(a["op"], "SCMP_CMP_MASKED_EQ");
      EXPECT_EQ(a["valueTwo"], 0);
      constexpr uint64_t kNamespaceFlags = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 |
                                           0x20000000 | 0x40000000;
      EXPECT_EQ(a["value"].get<uint64_t>(), kNamespaceFlags);
    }
    if (names == Json::array({"clone3"})) {
      clone3_rule = true;
      EXPECT_EQ(rule["action"], "SCMP_ACT_ERRNO");
      EXPECT_EQ(rule["errnoRet"], 38) << "ENOSYS so libc falls back to clone";
    }
  }
  EXPECT_TRUE(clone_rule);
  EXPECT_TRUE(clone3_rule);
}

// socket and socketpair are allowed only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK: one rule per
// family with arg0 == family (rules for one syscall are alternatives), and no other rule allows them,
// so AF_ALG, AF_TIPC, AF_RDS, AF_CAN, AF_XDP, AF_VSOCK, AF_PACKET... get the default action (EPERM).
TEST(OciSpec, SeccompAllowsOnlyTheSocketFamiliesASandboxNeeds) {
  auto p = default_seccomp_profile();
  for (auto call : {"socket", "socketpair"}) {
    EXPECT_FALSE(allowed_unconditionally(p, call)) << call;
    std::set<uint64_t> families;
    for (const auto& rule : p["syscalls"]) {
      bool names_it = false;
      for (const auto& n : rule["names"]) names_it = names_it || n == call;
      if (!names_it) continue;
      EXPECT_EQ(rule["action"], "SCMP_ACT_ALLOW") << call;
      ASSERT_EQ(rule["args"].size(), 1u) << call << " " << rule.dump();
      EXPECT_EQ(rule["args"][0]["index"], 0) << call;
      EXPECT_EQ(rule["args"][0]["op"], "SCMP_CMP_EQ") << call;
      families.insert(rule["args"][0]["value"].get<uint64_t>());
    }
    // AF_UNIX 1, AF_INET 2, AF_INET6 10, AF_NETLINK 16: nothing else.
    EXPECT_EQ(families, (std::set<uint64_t>{1, 2, 10, 16})) << call;
  }
  EXPECT_EQ(p["defaultAction"], "SCMP_ACT_ERRNO");  // everything else: EPERM
  // socketcall (the 32-bit multiplexer) would be a second door; it is not an x86-64 call and not listed.
  EXPECT_FALSE(allowed_in_any_rule(p, "socketcall"));
}

TEST(OciSpec, EachProtectionCanBeTurnedOffOnlyExplicitly) {
  auto s = sample();
  s.hardening.user_namespace = false;
  auto spec = make_runtime_spec(s);
  for (const auto& ns : spec["linux"]["namespaces"]) EXPECT_NE(ns["type"], "user");
  EXPECT_FALSE(spec["linux"].contains("uidMappings"));
  EXPECT_TRUE(spec["linux"].contains("seccomp")) << "turning one protection off leaves the others on";

  s = sample();
  s.hardening.seccomp = false;
  EXPECT_FALSE(make_runtime_spec(s)["linux"].contains("seccomp"));

  s = sample();
  s.hardening.no_new_privileges = false;
  EXPECT_EQ(make_runtime_spec(s)["process"]["noNewPrivileges"], false);

  s = sample();
  s.hardening.mask_paths = false;
  spec = make_runtime_spec(s);
  EXPECT_FALSE(spec["linux"].contains("maskedPaths"));
  EXPECT_FALSE(spec["linux"].contains("readonlyPaths"));

  s = sample();
  s.hardening.drop_capabilities = false;
  auto caps = strings(make_runtime_spec(s)["process"]["capabilities"]["bounding"]);
  EXPECT_TRUE(caps.contains("CAP_SYS_ADMIN"));
}

TEST(OciSpec, HostnameDefaultsToIdButCanBeSet) {
  auto s = sample();
  s.hostname = "box";
  EXPECT_EQ(make_runtime_spec(s)["hostname"], "box");
}

}  // namespace
}  // namespace moat::oci
