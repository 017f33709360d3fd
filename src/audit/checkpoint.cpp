#include "audit/checkpoint.h"

#include <sodium.h>

#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include "audit/event.h"

namespace moat {

namespace {

void ensure_sodium() {
  static const bool ok = sodium_init() >= 0;
  (void)ok;  // sodium_init fails only without an entropy source; signing then aborts inside libsodium
}

void append_netstring(std::string& out, std::string_view field) {
  out += fmt::format("{}:", field.size());
  out.append(field);
  out.push_back(',');
}

std::string to_hex(const unsigned char* p, size_t n) {
  std::string out(n * 2, '\0');
  sodium_bin2hex(out.data(), out.size() + 1, p, n);  // writes a terminating NUL at out[size()]
  return out;
}

// Exactly `n` bytes from 2n hex digits; nullopt otherwise.
std::optional<std::string> from_hex(std::string_view hex, size_t n) {
  if (hex.size() != n * 2) return std::nullopt;
  std::string out(n, '\0');
  size_t got = 0;
  if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), n, hex.data(), hex.size(), nullptr, &got,
                     nullptr) != 0 ||
      got != n)
    return std::nullopt;
  return out;
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::string checkpoint_message(int64_t seq, std::string_view head_hash, int64_t time_ns) {
  std::string out = "moat-audit-checkpoint-v1\n";
  append_netstring(out, fmt::format("{}", seq));
  append_netstring(out, head_hash);
  append_netstring(out, fmt::format("{}", time_ns));
  return out;
}

Result<CheckpointKey> CheckpointKey::from_seed(std::string_view seed) {
  ensure_sodium();
  if (seed.size() != kSeedBytes)
    return fail(ErrorKind::InvalidInput, "an audit signing key is {} bytes, not {}", kSeedBytes, seed.size());
  CheckpointKey k;
  k.sk_ = static_cast<unsigned char*>(sodium_malloc(crypto_sign_SECRETKEYBYTES));
  if (!k.sk_) return fail(ErrorKind::ResourceLimit, "cannot allocate locked memory for the audit signing key");
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_seed_keypair(pk, k.sk_, reinterpret_cast<const unsigned char*>(seed.data()));
  k.public_hex_ = to_hex(pk, sizeof pk);
  return k;
}

std::string CheckpointKey::random_seed() {
  ensure_sodium();
  std::string seed(kSeedBytes, '\0');
  randombytes_buf(seed.data(), seed.size());
  return seed;
}

CheckpointKey::~CheckpointKey() {
  if (sk_) sodium_free(sk_);  // sodium_free wipes the memory first
}

Checkpoint CheckpointKey::sign(int64_t seq, std::string head_hash, int64_t time_ns) const {
  auto msg = checkpoint_message(seq, head_hash, time_ns);
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), sk_);
  return Checkpoint{seq, std::move(head_hash), time_ns, public_hex_, to_hex(sig, sizeof sig)};
}

Status verify_checkpoint(const Checkpoint& cp, std::string_view public_key_hex) {
  ensure_sodium();
  std::string_view want = public_key_hex.empty() ? std::string_view(cp.public_key) : public_key_hex;
  auto when = format_time_rfc3339(cp.time_ns, false);
  if (!public_key_hex.empty() && cp.public_key != public_key_hex)
    return fail(ErrorKind::InvalidInput,
                "the checkpoint of record {} signed at {} names the key {}, not the expected key {}: it was not signed "
                "by this moatd's key (was audit.key replaced?)",
                cp.seq, when, cp.public_key, public_key_hex);
  auto pk = from_hex(want, crypto_sign_PUBLICKEYBYTES);
  if (!pk)
    return fail(ErrorKind::InvalidInput, "the checkpoint of record {} signed at {}: the public key '{}' is not 64 hex digits",
                cp.seq, when, want);
  auto sig = from_hex(cp.signature, crypto_sign_BYTES);
  if (!sig)
    return fail(ErrorKind::InvalidInput, "the checkpoint of record {} signed at {}: its signature is not 128 hex digits",
                cp.seq, when);
  auto msg = checkpoint_message(cp.seq, cp.head_hash, cp.time_ns);
  if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                  reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                                  reinterpret_cast<const unsigned char*>(pk->data())) != 0)
    return fail(ErrorKind::InvalidInput,
                "the checkpoint of record {} signed at {} does not verify: its signature does not match its contents "
                "(it was edited or forged)",
                cp.seq, when);
  return {};
}

Result<std::string> parse_public_key(std::string_view text_or_path) {
  auto trim = [](std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
    size_t b = s.find_first_not_of(" \t");
    return b == std::string::npos ? std::string() : s.substr(b);
  };
  std::string v = trim(std::string(text_or_path));
  if (is_hex64(v)) return v;
  std::ifstream in{std::string(text_or_path)};
  if (!in)
    return fail(ErrorKind::InvalidInput,
                "--key '{}' is neither a public key (64 hex digits, as 'moat audit key' prints) nor a readable file "
                "holding one",
                text_or_path);
  std::stringstream ss;
  ss << in.rdbuf();
  v = trim(ss.str());
  if (!is_hex64(v))
    return fail(ErrorKind::InvalidInput,
                "--key file {} does not hold a public key: expected 64 lowercase hex digits, as 'moat audit key' prints",
                text_or_path);
  return v;
}

Json to_json(const Checkpoint& cp) {
  return Json{{"type", "checkpoint"},        {"seq", cp.seq},
              {"head_hash", cp.head_hash},   {"time", format_time_rfc3339(cp.time_ns)},
              {"time_ns", cp.time_ns},       {"public_key", cp.public_key},
              {"signature", cp.signature}};
}

std::string checkpoint_line(const Checkpoint& cp) {
  // The strings are quoted as JSON, so one edited into anything in the store cannot break the line.
  auto q = [](const std::string& v) { return Json(v).dump(-1, ' ', false, Json::error_handler_t::replace); };
  return fmt::format(
      "{{\"type\":\"checkpoint\",\"seq\":{},\"head_hash\":{},\"time\":\"{}\",\"time_ns\":{},\"public_key\":{},"
      "\"signature\":{}}}",
      cp.seq, q(cp.head_hash), format_time_rfc3339(cp.time_ns), cp.time_ns, q(cp.public_key), q(cp.signature));
}

bool is_checkpoint_json(const Json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() && j["type"] == "checkpoint";
}

Result<Checkpoint> checkpoint_from_json(const Json& j) {
  if (!is_checkpoint_json(j))
    return fail(ErrorKind::InvalidInput, "a checkpoint must be a JSON object with \"type\":\"checkpoint\"");
  Checkpoint cp;
  for (auto [key, field] : {std::pair{"seq", &cp.seq}, {"time_ns", &cp.time_ns}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer())
      return fail(ErrorKind::InvalidInput, "checkpoint lacks the integer field '{}'", key);
    *field = it->get<int64_t>();
  }
  for (auto [key, field] : {std::pair{"head_hash", &cp.head_hash}, {"public_key", &cp.public_key},
                            {"signature", &cp.signature}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
      return fail(ErrorKind::InvalidInput, "checkpoint lacks the string field '{}'", key);
    *field = it->get<std::string>();
  }
  return cp;
}

}  // namespace moat
