#pragma once
// `moat audit export --since ...`: the log as JSON Lines, and the --since parser.
#include <cstdint>
#include <ostream>
#include <string_view>

#include "base/result.h"
#include "store/database.h"

namespace moat {

// Writes every record with time_ns >= since_ns, in seq order, one JSON object per line:
//   {"seq":1,"time":"2026-11-27T07:20:00.000000001Z","time_ns":...,"kind":"...","actor":"...",
//    "subject":"...","data":{...},"prev_hash":"...","hash":"..."}
// "time_ns" is included so a reader can recompute each hash exactly (see audit/event.h). The signed
// checkpoints made since since_ns follow the record each one signs, as lines with "type":"checkpoint"
// (audit/checkpoint.h); those that sign records beyond the last one come at the end. Reads one
// snapshot from a separate connection.
Status export_jsonl(Database& db, int64_t since_ns, std::ostream& out);

// Parses a --since value into nanoseconds since the epoch:
//   RFC 3339 timestamps   2026-11-27T07:00:00Z, 2026-11-27T07:00:00.5+02:00
//   dates (UTC midnight)  2026-11-27
//   durations ago         30s, 10m, 2h, 7d, 2w (relative to now_ns)
// Anything else is InvalidInput naming the value and the accepted forms.
Result<int64_t> parse_since(std::string_view value, int64_t now_ns);

}  // namespace moat
