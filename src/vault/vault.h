#pragma once
// The vault: credentials at rest, and the scopes (bindings) that say for which agent and which
// destination each may be injected. An agent never sees a value, only a placeholder.
//
// At rest. The `secrets` table (store/migrations.cpp, version 3) holds, per secret, the binding as
// JSON and crypto_secretbox output: a fresh random nonce and the ciphertext of
//     [1 byte name length][name][4 bytes LE binding length][binding JSON][value]
// sealed with a 32-byte key kept in its own file (default <state_dir>/vault.key, 0600, root only;
// see private_file.h). Sealing the name and binding with the value means a row edited in the store
// (a binding widened to another host, ciphertexts swapped between names) fails to open instead of
// sending a credential somewhere it was not meant to go. The value itself is never stored in clear,
// never logged, never put in an error message, and no method returns it except bound_for().
//
// In memory. The vault loads every row at open() (sealed, plus the parsed binding) and is the only
// writer of the table afterwards, so matching (bound_for, has_binding_for_host, placeholders_for) is
// a lookup in memory with no store access; values are decrypted only by bound_for(), per call.
//
// Last use. mark_used() only stores a time in memory (an atomic in the secret's entry; no I/O);
// flush_usage() writes the times that changed since the last flush in one transaction. The daemon's
// idle loop calls flush_usage() once a second and once at shutdown; list() shows the in-memory times.
//
// Threads. Every method may be called from any thread. Readers (bound_for, has_binding_for_host,
// placeholders_for, list, mark_used) never wait for writers: they take a snapshot of the secrets
// (a shared_ptr copied under a tiny mutex) and work on it; set/remove (serialised among themselves)
// build a new map and publish it. Entries are shared between snapshots, so a last-use time marked on
// an old snapshot still counts.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "store/database.h"
#include "vault/binding.h"
#include "vault/secret_box.h"
#include "vault/secret_value.h"

namespace moat::vault {

struct SecretInfo {  // everything about a secret except its value
  std::string name;
  SecretBinding binding;
  std::string placeholder;
  int64_t created_ms = 0, updated_ms = 0, last_used_ms = 0;
};
Json secret_info_to_json(const SecretInfo& s);

// A secret bound to the (agent, host, port) being served, decrypted. The value lives in a
// SecretValue (sodium memory, wiped on destruction): keep the BoundSecret only while building the
// request. Copies made on the way out, and what becomes of them:
//   - the gateway's intercepted sessions swap placeholders in a std::string per header, wiped after
//     the request is rebuilt (egress/injection.h); a std::string that grows while swapping frees its
//     old buffer unwiped;
//   - the header then sits in Beast's request fields (gateway, base-URL routes) and in OpenSSL's
//     write buffer until the request is sent and freed: neither is wiped, because neither library
//     lets us own that memory. It lives for one request, in moatd, which is not dumpable and dumps
//     no core;
//   - moatd's own provider calls copy it into agent::Credential and the request head, both wiped
//     when the attempt ends (agent/providers/http_provider.cpp).
// A value on its way in (secret.set) passes through the API frame and its JSON, which are not wiped.
struct BoundSecret {
  std::string name;
  std::string placeholder;
  HeaderTemplate header;  // from the binding: name, prefix, suffix
  SecretValue value;

  // prefix + value + suffix: what goes after "<header.name>: " (also wiped on destruction).
  SecretValue header_value() const;
};

class Vault {
 public:
  // Opens the vault over `db` (migrated to schema 3 or later) with the key at `key_file`. The key is
  // created when absent, unless the store already holds secrets: those were sealed with the missing
  // key, and a fresh one would silently orphan them, so that is refused with how to recover.
  static Result<std::unique_ptr<Vault>> open(Database& db, const std::filesystem::path& key_file);

