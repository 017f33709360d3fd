#include <signal.h>

#include <cstdio>
#include <cstdlib>

#include "cli/cli.h"
#include "config/config.h"

namespace moat::cli {

std::filesystem::path Globals::socket_path() const {
  if (!socket.empty()) return socket;
  if (const char* env = std::getenv("MOAT_SOCKET"); env && *env) return env;
  auto dir = resolve_state_dir(state_dir);
  // The config may move the socket; read it the way moatd does.
  if (auto cfg = load_config(dir); cfg) return cfg->socket_path();
  return dir / "moatd.sock";
}

int exit_code_for(const Error& e) {
  switch (e.kind) {
    case ErrorKind::InvalidInput: return 2;
    case ErrorKind::NotFound: return 3;
    case ErrorKind::Conflict: return 4;
    case ErrorKind::Unavailable: return 5;
    case ErrorKind::ResourceLimit: return 6;
    case ErrorKind::Internal: return 1;
  }
  return 1;
}

int report(const Error& e) {
  std::fprintf(stderr, "moat: %s\n", printable(e.message).c_str());
  return exit_code_for(e);
}

Result<Json> call(const Globals& g, std::string_view verb, Json args) {
  return api::call(g.socket_path(), verb, std::move(args), [](const Json& p) {
    if (p.contains("line")) std::fprintf(stderr, "%s\n", printable(p["line"].get<std::string>()).c_str());
  });
}

std::optional<Json> call_or_report(const Globals& g, std::string_view verb, Json args, int& rc) {
  auto r = call(g, verb, std::move(args));
  if (!r) {
    rc = report(r.error());
    return std::nullopt;
  }
  return std::move(*r);
}

}  // namespace moat::cli

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app{
      "moat: a secure runtime for fleets of AI agents. Each sandbox is a hardened, persistent machine\n"
      "(runc, gVisor or crun) with its own capped disk; this CLI talks to moatd over its unix socket.\n\n"
      "Exit codes: 0 ok, 1 internal error, 2 bad input, 3 not found, 4 conflict/in use,\n"
      "5 moatd or a runtime unavailable, 6 resource limit; exec/run/shell return the command's status."};
  app.require_subcommand(1);
  moat::cli::Globals g;
  int rc = 0;
  app.add_option("--state-dir", g.state_dir, "state directory (default $MOAT_STATE_DIR or /var/lib/moat)");
  app.add_option("--socket", g.socket, "moatd's socket (default <state-dir>/moatd.sock or $MOAT_SOCKET)");
  app.add_flag("--json", g.json, "print machine-readable JSON");
  moat::cli::add_sandbox_commands(app, g, rc);
  moat::cli::add_exec_commands(app, g, rc);
  moat::cli::add_image_commands(app, g, rc);
  moat::cli::add_audit_commands(app, g, rc);
  moat::cli::add_daemon_commands(app, g, rc);
  moat::cli::add_cp_command(app, g, rc);
  moat::cli::add_secret_commands(app, g, rc);
  moat::cli::add_policy_commands(app, g, rc);
  moat::cli::add_agent_commands(app, g, rc);
  moat::cli::add_channel_commands(app, g, rc);
  moat::cli::add_chat_command(app, g, rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return rc;
}
