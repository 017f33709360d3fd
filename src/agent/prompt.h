#pragma once
// What the model is told before the conversation: the agent's own prompt (or a default describing
// its sandbox and tools), its memory file, and the summary of older turns.
#include <map>
#include <string>

#include "agent/agent_spec.h"
#include "router/envelope.h"

namespace moat::agent {

inline constexpr size_t kMemoryPromptCap = 16 * 1024;
inline constexpr const char* kMemoryFile = "/workspace/MEMORY.md";

std::string default_system_prompt(const AgentSpec& spec);
// spec.system_prompt (or the default) + "# Memory (/workspace/MEMORY.md)" + memory (capped at 16 KB)
// + the summary of earlier conversation, when there is one.
std::string build_system_prompt(const AgentSpec& spec, std::string_view memory, std::string_view summary);

// Where the turn put each staged attachment in the sandbox: staged path -> sandbox path, or the reason
// it could not (an attachment with no entry was not copied).
struct PlacedAttachment {
  std::string path;         // in the sandbox, when copied
  std::string unavailable;  // why not, otherwise
};
using PlacedAttachments = std::map<std::string, PlacedAttachment>;

// Where attachments go in the sandbox: /workspace/attachments/<the staged file's own name>.
inline constexpr const char* kAttachmentDir = "/workspace/attachments";

// The turn's envelopes as the text of one user message: who said what, each attachment with the path
// it has in the sandbox or why it is not there.
std::string envelopes_text(const std::vector<router::Envelope>& envelopes, const PlacedAttachments& placed = {});

// The one reply an agent without a model provider gives, saying how to configure one.
std::string no_provider_reply(const AgentSpec& spec);

}  // namespace moat::agent
