#include "agent/command_agent.h"

#include "agent/history.h"
#include "base/text.h"

namespace moat::agent {

namespace {

constexpr size_t kReplyLimit = 1 << 20;

std::string trim(std::string_view s) { return std::string(trim_space(s)); }

std::string tail(const std::string& s, size_t n) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

}  // namespace

Result<CommandTurn> run_command_agent(const AgentSpec& spec, const router::Turn& turn, Workbench& bench,
                                      const std::vector<std::string>& base_env, const std::string& summary,
                                      const std::vector<Message>& prior, const std::string& incoming) {
  std::string input;
  if (!summary.empty()) input += "[summary of earlier conversation]\n" + summary + "\n\n";
  input += transcript(prior);
  input += "[user]\n" + incoming + "\n";
  auto env = base_env;
  env.push_back("MOAT_AGENT=" + spec.name);
  env.push_back("MOAT_CHANNEL=" + turn.channel);
  env.push_back("MOAT_CHAT=" + turn.chat);
  auto r = bench.run(spec.command, input, spec.limits.max_wall, kReplyLimit, env);
  if (!r) return wrap(r.error(), fmt::format("running the command of agent '{}'", spec.name));
  if (r->timed_out)
    return fail(ErrorKind::Unavailable, "the command of agent '{}' did not finish within {} s and was killed", spec.name,
                spec.limits.max_wall.count() / 1000);
  if (r->exit_code != 0) {
    auto why = trim(r->err);
    return fail(ErrorKind::Unavailable, "the command of agent '{}' {}{}", spec.name,
                r->signal ? fmt::format("was killed by signal {}", r->signal) : fmt::format("exited with {}", r->exit_code),
                why.empty() ? std::string() : ": " + tail(why, 2000));
  }
  CommandTurn t;
  t.reply = trim(std::move(r->out));
  // Silence is a failure the owner should see (after the retries), not a turn that answered nothing.
  if (t.reply.empty()) {
    auto why = trim(r->err);
    return fail(ErrorKind::Unavailable, "the command of agent '{}' exited 0 but printed no reply{}", spec.name,
                why.empty() ? std::string() : "; its stderr: " + tail(why, 2000));
  }
  if (r->truncated) t.reply += fmt::format("\n[reply truncated: {} bytes not shown]", r->out_bytes - r->out.size());
  return t;
}

}  // namespace moat::agent
