#pragma once
// The API verbs of egress policy:
//   policy.show   {agent}                 -> PolicyBook::describe + today's usage
//   policy.allow  {agent, rule}           -> {agent, rule}   (stored; effective for the next connection)
//   policy.deny   {agent, rule}           -> {agent, rule}
//   policy.rm     {agent, action, rule}   -> {agent, removed}
//   policy.preset {agent, preset}         -> {agent, preset}
// Every change is audited (kind "policy.change"). An agent is, for now, a sandbox's name (or an
// [agents.NAME] table in moat.toml); an unknown one is refused.
#include <functional>

#include "api/server.h"
#include "audit/audit_log.h"
#include "egress/policy_book.h"
#include "egress/usage_meter.h"

namespace moat {

using AgentExists = std::function<bool(const std::string&)>;

void register_policy_verbs(api::Server& server, egress::PolicyBook& book, egress::UsageMeter& usage, AuditLog& audit,
                           AgentExists agent_exists);

}  // namespace moat
