#pragma once
// Host ids that are not moat's to give. A sandbox's root and users are the host uids/gids
// [uid_base, uid_base + 65536): anyone on the host who holds one of them can act as the sandbox
// (write its files, replace its sockets, signal its processes). A local user holds host ids two ways:
// as its own uid/gid (/etc/passwd, /etc/group) and as subordinate ids that newuidmap/newgidmap let it
// map into a user namespace (/etc/subuid, /etc/subgid: Debian's useradd gives each new user 65536 of
// them from 100000 up to 600100000). So sandbox ranges come from a region moat registers for itself in
// subuid/subgid ("moat:<first>:<count>", above the allocator's reach, so useradd allocates around it),
// and every sandbox start checks its range against everything else there.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "store/sandbox_repo.h"

namespace moat {

// The name of moat's entry for its region (kIdRegionFirst, kIdRegionCount: store/sandbox_repo.h).
inline constexpr std::string_view kIdRegionOwner = "moat";

struct HostIdRange {
  std::string source;  // "/etc/subuid:3 (alice:165536:65536)", "/etc/passwd: user bob (uid 200123)"
  std::string owner;
  int64_t first = 0, count = 0;
};

struct HostIds {
  std::vector<HostIdRange> uids;  // subuid entries and users' uids
  std::vector<HostIdRange> gids;  // subgid entries and groups' gids
};

// Reads passwd, group, subuid and subgid under `etc` (a missing subuid/subgid file is empty).
Result<HostIds> read_host_ids(const std::filesystem::path& etc = "/etc");

// The first uid or gid holder on the host, other than moat's own entry, that overlaps
// [first, first + count): its description, or nothing when the range is moat's alone.
std::optional<std::string> foreign_holder(const HostIds& ids, int64_t first, int64_t count);

// Makes sure subuid and subgid under `etc` register moat's region (appending "moat:<first>:<count>",
// atomically and under a lock, where it is missing). Refuses, naming the entry, when another entry
// already overlaps the region: moat will not hand out ids that someone else may map.
Status register_id_region(const std::filesystem::path& etc = "/etc");

}  // namespace moat
