#include "store/migrations.h"

#include "store/database.h"
#include "store/schema_agents.h"
#include "store/schema_router.h"

namespace moat {

namespace {

// Sandbox states are checked by SandboxRepo rather than a CHECK constraint, so that a later state
// does not need SQLite's table-rebuild dance.
constexpr std::string_view kSandboxes = R"sql(
CREATE TABLE sandboxes (
  name            TEXT    PRIMARY KEY NOT NULL,
  id              TEXT    NOT NULL UNIQUE,
  image           TEXT    NOT NULL,
  image_digest    TEXT    NOT NULL,
  runtime         TEXT    NOT NULL,
  state           TEXT    NOT NULL,
  uid_base        INTEGER NOT NULL UNIQUE,
  disk_bytes      INTEGER NOT NULL,
  memory_bytes    INTEGER NOT NULL,
  pids_limit      INTEGER NOT NULL,
  cpus            REAL    NOT NULL,
  options_json    TEXT    NOT NULL DEFAULT '{}',
  created_at_ms   INTEGER NOT NULL,
  started_at_ms   INTEGER NOT NULL DEFAULT 0,
  last_used_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sandboxes_by_image_digest ON sandboxes(image_digest);
)sql";

// The hash-chained audit log (src/audit). seq is the rowid and is assigned by AuditLog (last + 1),
// never by SQLite, because it is part of each record's hash. data holds canonical compact JSON.
constexpr std::string_view kAudit = R"sql(
CREATE TABLE audit (
  seq       INTEGER PRIMARY KEY NOT NULL,
  time_ns   INTEGER NOT NULL,
  kind      TEXT    NOT NULL,
  actor     TEXT    NOT NULL,
  subject   TEXT    NOT NULL,
  data      TEXT    NOT NULL,
  prev_hash TEXT    NOT NULL,
  hash      TEXT    NOT NULL
);
CREATE INDEX audit_by_time ON audit(time_ns);
)sql";

// Issue 3: the vault's secrets and the egress gateway's run-time state.
// secrets: the value exists only as crypto_secretbox output (nonce + ciphertext, key in its own file,
//   see src/vault); binding_json holds agents, host patterns, header template and env name.
// egress_rules / egress_policy: per-agent policy changes made at run time (`moat policy allow|deny`),
//   layered over moat.toml. egress_usage: bytes per agent per UTC day ("YYYY-MM-DD"), for the daily cap.
constexpr std::string_view kSecretsAndEgress = R"sql(
CREATE TABLE secrets (
  name            TEXT    PRIMARY KEY NOT NULL,
  nonce           BLOB    NOT NULL,
  ciphertext      BLOB    NOT NULL,
  binding_json    TEXT    NOT NULL,
  created_at_ms   INTEGER NOT NULL,
  updated_at_ms   INTEGER NOT NULL,
  last_used_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE egress_rules (
  agent         TEXT    NOT NULL,
  action        TEXT    NOT NULL,
  pattern       TEXT    NOT NULL,
  created_at_ms INTEGER NOT NULL,
  PRIMARY KEY (agent, action, pattern)
);
CREATE TABLE egress_policy (
  agent  TEXT PRIMARY KEY NOT NULL,
  preset TEXT NOT NULL
);
CREATE TABLE egress_usage (
  agent TEXT    NOT NULL,
  day   TEXT    NOT NULL,
  bytes INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (agent, day)
);
)sql";

// Issue 14: signed checkpoints of the audit chain (src/audit/checkpoint.h). Each is also appended to
// the configured sink outside the store; this copy is what `moat audit export` includes. Not part of
// the chain: a checkpoint signs the chain's head, it is not a record in it.
constexpr std::string_view kAuditCheckpoints = R"sql(
CREATE TABLE audit_checkpoints (
  id         INTEGER PRIMARY KEY NOT NULL,
  seq        INTEGER NOT NULL,
  head_hash  TEXT    NOT NULL,
  time_ns    INTEGER NOT NULL,
  public_key TEXT    NOT NULL,
  signature  TEXT    NOT NULL
);
CREATE INDEX audit_checkpoints_by_seq ON audit_checkpoints(seq);
)sql";

// The block I/O throttle of each sandbox (config/limits.h). A sandbox made before it gets the built-in
// defaults, kDefaultIoThrottle (256 MiB/s and 4096 IOPS each way); store_sandbox_repo_test checks that
// these literals are those defaults.
constexpr std::string_view kSandboxIo = R"sql(
ALTER TABLE sandboxes ADD COLUMN io_read_bps   INTEGER NOT NULL DEFAULT 268435456;
ALTER TABLE sandboxes ADD COLUMN io_write_bps  INTEGER NOT NULL DEFAULT 268435456;
ALTER TABLE sandboxes ADD COLUMN io_read_iops  INTEGER NOT NULL DEFAULT 4096;
ALTER TABLE sandboxes ADD COLUMN io_write_iops INTEGER NOT NULL DEFAULT 4096;
)sql";

constexpr Migration kMigrations[] = {
    {1, "create sandboxes", kSandboxes},
    {2, "create audit log", kAudit},
    {3, "create secrets and egress policy tables", kSecretsAndEgress},
    {4, "create router tables", schema::kRouter},
    {5, "create agents and conversation tables", schema::kAgents},
    {6, "create audit checkpoints", kAuditCheckpoints},
    {7, "add sandbox I/O limits", kSandboxIo},
    {8, "create channel cursors, keep platform message ids", schema::kChannelState},
    {9, "create reply previews", schema::kPreviews},
    {10, "create run-time channel configs", schema::kChannelConfigs},
};

}  // namespace

std::span<const Migration> builtin_migrations() { return kMigrations; }
int64_t latest_schema_version() { return kMigrations[std::size(kMigrations) - 1].version; }

Status apply_migrations(Database& db, std::span<const Migration> migrations) {
  int64_t known = 0;
  for (const auto& m : migrations) {
    if (m.version != known + 1)
      return fail(ErrorKind::Internal, "migration list is out of order: version {} follows {}", m.version, known);
    known = m.version;
  }
  auto refuse_newer = [&](int64_t current) {
    return fail(ErrorKind::Conflict,
                "the state directory was written by a newer moat (schema {}, this build knows {}); upgrade moat or "
                "use another --state-dir",
                current, known);
  };

  auto current = db.query_int64("PRAGMA user_version");
  if (!current) return wrap(current.error(), "reading the store's schema version");
  if (*current > known) return refuse_newer(*current);

  for (const auto& m : migrations) {
    if (m.version <= *current) continue;
    auto tx = Transaction::begin(db);
    if (!tx) return wrap(tx.error(), fmt::format("migrating the store to schema {} ({})", m.version, m.name));
    // Another process may have migrated between our read and our write lock: re-read under the lock.
    auto now = db.query_int64("PRAGMA user_version");
    if (!now) return wrap(now.error(), "reading the store's schema version");
    if (*now > known) return refuse_newer(*now);
    if (*now >= m.version) {
      *current = *now;
      continue;
    }
    if (auto s = db.exec(m.sql); !s)
      return wrap(s.error(), fmt::format("migrating the store to schema {} ({})", m.version, m.name));
    if (auto s = db.exec(fmt::format("PRAGMA user_version = {}", m.version)); !s)
      return wrap(s.error(), fmt::format("migrating the store to schema {} ({})", m.version, m.name));
    if (auto s = tx->commit(); !s)
      return wrap(s.error(), fmt::format("migrating the store to schema {} ({})", m.version, m.name));
    *current = m.version;
  }
  return {};
}

}  // namespace moat
