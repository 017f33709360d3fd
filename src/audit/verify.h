#pragma once
// `moat audit verify`: recomputes the whole hash chain and names the first broken record.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "audit/checkpoint.h"
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

// What signed checkpoints say about a chain that is itself consistent.
struct CheckpointReport {
  bool ok = true;
  int64_t checkpoints = 0;          // checkpoints checked (duplicates counted once)
  int64_t last_checkpoint_seq = 0;  // the newest record a checkpoint covers; 0 when none did
  int64_t first_bad_seq = 0;        // 0 when ok
  std::string problem;              // one sentence; empty when ok
  std::string public_key;           // the key they were checked against
};

// Checks `checkpoints` against a chain whose records first_seq..last_seq are present and linked
// (verify_chain or the export check said so): each must verify under `public_key` (the key each
// names when empty), must not cover a record beyond last_seq (the tail was cut), and the record at
// its seq must carry its head hash (`hash_at`; otherwise the chain was recomputed). Checkpoints of
// records before first_seq (an export made --since) are skipped. The first problem in seq order wins.
CheckpointReport check_checkpoints(std::vector<Checkpoint> checkpoints, int64_t first_seq, int64_t last_seq,
                                   const std::function<Result<std::optional<std::string>>(int64_t seq)>& hash_at,
                                   std::string_view public_key);

// `moat audit verify --file`: an export checked offline, with no store and no moatd.
struct ExportReport {
  bool ok = false;
  int64_t records = 0;             // records read, up to and including the first bad one
  int64_t first_seq = 0, last_seq = 0;  // the records the file holds (0 when none)
  int64_t checkpoints = 0;         // checkpoints that cover records in the file and were checked
  int64_t last_checkpoint_seq = 0; // records after it are consistent but nothing signed proves them
  std::string public_key;          // the key checkpoints were checked against
  bool key_given = false;          // false: against the key the checkpoints name (pass --key)
  int64_t first_bad_seq = 0;       // 0 when ok
  std::string problem;             // one sentence; empty when ok
};

// Reads `path` (JSON Lines from `moat audit export`: records and checkpoints) and, when given, more
// checkpoint files (the sink's copy), then checks that the records are consecutive, that each hash
// matches its record and links to the one before (record 1 to the genesis hash; a file made --since
// starts where it starts), and the checkpoints as check_checkpoints does. With `public_key` given, a
// file with records but no checkpoint covering any of them fails: it proves nothing. A file of
// checkpoints only (a sink file, a syslog server's log) has each checkpoint's signature checked. A
// checkpoint line may have a syslog header before its JSON object (what a syslog server stores). An
// Error means the file could not be read.
Result<ExportReport> verify_export_file(const std::string& path, std::string_view public_key,
                                        const std::vector<std::string>& checkpoint_files = {});

// The checkpoints kept in the store (table audit_checkpoints), oldest first.
Result<std::vector<Checkpoint>> read_stored_checkpoints(Database& db);
// The checkpoints among the lines of a file (a sink file, an export, or a syslog server's log, where a
// header precedes each checkpoint's JSON object); other lines are skipped.
// NotFound when the file does not exist; a checkpoint line that does not parse is InvalidInput naming it.
Result<std::vector<Checkpoint>> read_checkpoint_lines(const std::string& path);

}  // namespace moat
