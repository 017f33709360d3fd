#pragma once
// What the agent's tools may do in the agent's sandbox: run a command, read and write files. The path
// work happens inside the sandbox (through moat-init), so nothing the agent planted is ever followed
// on the host (invariant 1). SandboxWorkbench implements it over the SandboxManager; the sandbox is
// created on first use and started on demand.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace moat {
class SandboxManager;
}

namespace moat::agent {

struct CommandResult {
  int exit_code = -1;     // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  std::string out, err;   // each capped at the limit given; truncated says so
  bool truncated = false;
  uint64_t out_bytes = 0, err_bytes = 0;  // everything the command wrote, shown or not
};

class Workbench {
 public:
  virtual ~Workbench() = default;
  virtual Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view stdin_data,
                                    std::chrono::milliseconds timeout, size_t output_limit,
                                    const std::vector<std::string>& env = {}, const std::string& cwd = "/workspace") = 0;
  // NotFound when the file does not exist; ResourceLimit when it is larger than max_size.
  virtual Result<std::string> read_file(const std::string& path, size_t max_size = 8 << 20) = 0;
  virtual Status write_file(const std::string& path, std::string_view data) = 0;
};

}  // namespace moat::agent
