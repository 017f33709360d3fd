#pragma once
// The API verbs of agents, messages and chat:
//   agent.create {spec fields}        -> spec          agent.ls -> [spec + sandbox state]
//   agent.show {name}                 -> spec, sandbox, usage
//   agent.edit {name, changes}        -> spec          agent.rm {name, keep_sandbox} -> {name, removed}
//   agent.usage {name?}               -> [usage]
//   agent.webhook {name}              -> {url, token}: how other programs post to the agent
//   approve {code}                    -> what was approved (held messages queued)
//   messages {state?, agent?, limit?} -> [envelope + state]
//   chat.send {agent, text, user?}    -> progress frames {"event": kind, ...} then {"replies": [...]}
// Every change is audited (agent.create, agent.edit, agent.rm).
#include "agent/agent_runtime.h"
#include "api/server.h"
#include "audit/audit_log.h"
#include "daemon/agent_directory.h"
#include "daemon/terminal_channel.h"
#include "router/router.h"
#include "sandbox/manager.h"

namespace moat {

struct AgentVerbParts {
  AgentDirectory& agents;
  router::Router& router;
  agent::AgentRuntime& runtime;
  TerminalChannel& terminal;
  SandboxManager& sandboxes;
  AuditLog& audit;
  // {url, token} of the agent's webhook (the token is derived, never stored).
  std::function<Json(const std::string& agent)> webhook_info;
};

void register_agent_verbs(api::Server& server, AgentVerbParts parts);

}  // namespace moat