  struct SetResult {
    SecretInfo info;
    bool replaced = false;  // a secret of that name existed and was overwritten
  };
  // Validates everything (name, value, binding), seals with a fresh nonce, stores, and only then
  // updates memory. An existing secret of the same name is replaced (created time and last use kept).
  // Conflict when another secret already puts a placeholder in the same env var for an agent both serve.
  Result<SetResult> set(std::string_view name, std::string_view value, SecretBinding binding);
  // NotFound: "no secret named 'x'; see 'moat secret ls'".
  Status remove(std::string_view name);
  // What opening the vault changed in stored bindings, one sentence each (moatd logs and audits them).
  const std::vector<std::string>& migrations() const { return migrations_; }
  // Grows with every change of the secrets (set, remove): the gateway re-checks credentials held by
  // open connections when it moves.
  uint64_t revision() const { return revision_.load(std::memory_order_acquire); }
  // All secrets by name; never values.
  Result<std::vector<SecretInfo>> list() const;
  Result<SecretInfo> get(std::string_view name) const;

  // The secrets bound to (agent, host, port), decrypted, by name. `host` is the host the client asked
  // for (name or canonical IP literal). A secret that matches but fails to open (wrong key, altered
  // row) fails the whole call with an error naming it: the caller refuses rather than half-injects.
  // Does not mark the secrets used: call mark_used() for the ones actually injected.
  Result<std::vector<BoundSecret>> bound_for(std::string_view agent, std::string_view host, uint16_t port) const;
  // Whether any secret is bound to (agent, host, port): the gateway intercepts TLS only then.
  bool has_binding_for_host(std::string_view agent, std::string_view host, uint16_t port) const;
  // env var -> placeholder for every secret bound to `agent` that names an env var, sorted by var.
  std::vector<std::pair<std::string, std::string>> placeholders_for(std::string_view agent) const;

  // The value of a channel secret (SecretUse::Channel), for moatd's own calls to a messaging platform.
  // NotFound when there is no such secret; InvalidInput when it is an egress secret (a token that the
  // gateway could inject into a sandbox's traffic must not double as a bot token). Does not mark it used.
  Result<SecretValue> channel_secret(std::string_view name) const;

  void mark_used(std::string_view name);
  // Writes last-use times changed since the previous flush; returns how many were written.
  Result<size_t> flush_usage();

  const std::filesystem::path& key_file() const { return key_file_; }

 private:
  struct Entry {
    SecretBinding binding;
    std::vector<HostPattern> patterns;
    HeaderTemplate header;
    std::string binding_json;  // as sealed and stored
    Sealed sealed;
    int64_t created_ms = 0, updated_ms = 0;
    std::atomic<int64_t> last_used_ms{0};
    std::atomic<bool> use_dirty{false};

    bool serves(std::string_view agent) const;
    bool matches(std::string_view agent, std::string_view host, uint16_t port) const;
  };
  using Entries = std::map<std::string, std::shared_ptr<Entry>, std::less<>>;

  Vault(Database& db, SecretKey key, std::filesystem::path key_file)
      : db_(db), key_(std::move(key)), key_file_(std::move(key_file)) {}
  Status load();
  Status migrate_bindings();
  std::vector<std::pair<std::string, std::vector<std::string>>> stale_bindings_;  // found by load()
  std::vector<std::string> migrations_;
  SecretInfo info_of(const std::string& name, const Entry& e) const;
  Result<SecretValue> open_entry(const std::string& name, const Entry& e) const;

  Database& db_;
  SecretKey key_;
  std::filesystem::path key_file_;
  std::shared_ptr<const Entries> snapshot() const;
  void publish(std::shared_ptr<const Entries> next);

  std::mutex write_mu_;             // serialises set/remove
  std::atomic<uint64_t> revision_{0};
  mutable std::mutex snapshot_mu_;  // guards the pointer below (held only to copy or swap it)
  std::shared_ptr<const Entries> entries_ = std::make_shared<Entries>();
};

}  // namespace moat::vault
