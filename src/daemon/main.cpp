// moatd: owns every sandbox and serves the moat CLI on a unix socket.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "api/client.h"
#include "base/log.h"
#include "config/config.h"
#include "daemon/daemon.h"

namespace fs = std::filesystem;

namespace {

// moat-init is looked up next to moatd first (installed layout), then in the build tree.
fs::path find_init_binary(const std::string& flag) {
  if (!flag.empty()) return flag;
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && fs::exists(self.parent_path() / "moat-init")) return self.parent_path() / "moat-init";
  return MOAT_INIT_BINARY;
}

// Forks into the background; the parent returns only once the daemon answers on its socket (or failed),
// so `moatd --detach && moat ...` never races.
int detach(const moat::Config& cfg, const fs::path& log_path) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return 1;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid > 0) {
    close(pipefd[1]);
    char status = 1;
    if (read(pipefd[0], &status, 1) != 1) status = 1;
    if (status != 0) {
      std::fprintf(stderr, "moatd: failed to start; see %s\n", log_path.c_str());
      return 1;
    }
    std::printf("moatd started (log: %s, socket: %s)\n", log_path.c_str(), cfg.socket_path().c_str());
    std::exit(0);
  }
  close(pipefd[0]);
  setsid();
  int logfd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int nullfd = open("/dev/null", O_RDONLY);
  dup2(nullfd, 0);
  if (logfd >= 0) {
    dup2(logfd, 1);
    dup2(logfd, 2);
  }
  // Tell the parent once the socket answers.
  std::thread([fd = pipefd[1], sock = cfg.socket_path()] {
    for (int i = 0; i < 600; ++i) {
      if (moat::api::Client::connect(sock)) {
        char ok = 0;
        (void)!write(fd, &ok, 1);
        close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    close(fd);
  }).detach();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moatd: the moat daemon. Owns every sandbox, keeps the audit trail and serves the moat CLI\n"
               "on a unix socket in the state directory (mode 0600). Sandboxes keep running when moatd exits;\n"
               "the next moatd adopts them."};
  std::string state_dir_flag, config_flag, init_flag, etc_flag;
  bool verbose = false, detach_flag = false;
  app.add_option("--state-dir", state_dir_flag, "state directory (default $MOAT_STATE_DIR or /var/lib/moat)");
  app.add_option("--config", config_flag, "config file (default <state-dir>/moat.toml)");
  app.add_option("--init-binary", init_flag, "moat-init binary to mount into sandboxes (default: next to moatd)");
  app.add_option("--etc-dir", etc_flag,
                 "where passwd, group, subuid and subgid are read and moat's id region is registered (default /etc)");
  app.add_flag("--detach,-d", detach_flag, "run in the background, logging to <state-dir>/moatd.log");
  app.add_flag("--verbose,-v", verbose, "debug logging");
  CLI11_PARSE(app, argc, argv);

  if (geteuid() != 0) {
    std::fprintf(stderr, "moatd: must run as root (it mounts file systems and starts containers)\n");
    return 1;
  }
  // moatd holds the vault key, decrypted credentials and the webhook key in memory: it leaves no core
  // file (RLIMIT_CORE 0, and a non-dumpable process dumps none whatever the core_pattern), and its
  // /proc/<pid>/{mem,environ,maps,fd...} and ptrace need CAP_SYS_PTRACE in the host's namespace,
  // whatever the caller's uid. Set before anything secret is read; kept across the --detach fork;
  // programs moatd starts get dumpable back at exec (the kernel's rule), its clones keep it off.
  const rlimit no_core{0, 0};
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0) {
    std::fprintf(stderr, "moatd: cannot turn off core dumps: %s\n", std::strerror(errno));
    return 1;
  }
  auto state_dir = moat::resolve_state_dir(state_dir_flag);
  auto cfg = moat::load_config(state_dir, config_flag);
  if (!cfg) {
    std::fprintf(stderr, "moatd: %s\n", cfg.error().message.c_str());
    return 2;
  }
  if (!etc_flag.empty()) cfg->daemon.etc_dir = etc_flag;
  moat::log::init(verbose || cfg->daemon.log_level == "debug");
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (detach_flag && detach(*cfg, state_dir / "moatd.log") != 0) return 1;

  signal(SIGPIPE, SIG_IGN);
  // Sandboxes inherit their RLIMIT_NOFILE ceiling from us (runc sets rlimits inside the user
  // namespace, where it cannot raise them), and moatd holds an fd per open exec: raise ours.
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rlimit want{1 << 20, 1 << 20};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by every thread; one waits for them

  auto daemon = moat::Daemon::create(*cfg, find_init_binary(init_flag));
  if (!daemon) {
    moat::log::error("{}", daemon.error().message);
    return 1;
  }
  std::thread([&stop_signals, d = daemon->get()] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    moat::log::info("signal {}: stopping (sandboxes keep running)", sig);
    d->stop();
  }).detach();
  if (auto st = (*daemon)->run(); !st) {
    moat::log::error("{}", st.error().message);
    return 1;
  }
  return 0;
}
