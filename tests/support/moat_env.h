#pragma once
// A real moatd for integration tests: its own temp state directory, started as a subprocess from
// the build tree, driven through the real moat CLI. Nothing is mocked.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "base/subprocess.h"
#include "base/json.h"
#include "support/temp_dir.h"

namespace moat::testing {

struct CliResult {
  int code = -1;
  std::string out, err;
};

class MoatEnv {
 public:
  // Starts moatd on a fresh state directory with `config_toml` as its moat.toml, and imports the
  // busybox image as "tiny" (the default image name in tests is "tiny" unless the config says otherwise).
  explicit MoatEnv(std::string config_toml = "");
  ~MoatEnv();
  MoatEnv(const MoatEnv&) = delete;
  MoatEnv& operator=(const MoatEnv&) = delete;

  // Runs the moat CLI against this moatd.
  CliResult moat(std::vector<std::string> args, std::string stdin_data = {}, int timeout_s = 300) const;
  // Runs moat, expects exit 0, returns stdout (the test fails with the CLI's stderr otherwise).
  std::string ok(std::vector<std::string> args, std::string stdin_data = {}) const;

  void start_daemon();
  void kill_daemon(int sig);  // e.g. SIGKILL for crash tests; waits for it to die
  // Until moatd has exited by itself (a MOAT_CRASH_AT point); false if it still runs after `timeout`.
  bool wait_daemon_exit(std::chrono::milliseconds timeout);
  void stop_daemon();         // graceful
  pid_t daemon_pid() const { return daemon_pid_; }
  const std::filesystem::path& state_dir() const { return state_.path(); }
  std::filesystem::path db_path() const { return state_.path() / "moat.db"; }

  // "http://127.0.0.1:PORT" of the daemon's web chat and webhooks (from `moat daemon status`).
  std::string web_url() const;

  // Every audit record, parsed from `moat audit export` (JSON Lines), oldest first.
  std::vector<Json> audit_records() const;

  // Removes every sandbox (force) so the host is left clean.
  void remove_all_sandboxes();

 private:
  TempDir state_;
  pid_t daemon_pid_ = -1;
};

// The busybox image tarball (made once per test process) every MoatEnv imports as "tiny".
const std::filesystem::path& busybox_tarball();

// Mount points whose path contains `needle` (from /proc/self/mountinfo).
std::vector<std::string> mounts_containing(const std::string& needle);
// Loop devices backed by files whose path contains `needle`.
std::vector<std::string> loops_containing(const std::string& needle);
// The same, for asserting that none is left: a loop device detaches asynchronously after its last
// unmount (the kernel's autoclear), so this looks again for up to 2 s before answering.
std::vector<std::string> loops_left(const std::string& needle);
// cgroup directories (v1 controllers and unified) named under moat/ whose name contains `needle`.
std::vector<std::string> cgroups_containing(const std::string& needle);

// Pids of processes in a moat sandbox cgroup ("/moat/moat-<name>-<id>") whose name starts with `prefix`.
std::vector<int> sandbox_processes(const std::string& prefix);

// Skips the test with a clear message if the runtime cannot run here (e.g. crun on hybrid cgroups).
bool runtime_usable(const std::string& runtime, std::string* why);

}  // namespace moat::testing
