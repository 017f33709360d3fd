// moat exec | shell | run: commands inside sandboxes, with streamed, binary-safe stdio.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>

#include "base/ids.h"
#include "cli/cli.h"
#include "cli/terminal.h"
#include "config/units.h"
#include "wire/frame.h"
#include "wire/messages.h"

namespace moat::cli {
namespace {

struct ExecOpts {
  std::string name;
  std::vector<std::string> command;
  std::vector<std::string> env;
  std::string cwd = "/";
  std::string user;
  std::string timeout;
  bool interactive = false, tty = false;
};

Result<std::pair<uint32_t, uint32_t>> parse_user(const std::string& user) {
  if (user.empty()) return std::pair<uint32_t, uint32_t>{0, 0};
  auto colon = user.find(':');
  try {
    uint32_t uid = static_cast<uint32_t>(std::stoul(user.substr(0, colon)));
    uint32_t gid = colon == std::string::npos ? uid : static_cast<uint32_t>(std::stoul(user.substr(colon + 1)));
    return std::pair{uid, gid};
  } catch (...) {
    return fail(ErrorKind::InvalidInput, "invalid --user '{}': use UID or UID:GID (numbers)", user);
  }
}

bool write_out(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(n);
  }
  return true;
}

int do_exec(const Globals& g, const ExecOpts& o) {
  auto user = parse_user(o.user);
  if (!user) return report(user.error());
  uint64_t timeout_ms = 0;
  if (!o.timeout.empty()) {
    auto t = parse_duration(o.timeout);
    if (!t) return report(t.error());
    timeout_ms = t->count();
  }
  unsigned short rows = 24, cols = 80;
  if (o.tty) terminal_size(STDIN_FILENO, rows, cols);
  Json args{{"name", o.name}, {"argv", o.command}, {"env", o.env}, {"cwd", o.cwd}, {"uid", user->first},
            {"gid", user->second}, {"tty", o.tty}, {"rows", rows}, {"cols", cols}, {"timeout_ms", timeout_ms}};
  if (o.tty) {
    const char* term = getenv("TERM");
    args["env"].insert(args["env"].begin(), fmt::format("TERM={}", term ? term : "xterm"));
  }
  auto client = api::Client::connect(g.socket_path());
  if (!client) return report(client.error());
  auto r = client->call("exec", args, [](const Json& p) {
    if (p.contains("line")) std::fprintf(stderr, "%s\n", p["line"].get<std::string>().c_str());
  });
  if (!r) return report(r.error());
  // Without -i, stdin is forwarded only when it is not a terminal (a pipe or a file).
  bool forward = o.interactive || o.tty || !isatty(STDIN_FILENO);
  return run_exec_stream(*client, forward, o.tty);
}

}  // namespace

int run_exec_stream(api::Client& client, bool forward_stdin, bool tty) {
  int sock = client.fd();
  std::optional<RawTerminal> raw;
  if (tty && isatty(STDIN_FILENO)) raw.emplace(STDIN_FILENO);
  // Signals become frames: window size changes, and interrupts forwarded to the command.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGWINCH);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  UniqueFd sigfd(signalfd(-1, &mask, SFD_CLOEXEC));
  if (!forward_stdin) (void)wire::write_frame(sock, wire::FrameType::StdinEof);

  wire::FrameDecoder decoder;
  bool stdin_open = forward_stdin;
  char buf[1 << 16];
  for (;;) {
    pollfd fds[3] = {{sock, POLLIN, 0}, {sigfd.get(), POLLIN, 0}, {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}};
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n > 0) {
        if (!wire::write_frame(sock, wire::FrameType::Stdin, std::string_view(buf, n))) break;
      } else if (n == 0 || errno != EINTR) {
        stdin_open = false;
        (void)wire::write_frame(sock, wire::FrameType::StdinEof);
      }
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si{};
      if (read(sigfd.get(), &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGWINCH) {
          wire::Resize rs;
          terminal_size(STDIN_FILENO, rs.rows, rs.cols);
          (void)wire::write_frame(sock, wire::FrameType::Resize, wire::encode(rs));
        } else {
          (void)wire::write_frame(sock, wire::FrameType::Signal, wire::encode(wire::SignalMsg{static_cast<int>(si.ssi_signo)}));
        }
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(sock, buf, sizeof buf);
      if (n <= 0) break;
      decoder.feed(std::string_view(buf, n));
      for (;;) {
        auto f = decoder.next();
        if (!f) {
          raw.reset();
          std::fprintf(stderr, "moat: garbled stream from moatd: %s\n", f.error().message.c_str());
          return 1;
        }
        if (!*f) break;
        auto& frame = **f;
        switch (frame.type) {
          case wire::FrameType::Stdout:
          case wire::FrameType::Stderr:
            // Whoever reads our output went away (`moat exec ... | head`): end as a local command
            // would, of SIGPIPE; closing the connection makes moatd kill the command's tree.
            if (!write_out(frame.type == wire::FrameType::Stdout ? STDOUT_FILENO : STDERR_FILENO, frame.payload)) {
              raw.reset();
              return 128 + SIGPIPE;
            }
            break;
          case wire::FrameType::Exit: {
            raw.reset();
            auto e = wire::decode<wire::ExecExit>(frame.payload);
            if (!e) return 1;
            if (e->timed_out) {
              std::fprintf(stderr, "moat: command timed out after %llums; its processes were killed\n",
                           static_cast<unsigned long long>(e->duration_ms));
              return 124;
            }
            return e->signal ? 128 + e->signal : e->exit_code;
          }
          case wire::FrameType::Error: {
            raw.reset();
            auto e = wire::decode<wire::ErrorMsg>(frame.payload);
            std::fprintf(stderr, "moat: %s\n", e ? e->message.c_str() : "exec failed");
            return 1;
          }
          default: break;
        }
      }
    }
  }
  raw.reset();
  std::fprintf(stderr, "moat: lost the connection to moatd before the command finished\n");
  return 1;
}

