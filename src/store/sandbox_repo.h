#pragma once
// The sandboxes table: one row per sandbox moatd owns, surviving moatd restarts.
#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "store/database.h"

namespace moat {

struct SandboxRecord {
  std::string name;
  std::string id;
  std::string image;
  std::string image_digest;
  std::string runtime;
  std::string state;  // "created", "running", "stopped"
  int64_t uid_base = 0;  // 0 on insert = allocate one (see allocate_uid_base)
  int64_t disk_bytes = 0, memory_bytes = 0, pids_limit = 0;
  double cpus = 0;
  int64_t io_read_bps = 0, io_write_bps = 0, io_read_iops = 0, io_write_iops = 0;  // block I/O throttle
  std::string options_json = "{}";
  int64_t created_at_ms = 0, started_at_ms = 0, last_used_at_ms = 0;

  bool operator==(const SandboxRecord&) const = default;
};

// Each sandbox maps its uid/gid 0..65535 onto its own host range [uid_base, uid_base + 65536).
// New ranges come from moat's own id region, registered in /etc/subuid and /etc/subgid (see
// sandbox/id_ranges.h) high above Debian's subordinate id allocator (100000..600100000):
// uid_base = kIdRegionFirst + k * kUidRangeSize. Sandboxes made before the region existed have
// bases kUidBaseFirst + k * kUidRangeSize (legacy: they may overlap users' subordinate ids, which
// every start checks, and `moat sandbox migrate-ids` moves one into the region). Either way two
// distinct bases never overlap; the table's UNIQUE(uid_base) is the final guard.
inline constexpr int64_t kUidRangeSize = 65536;
inline constexpr int64_t kIdRegionFirst = int64_t{1} << 30;
inline constexpr int64_t kIdRegionCount = int64_t{1} << 30;  // 16,384 sandboxes
inline constexpr int64_t kUidBaseFirst = 200000;           // legacy lattice, below the region
inline constexpr int64_t kUidBaseLast = kIdRegionFirst + kIdRegionCount - kUidRangeSize;
// A base moat may have handed out: in the region, or a legacy one below it.
inline constexpr bool is_valid_uid_base(int64_t base) {
  if (base >= kIdRegionFirst) return base <= kUidBaseLast && (base - kIdRegionFirst) % kUidRangeSize == 0;
  return base >= kUidBaseFirst && base + kUidRangeSize <= kIdRegionFirst && (base - kUidBaseFirst) % kUidRangeSize == 0;
}
inline constexpr bool is_legacy_uid_base(int64_t base) { return base < kIdRegionFirst; }

// created, running, stopped, or removing (a remove under way, finished by reconcile after a crash).
bool is_valid_sandbox_state(std::string_view state);

class SandboxRepo {
 public:
  explicit SandboxRepo(Database& db) : db_(db) {}

  // Stores a new sandbox and returns it as stored. With uid_base == 0 a free range is allocated in
  // the same transaction, so concurrent inserts never get the same range. Conflict names the sandbox
  // when the name is taken.
  Result<SandboxRecord> insert(SandboxRecord rec);
  // NotFound: "no sandbox named 'x'; see 'moat sandbox ls'".
  Result<SandboxRecord> get(std::string_view name);
  // All sandboxes, ordered by name.
  Result<std::vector<SandboxRecord>> list();
  Status update_state(std::string_view name, std::string_view state);
  Status touch(std::string_view name, int64_t now_ms);  // last_used_at_ms
  // One durable write for a start: state running, started and last used now.
  Status mark_started(std::string_view name, int64_t ms);
  Status remove(std::string_view name);
  // Gives a sandbox another uid range and options in one write (moat sandbox migrate-ids); Conflict
  // when another sandbox has that range.
  Status set_uid_base(std::string_view name, int64_t uid_base, std::string_view options_json);

  // The smallest aligned base not used by any sandbox row (freed ranges are reused). To use it for
  // an insert, prefer insert() with uid_base = 0, which allocates atomically.
  Result<int64_t> allocate_uid_base();
  // How many sandboxes use the image with this digest (image rm is refused while > 0).
  Result<int64_t> count_using_image(std::string_view digest);

 private:
  Status update_one(std::string_view name, std::string_view sql, auto&& bind_value);
  Database& db_;
};

}  // namespace moat
