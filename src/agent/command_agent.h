#pragma once
// A command agent's turn: its command runs inside its sandbox with the conversation on stdin as a
// plain-text transcript; its trimmed stdout is the reply. It reaches its own model through the
// gateway's base-URL routes with the placeholder keys its sandbox environment already carries.
#include "agent/agent_spec.h"
#include "agent/providers/provider.h"
#include "agent/workbench.h"
#include "router/turn.h"

namespace moat::agent {

struct CommandTurn {
  std::string reply;  // trimmed stdout; empty = nothing to say
};

// `prior` is the chat's earlier history (with the summary, if any, in front); `incoming` the
// turn's new message text. A non-zero exit is an error (Unavailable, so the router retries) quoting
// the tail of stderr.
Result<CommandTurn> run_command_agent(const AgentSpec& spec, const router::Turn& turn, Workbench& bench,
                                      const std::vector<std::string>& base_env, const std::string& summary,
                                      const std::vector<Message>& prior, const std::string& incoming);

}  // namespace moat::agent
