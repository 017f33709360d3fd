// send_message: talk to the current chat mid-turn, or to another chat where the agent's spec
// allows (may_message globs). remember: one dated line appended to /workspace/MEMORY.md, which the
// next turn's system prompt carries.
#include <fnmatch.h>

#include <ctime>

#include "agent/tools/tool.h"

namespace moat::agent {

namespace {

class SendMessageTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"send_message",
            "Send a message now. Without 'to' it goes to the current chat (before your final reply). "
            "With to = \"channel:chat\" it goes to another chat, if your configuration allows that chat.",
            Json{{"type", "object"},
                 {"properties",
                  {{"text", {{"type", "string"}, {"description", "the message"}}},
                   {"to", {{"type", "string"}, {"description", "optional \"channel:chat\"; default the current chat"}}}}},
                 {"required", {"text"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto text = string_arg(input, "text");
    if (!text) return ToolOutput::error(text.error().message);
    if (text->empty()) return ToolOutput::error("the message is empty");
    auto to = string_arg_or(input, "to", "");
    std::string here = ctx.turn.channel + ":" + ctx.turn.chat;
    if (to.empty() || to == here) {
      ctx.result.replies.push_back(*text);
      return ToolOutput::ok("sent to the current chat");
    }
    auto colon = to.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == to.size())
      return ToolOutput::error(fmt::format("'{}' is not \"channel:chat\"", to));
    bool allowed = false;
    for (const auto& g : ctx.spec.may_message) allowed = allowed || fnmatch(g.c_str(), to.c_str(), 0) == 0;
    if (!allowed) {
      std::string list;
      for (const auto& g : ctx.spec.may_message) list += (list.empty() ? "" : ", ") + g;
      return ToolOutput::error(fmt::format("you may not message {}: your configuration allows only {} (may_message)",
                                           to, list.empty() ? "the current chat" : list));
    }
    ctx.result.elsewhere.push_back({to.substr(0, colon), to.substr(colon + 1), *text});
    return ToolOutput::ok(fmt::format("sent to {}", to));
  }
};

constexpr const char* kMemoryPath = "/workspace/MEMORY.md";

std::string today_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

class RememberTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"remember",
            "Save a fact worth keeping across conversations (preferences, decisions, where things are). "
            "It is appended with today's date to /workspace/MEMORY.md, which you see at the start of every turn.",
            Json{{"type", "object"},
                 {"properties", {{"note", {{"type", "string"}, {"description", "one short line"}}}}},
                 {"required", {"note"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto note = string_arg(input, "note");
    if (!note) return ToolOutput::error(note.error().message);
    std::string line = *note;
    for (auto& c : line)
      if (c == '\n' || c == '\r') c = ' ';
    auto current = ctx.bench.read_file(kMemoryPath);
    std::string text;
    if (current) text = std::move(*current);
    else if (current.error().kind != ErrorKind::NotFound) return bench_error(current.error(), "reading MEMORY.md");
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += fmt::format("- {}: {}\n", today_utc(), line);
    if (auto st = ctx.bench.write_file(kMemoryPath, text); !st) return bench_error(st.error(), "writing MEMORY.md");
    std::string msg = "remembered";
    if (text.size() > 16 * 1024)
      msg += fmt::format(" (MEMORY.md is now {} KB; only the first 16 KB reach your prompt, so condense it with write_file)",
                         text.size() / 1024);
    return ToolOutput::ok(msg);
  }
};

}  // namespace

std::unique_ptr<Tool> make_send_message_tool() { return std::make_unique<SendMessageTool>(); }
std::unique_ptr<Tool> make_remember_tool() { return std::make_unique<RememberTool>(); }

}  // namespace moat::agent
