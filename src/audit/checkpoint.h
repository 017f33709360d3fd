#pragma once
// Signed checkpoints of the audit chain: moatd's Ed25519 signature over (seq, head hash, time), so a
// verifier holding moatd's public key can tell that record `seq` of the chain carried `head_hash` when
// it was signed. A chain recomputed afterwards, or cut short, no longer matches what was signed.
//
// Signed message (libsodium crypto_sign_detached, Ed25519):
//   "moat-audit-checkpoint-v1\n" then seq, head_hash, time_ns as netstrings
//   (<decimal byte length> ":" <bytes> ","), integers in decimal.
//
// One checkpoint as a JSON line (the sink's format and a line of `moat audit export`):
//   {"type":"checkpoint","seq":1000,"head_hash":"<64 hex>","time":"2026-...Z","time_ns":...,
//    "public_key":"<64 hex>","signature":"<128 hex>"}
// Record lines have no "type" key; that is how a reader tells the two apart.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/json.h"
#include "base/result.h"

namespace moat {

struct Checkpoint {
  int64_t seq = 0;
  std::string head_hash;   // hash of record `seq` (64 hex)
  int64_t time_ns = 0;     // when it was signed (Unix epoch, UTC)
  std::string public_key;  // the signer's Ed25519 public key (64 hex)
  std::string signature;   // Ed25519 signature (128 hex)
};

// The bytes a checkpoint's signature covers (see above).
std::string checkpoint_message(int64_t seq, std::string_view head_hash, int64_t time_ns);

// moatd's signing key. The secret half lives in sodium-allocated memory and is wiped when this goes.
class CheckpointKey {
 public:
  static constexpr size_t kSeedBytes = 32;
  // From the 32-byte seed kept in the key file (<state>/audit.key).
  static Result<CheckpointKey> from_seed(std::string_view seed);
  // A fresh random seed, for the key file's first creation.
  static std::string random_seed();

  CheckpointKey(CheckpointKey&& o) noexcept : sk_(o.sk_), public_hex_(std::move(o.public_hex_)) { o.sk_ = nullptr; }
  CheckpointKey& operator=(CheckpointKey&&) = delete;
  CheckpointKey(const CheckpointKey&) = delete;
  ~CheckpointKey();

  Checkpoint sign(int64_t seq, std::string head_hash, int64_t time_ns) const;
  const std::string& public_key_hex() const { return public_hex_; }

 private:
  CheckpointKey() = default;
  unsigned char* sk_ = nullptr;  // crypto_sign_SECRETKEYBYTES, sodium_malloc'ed
  std::string public_hex_;
};

// Checks a checkpoint's signature against `public_key_hex` (its own public_key when empty). An error
// names the checkpoint and what is wrong: a malformed key or signature, signed by another key, or a
// signature that does not match its contents (forged or edited).
Status verify_checkpoint(const Checkpoint& cp, std::string_view public_key_hex = {});

// A public key given to --key: 64 hex digits, or a file holding them (as `moat audit key` prints).
Result<std::string> parse_public_key(std::string_view text_or_path);

Json to_json(const Checkpoint& cp);
// The checkpoint as one JSON line (no newline), its fields in the order shown above.
std::string checkpoint_line(const Checkpoint& cp);
// A checkpoint line (the object above); InvalidInput naming the missing or malformed field.
Result<Checkpoint> checkpoint_from_json(const Json& j);
// True when a JSON line is a checkpoint rather than a record.
bool is_checkpoint_json(const Json& j);

}  // namespace moat
