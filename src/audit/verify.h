#pragma once
// `moat audit verify`: recomputes the whole hash chain and names the first broken record.
#include <cstdint>
#include <string>

#include "base/result.h"
#include "store/database.h"

namespace moat {

struct VerifyReport {
  bool ok = false;
  int64_t records = 0;        // records read, up to and including the first bad one
  int64_t first_bad_seq = 0;  // 0 when ok
  std::string problem;        // one sentence naming the record; empty when ok
  // When ok: the newest record's seq and hash. The chain cannot tell that records were cut off its end; an
  // operator who keeps these elsewhere (or compares with a previous run) can.
  int64_t last_seq = 0;
  std::string last_hash;
};

// Streams every record in seq order from a snapshot (a separate read connection, so moatd's appends
// are not blocked), recomputing each hash and checking prev_hash linkage and that no seq is missing.
// An Error means the check could not run; a broken chain is a report with ok = false.
Result<VerifyReport> verify_chain(Database& db);

}  // namespace moat