void add_exec_commands(CLI::App& app, Globals& g, int& rc) {
  auto* exec = app.add_subcommand("exec", "run a command in a sandbox (started if stopped): moat exec NAME -- CMD...");
  auto eo = std::make_shared<ExecOpts>();
  exec->add_option("name", eo->name, "sandbox name")->required();
  exec->add_option("command", eo->command, "command and arguments (after --)")->required();
  exec->add_option("--env,-e", eo->env, "environment variable K=V (repeatable; added to the sandbox's environment, replacing a variable of the same name)");
  exec->add_option("--cwd,-w", eo->cwd, "working directory inside the sandbox");
  exec->add_option("--user,-u", eo->user, "UID[:GID] inside the sandbox (default 0)");
  exec->add_option("--timeout", eo->timeout, "kill the command's whole process tree after this long (e.g. 30s)");
  exec->add_flag("--interactive,-i", eo->interactive, "forward stdin even when it is a terminal");
  exec->add_flag("--tty,-t", eo->tty, "allocate a pseudo-terminal");
  exec->callback([&g, &rc, eo] { rc = do_exec(g, *eo); });

  auto* shell = app.add_subcommand("shell", "open an interactive shell (PTY) in a sandbox");
  auto so = std::make_shared<ExecOpts>();
  shell->add_option("name", so->name, "sandbox name")->required();
  shell->callback([&g, &rc, so] {
    so->tty = true;
    so->interactive = true;
    so->cwd = "/workspace";
    so->command = {"/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi"};
    rc = do_exec(g, *so);
  });

  auto* run = app.add_subcommand("run", "one-shot: create a sandbox, run a command, and (with --rm) remove it");
  struct RunOpts {
    ExecOpts exec;
    std::string image, runtime, name;
    bool rm = false;
  };
  auto ro = std::make_shared<RunOpts>();
  run->add_option("command", ro->exec.command, "command and arguments (after --)")->required();
  run->add_option("--image", ro->image, "image (default from moat.toml)");
  run->add_option("--runtime", ro->runtime, "runc (default), runsc or crun");
  run->add_option("--name", ro->name, "sandbox name (default run-<random>)");
  run->add_flag("--rm", ro->rm, "remove the sandbox when the command ends");
  run->add_flag("--interactive,-i", ro->exec.interactive, "forward stdin even when it is a terminal");
  run->add_flag("--tty,-t", ro->exec.tty, "allocate a pseudo-terminal");
  run->add_option("--timeout", ro->exec.timeout, "kill the command after this long");
  run->callback([&g, &rc, ro] {
    std::string name = ro->name.empty() ? "run-" + random_hex_id(4) : ro->name;
    Json args{{"name", name}, {"start", true}};
    if (!ro->image.empty()) args["image"] = ro->image;
    if (!ro->runtime.empty()) args["runtime"] = ro->runtime;
    auto created = call_or_report(g, "sandbox.create", args, rc);
    if (!created) return;
    ro->exec.name = name;
    ro->exec.cwd = "/workspace";
    rc = do_exec(g, ro->exec);
    if (ro->rm) {
      if (auto r = call(g, "sandbox.rm", Json{{"name", name}, {"force", true}}); !r) report(r.error());
    } else if (!g.json) {
      std::fprintf(stderr, "moat: sandbox '%s' kept; remove it with 'moat sandbox rm -f %s'\n", name.c_str(), name.c_str());
    }
  });
}

}  // namespace moat::cli
