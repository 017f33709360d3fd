// bash: a shell command in the agent's sandbox. The model sees stdout, then stderr, then how it
// ended; output past 30 KB is cut (the head is usually what matters) with a note saying how much.
#include "agent/tools/tool.h"

namespace moat::agent {

namespace {

constexpr size_t kOutputLimit = 30 * 1024;
constexpr int64_t kDefaultTimeoutS = 120, kMaxTimeoutS = 600;

class BashTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"bash",
            "Run a shell command (/bin/sh -c) in your sandbox, a persistent Linux machine; the working "
            "directory is /workspace. Returns stdout, stderr and the exit code. Output over 30 KB is "
            "truncated. The network is reachable only through the egress proxy, which the environment "
            "already points at.",
            Json{{"type", "object"},
                 {"properties",
                  {{"command", {{"type", "string"}, {"description", "the shell command to run"}}},
                   {"timeout_seconds",
                    {{"type", "integer"}, {"description", "kill the command after this long (default 120, max 600)"}}}}},
                 {"required", {"command"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto cmd = string_arg(input, "command");
    if (!cmd) return ToolOutput::error(cmd.error().message);
    auto secs = int_arg_or(input, "timeout_seconds", kDefaultTimeoutS, 1, kMaxTimeoutS);
    auto r = ctx.bench.run({"/bin/sh", "-c", *cmd}, {}, std::chrono::seconds(secs), kOutputLimit);
    if (!r) return bench_error(r.error(), "running the command");
    return format_result(*r, secs);
  }

 private:
  static ToolOutput format_result(const CommandResult& r, int64_t secs) {
    // One budget for both streams: stdout first, stderr gets what is left.
    std::string text = cap_text(r.out, kOutputLimit, r.out_bytes);
    if (!r.err.empty()) {
      size_t room = text.size() < kOutputLimit ? kOutputLimit - text.size() : 0;
      if (!text.empty() && text.back() != '\n') text += '\n';
      text += "[stderr]\n" + cap_text(r.err, room, r.err_bytes);
    }
    if (!text.empty() && text.back() != '\n') text += '\n';
    bool failed = true;
    if (r.timed_out) text += fmt::format("[timed out after {} s; the command and its children were killed]", secs);
    else if (r.signal) text += fmt::format("[killed by signal {}]", r.signal);
    else {
      text += fmt::format("[exit code: {}]", r.exit_code);
      failed = r.exit_code != 0;
    }
    return {std::move(text), failed};
  }
};

}  // namespace

std::unique_ptr<Tool> make_bash_tool() { return std::make_unique<BashTool>(); }

}  // namespace moat::agent
