#pragma once
// The OCI runtime spec (a bundle's config.json) for one sandbox. Everything that hardens a sandbox
// is decided here, in one readable place: namespaces, the uid/gid mapping, seccomp, capabilities,
// masked /proc and /sys paths, the minimal /dev, cgroup limits and rlimits. Each protection is on
// by default; a sandbox policy turns one off only by saying so in Hardening.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/json.h"
#include "config/limits.h"

namespace moat::oci {

struct BlockDevice {
  uint32_t major = 0, minor = 0;
  bool operator==(const BlockDevice&) const = default;
};

struct Limits {
  uint64_t memory_bytes = 2ull << 30;  // RAM; swap is set equal, so the sandbox never swaps
  uint64_t pids = 1024;                // processes + threads (pids cgroup), also RLIMIT_NPROC
  double cpus = 1.0;                   // CFS quota in cores
  uint64_t nofile = 65536;             // RLIMIT_NOFILE, soft = hard
  // Block I/O throttle (v1 blkio.throttle.*, v2 io.max) on one device, the sandbox's disk: 0 leaves
  // that one unthrottled; nothing is throttled without a device.
  std::optional<BlockDevice> io_device;
  IoThrottle<uint64_t> io{};
};

// Every field is true by default; a sandbox policy may opt out explicitly.
struct Hardening {
  bool user_namespace = true;     // sandbox root is an unprivileged host uid/gid range
  bool seccomp = true;            // default_seccomp_profile()
  bool drop_capabilities = true;  // default_capabilities(); false = all capabilities (still namespaced)
  bool no_new_privileges = true;  // setuid binaries and file caps cannot raise privileges
  bool mask_paths = true;         // Docker's masked and read-only /proc and /sys paths
  bool operator==(const Hardening&) const = default;
};

struct Mount {
  std::string destination, source, type = "bind";
  std::vector<std::string> options;  // for a bind, add "ro" to make it read-only; "rbind" is implied
};

struct SandboxSpec {
  std::string id;        // container id (also the hostname when hostname is empty)
  std::string hostname;
  std::filesystem::path rootfs;         // already-mounted overlay; stays writable
  uint32_t uid_base = 0, uid_count = 65536;  // host range that sandbox uid/gid 0.. maps to
  std::vector<std::string> args;        // PID 1's argv (moat-init)
  std::vector<std::string> env;         // PATH is added when absent
  std::vector<Mount> extra_mounts;      // e.g. moat-init binary ro, /workspace, /run/moat
  Limits limits;
  Hardening hardening;
  std::string cgroup_path;              // e.g. "/moat/<id>"; empty = the runtime's default
};

// Score given to every sandbox's processes so the kernel's OOM killer picks a sandbox before moatd.
inline constexpr int kSandboxOomScoreAdj = 500;

Json make_runtime_spec(const SandboxSpec& spec);

// Docker's default profile (default deny, allowlist) made stricter: see seccomp.cpp.
Json default_seccomp_profile();

// Syscalls the default profile must never allow, whatever Docker's profile allows.
const std::vector<std::string_view>& denied_syscalls();

// The address families socket() and socketpair() may name: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.
const std::vector<uint64_t>& sandbox_socket_families();

// Capabilities kept by PID 1 (bounding, effective, permitted; none inheritable or ambient).
std::vector<std::string> default_capabilities();

}  // namespace moat::oci
