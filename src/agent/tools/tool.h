#pragma once
// One tool the model may call. A tool's own failures (no such file, ambiguous edit, refused fetch)
// are results the model reads and reacts to (is_error); only a broken sandbox connection is an
// Error, which fails the turn so the router retries it.
#include <memory>
#include <string>

#include "agent/agent_spec.h"
#include "agent/providers/provider.h"
#include "agent/workbench.h"
#include "router/turn.h"

namespace moat::agent {

// What a tool may touch while it runs: the agent's sandbox, and the turn's outgoing messages.
struct ToolContext {
  const AgentSpec& spec;
  const router::Turn& turn;
  Workbench& bench;
  router::TurnResult& result;  // send_message appends here
};

struct ToolOutput {
  std::string text;
  bool is_error = false;

  static ToolOutput ok(std::string t) { return {std::move(t), false}; }
  static ToolOutput error(std::string t) { return {std::move(t), true}; }
};

class Tool {
 public:
  virtual ~Tool() = default;
  virtual ToolSpec spec() const = 0;
  virtual Result<ToolOutput> call(const Json& input, ToolContext& ctx) const = 0;
};

// Turns a Workbench error into what the model should see, or into a turn failure when the sandbox
// itself is out of reach (Unavailable / Internal: retrying the turn is the honest answer).
Result<ToolOutput> bench_error(const Error& e, std::string_view doing);

// Input helpers: a missing or mistyped argument is a tool error naming it.
Result<std::string> string_arg(const Json& input, const char* key);
std::string string_arg_or(const Json& input, const char* key, std::string fallback);
// An integer argument clamped to [lo, hi]; absent = fallback.
int64_t int_arg_or(const Json& input, const char* key, int64_t fallback, int64_t lo, int64_t hi);
// Paths the model gives may be relative: they are relative to /workspace. Never resolved on the
// host; the sandbox does the path work.
std::string sandbox_path(const std::string& p);
// Caps text at `limit` bytes (on a UTF-8 boundary) and says how much was left out.
std::string cap_text(std::string text, size_t limit, uint64_t total_bytes = 0);

std::unique_ptr<Tool> make_bash_tool();
std::unique_ptr<Tool> make_read_file_tool();
std::unique_ptr<Tool> make_write_file_tool();
std::unique_ptr<Tool> make_edit_file_tool();
std::unique_ptr<Tool> make_list_files_tool();
std::unique_ptr<Tool> make_web_fetch_tool();
std::unique_ptr<Tool> make_send_message_tool();
std::unique_ptr<Tool> make_remember_tool();

}  // namespace moat::agent
