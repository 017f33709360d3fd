// moat secret set|ls|rm
//
// A secret's value is read from stdin only — never from the command line, where it would land in
// shell history and in every process listing. On a terminal the prompt goes to stderr with echo off.
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "cli/cli.h"

namespace moat::cli {

namespace {

constexpr size_t kMaxValueBytes = 16384;  // the vault's limit; more is refused here without sending it

// Echo off on the terminal while the value is typed; restored on scope exit and on a fatal signal
// (Ctrl-C at the prompt must not leave the terminal silent).
class HiddenInput {
 public:
  explicit HiddenInput(int fd) : fd_(fd) {
    if (tcgetattr(fd, &saved_) != 0) return;
    termios quiet = saved_;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    active_fd_ = fd;
    active_saved_ = saved_;
    struct sigaction sa {};
    sa.sa_handler = restore_and_reraise;
    sa.sa_flags = SA_RESETHAND;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(sig, &sa, nullptr);
    active_ = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
  }
  ~HiddenInput() {
    if (active_) tcsetattr(fd_, TCSAFLUSH, &saved_);
    active_fd_ = -1;
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) signal(sig, SIG_DFL);
  }
  HiddenInput(const HiddenInput&) = delete;
  HiddenInput& operator=(const HiddenInput&) = delete;

