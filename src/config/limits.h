#pragma once
// A sandbox's resource limits: one typed table of what each may be, and the one check every path
// uses (moat.toml, the control API and SandboxManager::create, agent settings, the CLI). It lives in
// config because config is the lowest component all of those link (cli links api and config only),
// and the limits are config vocabulary ([sandbox] disk, memory, pids, cpus, io_read_bps, ...).
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

enum class Limit { DiskBytes, MemoryBytes, Pids, Cpus, IoReadBps, IoWriteBps, IoReadIops, IoWriteIops };

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
// io_read_bps, io_write_bps, io_read_iops, io_write_iops: the block I/O throttle on the sandbox's own
//   disk (its loop device), in bytes and in operations per second. At the floors, 1 MiB/s and 16 IOPS
//   each way, a sandbox still starts and answers (measured on the busybox test image with the host's
//   page cache dropped: a runc start 0.5 s, create + start under runsc 1.2 s, against a 20 s start
//   timeout). At most 1 TiB/s and 1,000,000,000 IOPS: finite throttles no device reaches (the kernel
//   keeps IOPS in 32 bits).
inline constexpr std::array<LimitRange, 8> kLimitTable{{
    {Limit::DiskBytes, "disk_bytes", double(64ull << 20), double(8ull << 40), true, true, ""},
    {Limit::MemoryBytes, "memory_bytes", double(32ull << 20), double(4ull << 40), true, true, ""},
    {Limit::Pids, "pids", 16, 4194304, true, false, "processes and threads"},
    {Limit::Cpus, "cpus", 0.01, 1024, false, false, "CPUs"},
    {Limit::IoReadBps, "io_read_bps", double(1ull << 20), double(1ull << 40), true, true, "per second"},
    {Limit::IoWriteBps, "io_write_bps", double(1ull << 20), double(1ull << 40), true, true, "per second"},
    {Limit::IoReadIops, "io_read_iops", 16, 1e9, true, false, "I/O operations per second"},
    {Limit::IoWriteIops, "io_write_iops", 16, 1e9, true, false, "I/O operations per second"},
}};

// A sandbox's block I/O throttle: one value per direction and measure. T is uint64_t where every
// value is set (defaults, records, the spec) and std::optional<uint64_t> where one may be left to the
// default (requests, agent settings). io_fields<T>() pairs each field with its Limit, so the code
// that reads, checks or prints them loops over the table instead of naming four keys four times.
template <class T>
struct IoThrottle {
  T read_bps{}, write_bps{}, read_iops{}, write_iops{};
  bool operator==(const IoThrottle&) const = default;
};

// Set in moat.toml [sandbox] and given to every sandbox that does not say otherwise; kept here beside
// the table so the store's migration gives records made before the limit the very same values.
// Chosen so that a working agent never meets them: on the measured host (a virtio disk doing ~1.3 GB/s
// sequential writes, ~4.5 GB/s reads and ~5,400 4-KiB operations per second at queue depth 1) they
// are a fifth of its write rate, 1/17 of its read rate, and its single-threaded 4-KiB rate; a storm
// in one sandbox then moves at most ~510 MiB/s of it (docs/security.md, "Threat model: a disk storm").
inline constexpr uint64_t kDefaultIoReadBps = 256ull << 20, kDefaultIoWriteBps = 256ull << 20;
inline constexpr uint64_t kDefaultIoReadIops = 4096, kDefaultIoWriteIops = 4096;
inline constexpr IoThrottle<uint64_t> kDefaultIoThrottle{kDefaultIoReadBps, kDefaultIoWriteBps, kDefaultIoReadIops,
                                                         kDefaultIoWriteIops};

template <class T>
struct IoField {
  Limit limit;
  T IoThrottle<T>::*field;
};

template <class T>
constexpr std::array<IoField<T>, 4> io_fields() {
  return {{{Limit::IoReadBps, &IoThrottle<T>::read_bps},
           {Limit::IoWriteBps, &IoThrottle<T>::write_bps},
           {Limit::IoReadIops, &IoThrottle<T>::read_iops},
           {Limit::IoWriteIops, &IoThrottle<T>::write_iops}}};
}

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

// The four I/O limits of `obj` under their table names (io_read_bps, ...), each read with read_limit.
Status read_io_limits(const Json& obj, IoThrottle<std::optional<uint64_t>>& out);
// Those given in `io` put into `obj` under the same names (numbers).
void put_io_limits(Json& obj, const IoThrottle<std::optional<uint64_t>>& io);
void put_io_limits(Json& obj, const IoThrottle<uint64_t>& io);
// Each given value, else the default.
IoThrottle<uint64_t> io_or(const IoThrottle<std::optional<uint64_t>>& given, const IoThrottle<uint64_t>& defaults);

}  // namespace moat
