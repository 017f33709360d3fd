#pragma once
// The audit trail's signing key, its checkpointer, and its API verbs:
//   audit.verify {}        -> the chain (verify_chain), then the signed checkpoints of the store and
//                             of the [audit] sink file against this moatd's key (check_checkpoints):
//                             {ok, records, first_bad_seq, problem, checkpoints, last_checkpoint_seq,
//                              public_key, sink, sink_checkpoints, note}
//   audit.export {since}   -> progress frames {"data": line}: records and checkpoints (export_jsonl)
//   audit.key {}           -> {public_key}: the hex Ed25519 key checkpoints verify under
#include <filesystem>
#include <memory>

#include "api/server.h"
#include "audit/audit_log.h"
#include "audit/checkpointer.h"
#include "config/config.h"
#include "store/database.h"

namespace moat {

// Loads <state>/audit.key (a 32-byte Ed25519 seed, 0600, root only; made at first start; refused as
// the vault key is when it could have been swapped or shared: vault/private_file.h) and starts the
// checkpointer on `log` with the [audit] settings.
Result<std::unique_ptr<Checkpointer>> start_checkpointer(const Config& config, Database& db, AuditLog& log);

void register_audit_verbs(api::Server& server, Database& db, Checkpointer& checkpointer);

}  // namespace moat
