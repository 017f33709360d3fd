#pragma once
// One audit record and the hash that chains it to the one before.
//
// Hash of record n = SHA-256 (lowercase hex) of its canonical encoding:
//   "moat-audit-v1\n" then, for each field in the order
//   seq, time_ns, kind, actor, subject, data, prev_hash,
//   the field as a netstring: <decimal byte length> ":" <bytes> ","
// Integers are written in decimal. data is the record's JSON in canonical form (compact, object keys
// sorted, invalid UTF-8 replaced) and is stored as exactly those bytes, so a verifier hashes the
// stored text as is. Length prefixes mean no field boundary can be shifted. Record 1's prev_hash is
// 64 zeros (kGenesisHash).
#include <cstdint>
#include <string>
#include <string_view>

#include "base/json.h"
#include "base/result.h"

namespace moat {

inline constexpr std::string_view kGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000";

struct AuditEvent {
  int64_t seq = 0;
  int64_t time_ns = 0;  // Unix epoch, UTC
  std::string kind;     // "sandbox.create", "exec", "sandbox.stop", ...
  std::string actor;    // "cli", "daemon", an agent's name...
  std::string subject;  // usually a sandbox name
  Json data;
  std::string prev_hash, hash;
};

// What a caller supplies; AuditLog assigns seq, time and hashes.
struct AuditEntry {
  std::string kind;
  std::string actor;
  std::string subject;
  Json data = Json::object();
};

// Compact JSON with sorted keys; never throws (invalid UTF-8 becomes U+FFFD).
std::string canonical_json(const Json& data);

// Appends the canonical encoding described above to `out` (which is not cleared).
void append_canonical_record(std::string& out, int64_t seq, int64_t time_ns, std::string_view kind,
                             std::string_view actor, std::string_view subject, std::string_view data_json,
                             std::string_view prev_hash);

// Hashes records; reuses its buffer and digest context, so hashing a long chain allocates nothing per
// record. Not thread-safe: one per thread.
class RecordHasher {
 public:
  RecordHasher();
  ~RecordHasher();
  RecordHasher(const RecordHasher&) = delete;
  RecordHasher& operator=(const RecordHasher&) = delete;
  // The 64-hex-digit hash; the view is valid until the next call.
  std::string_view hash(int64_t seq, int64_t time_ns, std::string_view kind, std::string_view actor,
                        std::string_view subject, std::string_view data_json, std::string_view prev_hash);

 private:
  std::string buf_;
  void* ctx_;
  char hex_[64];
};

// One-off convenience over RecordHasher.
std::string record_hash(int64_t seq, int64_t time_ns, std::string_view kind, std::string_view actor,
                        std::string_view subject, std::string_view data_json, std::string_view prev_hash);

// "2026-11-27T07:20:00.123456789Z" (nanos = true) or "2026-11-27T07:20:00Z".
std::string format_time_rfc3339(int64_t time_ns, bool nanos = true);

// {"seq", "time" (RFC 3339, ns), "time_ns", "kind", "actor", "subject", "data", "prev_hash", "hash"}.
Json to_json(const AuditEvent& ev);
// The inverse of to_json (and of one line of `moat audit export`).
Result<AuditEvent> audit_event_from_json(const Json& j);

}  // namespace moat