 private:
  static void restore_and_reraise(int sig) {
    if (active_fd_ >= 0) tcsetattr(active_fd_, TCSANOW, &active_saved_);
    raise(sig);  // SA_RESETHAND: the default action now
  }
  static inline int active_fd_ = -1;
  static inline termios active_saved_{};
  int fd_;
  bool active_ = false;
  termios saved_{};
};

// Reads the value: one line from a terminal, or all of stdin otherwise (a file or a pipe may hold a
// value with a trailing newline: exactly one is dropped). Refuses an empty value.
Result<std::string> read_value(const std::string& name) {
  std::string value;
  value.reserve(kMaxValueBytes + 2);
  bool tty = isatty(STDIN_FILENO);
  {
    std::optional<HiddenInput> hidden;
    if (tty) {
      std::fprintf(stderr, "value for secret %s (input hidden): ", name.c_str());
      std::fflush(stderr);
      hidden.emplace(STDIN_FILENO);
    }
    char c;
    for (;;) {
      ssize_t n = ::read(STDIN_FILENO, &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(ErrorKind::Internal, "cannot read the secret value from stdin: {}", strerror(errno));
      if (n == 0) break;
      value.push_back(c);
      if (tty && c == '\n') break;
      if (value.size() > kMaxValueBytes + 2) {
        explicit_bzero(value.data(), value.size());
        return fail(ErrorKind::InvalidInput, "the secret value on stdin is larger than {} bytes", kMaxValueBytes);
      }
    }
  }
  if (!value.empty() && value.back() == '\n') {
    value.pop_back();
    if (!value.empty() && value.back() == '\r') value.pop_back();
  }
  if (value.empty())
    return fail(ErrorKind::InvalidInput,
                "no value for secret '{}' on stdin; pipe it in (e.g. moat secret set {} --host ... < keyfile) or type "
                "it at the prompt",
                name, name);
  return value;
}

void wipe(std::string& s) {
  explicit_bzero(s.data(), s.size());
  s.clear();
}

std::string join(const Json& list) {
  std::string out;
  for (auto& v : list) {
    if (!out.empty()) out += ",";
    out += v.get<std::string>();
  }
  return out;
}

}  // namespace

void add_secret_commands(CLI::App& app, Globals& g, int& rc) {
  auto* secret = app.add_subcommand(
      "secret",
      "manage credentials: stored encrypted on the host, injected by the egress gateway, never inside a sandbox");
  secret->require_subcommand(1);

  auto* set = secret->add_subcommand("set", "store a secret (the value is read from stdin, never from arguments)");
  struct SetOpts {
    std::string name, header = "Authorization: Bearer {}", env;
    std::vector<std::string> hosts, agents;
    bool channel = false;
  };
  auto so = std::make_shared<SetOpts>();
  set->add_option("name", so->name, "secret name: 1-64 of letters, digits, _ - . (e.g. ANTHROPIC_API_KEY)")->required();
  set->add_option("--host", so->hosts,
                  "destination it may be sent to (repeatable): api.example.com, *.example.com, host:port, an IP")
      ->allow_extra_args(false);  // one value per --host: a stray word must not become a host (it may be the value)
  set->add_option("--agent", so->agents, "agent (sandbox) that may use it (repeatable; default every agent)")
      ->allow_extra_args(false);
  set->add_option("--header", so->header,
                  "how it is sent: 'Name: template' with {} where the value goes (default 'Authorization: Bearer {}')");
  set->add_option("--env", so->env, "environment variable that holds the placeholder inside the sandbox");
  set->add_flag("--channel", so->channel,
                "a messaging channel's token (e.g. a Telegram bot token): used by moatd alone, never injected into "
                "any sandbox's traffic; takes no --host, --agent or --env");
  set->allow_extras();
  set->footer(
      "The value comes from stdin: typed at a hidden prompt on a terminal, or piped in; one trailing\n"
      "newline is dropped. Setting an existing name replaces its value and binding.\n\n"
      "Examples:\n"
      "  moat secret set ANTHROPIC_API_KEY --host api.anthropic.com --header 'x-api-key: {}' --env ANTHROPIC_API_KEY\n"
      "  printf %s \"$GH_TOKEN\" | moat secret set github --host api.github.com --agent coder\n"
      "  moat secret set telegram-bot --channel < bot-token   # [channels.telegram] token_secret\n");
  set->callback([&g, &rc, so, set] {
    // Anything left over is refused without being echoed: it may well be the value itself.
    for (auto& extra : set->remaining()) {
      if (extra.starts_with("-")) {
        rc = report(Error{ErrorKind::InvalidInput, fmt::format("unknown option '{}'; see 'moat secret set --help'", extra)});
        return;
      }
    }
    if (!set->remaining().empty()) {
      rc = report(Error{ErrorKind::InvalidInput,
                        "moat secret set takes the value on stdin, never as an argument (arguments end up in shell "
                        "history and process listings); e.g. moat secret set NAME --host HOST < file"});
      return;
    }
    if (!so->channel && so->hosts.empty()) {
      rc = report(Error{ErrorKind::InvalidInput,
                        "moat secret set needs at least one --host it may be sent to (e.g. --host api.anthropic.com), "
                        "or --channel for a messaging channel's token"});
      return;
    }
    auto value = read_value(so->name);
    if (!value) {
      rc = report(value.error());
      return;
    }
    Json args{{"name", so->name}, {"hosts", so->hosts}, {"header", so->header}, {"env", so->env}, {"value", *value}};
    if (!so->agents.empty()) args["agents"] = so->agents;
    if (so->channel) args["use"] = "channel";
    wipe(*value);
    auto r = call_or_report(g, "secret.set", std::move(args), rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    const Json& b = (*r)["binding"];
    if (b.value("use", "") == "channel") {
      std::printf("secret %s set: a channel token, used by moatd alone (never injected into a sandbox)\n",
                  (*r)["name"].get<std::string>().c_str());
      return;
    }
    std::string env = b["env"].get<std::string>();
    std::printf("secret %s set: sent as '%s' to %s for %s%s\n", (*r)["name"].get<std::string>().c_str(),
                b["header"].get<std::string>().c_str(), join(b["hosts"]).c_str(),
                join(b["agents"]) == "*" ? "every agent" : ("agents " + join(b["agents"])).c_str(),
                env.empty() ? "" : fmt::format("; ${} holds {}", env, (*r)["placeholder"].get<std::string>()).c_str());
  });

  auto* ls = secret->add_subcommand("ls", "list secrets: names, bindings and last use (never values)");
  ls->add_flag("--json", g.json, "print machine-readable JSON");
  ls->callback([&g, &rc] {
    auto r = call_or_report(g, "secret.ls", Json::object(), rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    std::vector<std::vector<std::string>> rows{{"NAME", "AGENTS", "HOSTS", "HEADER", "ENV", "LAST USED"}};
    for (auto& s : *r) {
      const Json& b = s["binding"];
      if (b.value("use", "") == "channel") {
        rows.push_back({s["name"], "-", "-", "(channel token: moatd only)", "-",
                        s["last_used_at_ms"].get<int64_t>() > 0 ? format_time_ago(s["last_used_at_ms"].get<int64_t>())
                                                                 : "never"});
        continue;
      }
      std::string env = b["env"].get<std::string>();
      rows.push_back({s["name"], join(b["agents"]), join(b["hosts"]), b["header"], env.empty() ? "-" : env,
                      s["last_used_at_ms"].get<int64_t>() > 0 ? format_time_ago(s["last_used_at_ms"].get<int64_t>())
                                                               : "never"});
    }
    print_table(rows);
  });

  auto* rm = secret->add_subcommand("rm", "remove a secret (its placeholder stops working at once)");
  auto rname = std::make_shared<std::string>();
  rm->add_option("name", *rname, "secret name")->required();
  rm->callback([&g, &rc, rname] {
    auto r = call_or_report(g, "secret.rm", Json{{"name", *rname}}, rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else std::printf("secret %s removed\n", rname->c_str());
  });

  // Set last: subcommands created after it would inherit it.
  secret->footer(
      "A secret is bound to agents and to destination hosts. Inside a sandbox an agent sees only its\n"
      "placeholder (moat-placeholder-NAME, e.g. in $ANTHROPIC_API_KEY with --env); the gateway puts the real\n"
      "value into the request header only on the way to a bound host, for a bound agent.\n");
}

}  // namespace moat::cli
