#pragma once
// A sandbox's resource limits: one typed table of what each may be, and the one check every path
// uses (moat.toml, the control API and SandboxManager::create, agent settings, the CLI). It lives in
// config because config is the lowest component all of those link (cli links api and config only),
// and the limits are config vocabulary ([sandbox] disk, memory, pids, cpus).
//
// No value in range switches a limit off: 0 or a negative number would mean "no limit" to the
// runtimes (pids.max max, CFS quota -1, no memory.max), so the minimums are positive floors.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/json.h"
#include "base/result.h"

namespace moat {

enum class Limit { DiskBytes, MemoryBytes, Pids, Cpus };

struct LimitRange {
  Limit limit;
  std::string_view name;  // field name in sandbox records and agent settings
  double min, max;        // inclusive; every in-range value is exactly representable
  bool whole;             // must be a whole number
  bool bytes;             // a size: shown as "64MiB", may be given as text in JSON
  std::string_view unit;  // said after the range, may be empty
};

// disk_bytes: the sandbox's ext4 file system (the volume code needs 32 MiB; 64 MiB leaves room for
//   its journal and a usable /workspace); at most 8 TiB, below ext4's 16 TiB file-size limit on the
//   host's state file system.
// memory_bytes: cgroup memory limit (swap equal). Measured on the busybox test image: a runc sandbox's
//   start (runc's init runs in the cgroup) and an exec of `sh -c` peak at about 2 MiB of the cgroup;
//   under runsc about 17 MiB, inside the 128 MiB moat adds for gVisor. 32 MiB leaves a real command
//   (a shell, coreutils, a small interpreter) room on top; below it a sandbox starts but is of no use.
//   At most 4 TiB.
// pids: pids cgroup and RLIMIT_NPROC. Measured: a started runc sandbox holds 4 tasks (moat-init, its
//   pre-forked workers, the relay), so 16 leaves 12 for commands (runsc gets 192 more for gVisor). At
//   most 4194304, the kernel's PID_MAX_LIMIT.
// cpus: CFS quota in cores over a 100 ms period; 0.01 is the kernel's 1 ms minimum quota. At most
//   1024: a value above the host's core count is still a finite quota, simply never reached.
inline constexpr std::array<LimitRange, 4> kLimitTable{{
    {Limit::DiskBytes, "disk_bytes", double(64ull << 20), double(8ull << 40), true, true, ""},
    {Limit::MemoryBytes, "memory_bytes", double(32ull << 20), double(4ull << 40), true, true, ""},
    {Limit::Pids, "pids", 16, 4194304, true, false, "processes and threads"},
    {Limit::Cpus, "cpus", 0.01, 1024, false, false, "CPUs"},
}};

constexpr const LimitRange& limit_range(Limit which) {
  for (const auto& r : kLimitTable)
    if (r.limit == which) return r;
  return kLimitTable[0];  // unreachable: the table has every Limit
}

// "16 to 4194304 processes and threads", "64MiB to 8TiB".
std::string limit_range_text(Limit which);

// The one check. `field` names the value as the user gave it ("pids", "--cpus", "memory_bytes");
// empty when the caller's error already names it (moat.toml's "moat.toml:3: sandbox.pids: ").
// Refusals are InvalidInput: "pids: 1 is out of range; allowed 16 to 4194304 processes and threads".
Status check_limit(Limit which, double value, std::string_view field);

// A limit given in JSON (the control API, agent settings): a number, or for sizes also text such as
// "2GiB"; absent or null leaves `out` untouched. The value is checked with check_limit, named `key`.
Status read_limit(const Json& obj, std::string_view key, Limit which, std::optional<uint64_t>& out);
Status read_limit(const Json& obj, std::string_view key, Limit which, std::optional<double>& out);

}  // namespace moat
