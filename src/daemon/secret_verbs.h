#pragma once
// The API verbs of the vault: secret.set, secret.ls, secret.rm. A secret's value arrives in
// secret.set and goes nowhere but the vault: it is never returned, logged or audited, and no error
// message quotes it. Audit records (kinds "secret.set", "secret.rm") carry the name and binding.
#include "api/server.h"
#include "audit/audit_log.h"
#include "vault/vault.h"

namespace moat {

//   secret.set {name, value, agents[], hosts[], header, env} -> SecretInfo JSON (no value)
//   secret.ls  {}                                             -> [SecretInfo JSON], by name
//   secret.rm  {name}                                         -> {name, removed: true}
// SecretInfo JSON: {name, binding: {agents, hosts, header, env}, placeholder, created_at_ms,
// updated_at_ms, last_used_at_ms}. The vault and audit log must outlive the server.
void register_secret_verbs(api::Server& server, vault::Vault& vault, AuditLog& audit);

}  // namespace moat
