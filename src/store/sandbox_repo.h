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
  std::string options_json = "{}";
  int64_t created_at_ms = 0, started_at_ms = 0, last_used_at_ms = 0;

  bool operator==(const SandboxRecord&) const = default;
};

// Each sandbox maps its uid/gid 0..65535 onto its own host range [uid_base, uid_base + 65536).
// Ranges are aligned: uid_base = kUidBaseFirst + k * kUidRangeSize, so two distinct bases never
// overlap; the table's UNIQUE(uid_base) is the final guard.
inline constexpr int64_t kUidBaseFirst = 200000;
inline constexpr int64_t kUidRangeSize = 65536;
// The last base whose range still ends below 2^32 - 1 (uid_t's "no uid" value).
inline constexpr int64_t kUidBaseLast = kUidBaseFirst + ((0xFFFFFFFFLL - kUidBaseFirst) / kUidRangeSize - 1) * kUidRangeSize;

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
