#include "agent/prompt.h"

#include <fmt/format.h>

namespace moat::agent {

std::string default_system_prompt(const AgentSpec& spec) {
  return fmt::format(
      "You are {0}, an AI assistant running in moat. You have your own Linux machine (a sandbox): it "
      "persists between conversations, you may install packages and run programs there, and /workspace is "
      "your home for work. Use the tools to act: bash runs shell commands; read_file, write_file, edit_file "
      "and list_files work with files; web_fetch reads a URL through the network gateway (only what your "
      "network policy allows is reachable); send_message sends a message now; remember saves a fact to your "
      "memory file, which you see at the start of every conversation. Be concise. When you are done, reply "
      "with the answer for the person you are talking to.",
      spec.name);
}

std::string build_system_prompt(const AgentSpec& spec, std::string_view memory, std::string_view summary) {
  std::string out = spec.system_prompt.empty() ? default_system_prompt(spec) : spec.system_prompt;
  out += "\n\n# Memory (/workspace/MEMORY.md)\n";
  if (memory.size() > kMemoryPromptCap) {
    size_t keep = kMemoryPromptCap;
    while (keep > 0 && (static_cast<unsigned char>(memory[keep]) & 0xC0) == 0x80) --keep;
    out.append(memory.substr(0, keep));
    out += fmt::format("\n[memory truncated: {} more bytes in /workspace/MEMORY.md]\n", memory.size() - keep);
  } else {
    out.append(memory);
  }
  if (!summary.empty()) {
    out += "\n\n# Earlier in this conversation (summary)\n";
    out.append(summary);
  }
  return out;
}

std::string envelopes_text(const std::vector<router::Envelope>& envelopes, const PlacedAttachments& placed) {
  std::string out;
  for (const auto& e : envelopes) {
    if (!out.empty()) out += "\n\n";
    const auto& who = e.sender_name.empty() ? e.sender : e.sender_name;
    out += fmt::format("{}: {}", who.empty() ? "someone" : who, e.text);
    for (const auto& a : e.attachments) {
      std::string where;
      if (auto it = placed.find(a.staged); !a.staged.empty() && it != placed.end())
        where = it->second.path.empty() ? fmt::format("not available: {}", it->second.unavailable)
                                        : fmt::format("saved at {}", it->second.path);
      else if (!a.unavailable.empty())
        where = fmt::format("not available: {}", a.unavailable);
      else
        where = a.url.empty() ? "not available" : a.url;
      out += fmt::format("\n[attachment: {} ({}, {} bytes) {}]", a.name, a.mime.empty() ? "unknown type" : a.mime,
                         a.size, where);
    }
  }
  return out;
}

std::string no_provider_reply(const AgentSpec& spec) {
  return fmt::format(
      "No model provider is configured for agent '{0}'. Set one with: moat secret set anthropic-api-key --host "
      "api.anthropic.com --agent {0} --header 'x-api-key: {{}}'  (or OPENAI_API_KEY / a local Ollama), then "
      "`moat agent edit {0} --provider anthropic`.",
      spec.name);
}

}  // namespace moat::agent
