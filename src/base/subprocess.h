#pragma once
// Running host programs (runc, mmdebstrap, mkfs.ext4, losetup...). moat drives trusted engines
// through their CLIs, so this is the one place that forks and execs on the host side.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace moat {

struct RunOptions {
  std::optional<std::string> stdin_data;          // written to the child's stdin, then closed
  std::map<std::string, std::string> env_extra;   // added to (or overriding) the parent's env
  std::optional<std::string> cwd;
  std::chrono::milliseconds timeout{0};           // 0 = no timeout; on expiry the child is killed
  std::vector<int> inherit_fds;                   // extra fds kept open in the child (same numbers)
  // Called with each complete line of stdout as it arrives (progress output); output is still captured.
  std::function<void(std::string_view)> on_stdout_line;
  std::function<void(std::string_view)> on_stderr_line;
};

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
  bool ok() const { return exit_code == 0; }
};

// Runs argv[0] (looked up in PATH) to completion. Fails only when it could not be started;
// a non-zero exit is reported in RunResult.
Result<RunResult> run_process(const std::vector<std::string>& argv, const RunOptions& opts = {});

// Like run_process but a non-zero exit becomes an Error quoting the program's stderr.
Result<std::string> run_checked(const std::vector<std::string>& argv, const RunOptions& opts = {});

// Finds a program in PATH; NotFound names the program when absent.
Result<std::string> find_program(const std::string& name);

// A started child process that is killed (SIGKILL) and reaped when the owner drops it,
// unless it was waited for or released.
class ChildProcess {
 public:
  ChildProcess() = default;
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // Waits for exit; returns the raw wait status.
  int wait();
  pid_t release();

 private:
  pid_t pid_ = -1;
};

struct SpawnOptions {
  std::map<std::string, std::string> env_extra;
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;  // -1 = /dev/null
  std::vector<int> inherit_fds;
  bool new_session = false;
};

Result<ChildProcess> spawn_process(const std::vector<std::string>& argv, const SpawnOptions& opts = {});

// "Exited with status 3" / "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

}  // namespace moat
