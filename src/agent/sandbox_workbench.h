#pragma once
// The Workbench over a real sandbox: every command runs through moat-init (audited by the manager as
// an `exec` event), every file goes through moat-init's path work inside the sandbox. The sandbox
// is created from the agent's spec the first time it is needed; the manager starts it on demand.
#include <functional>
#include <mutex>

#include "agent/workbench.h"
#include "sandbox/manager.h"

namespace moat::agent {

class SandboxWorkbench : public Workbench {
 public:
  // What to create when `sandbox` does not exist (its name is forced to `sandbox`), asked at that
  // moment: a sandbox made after the agent was edited (the first, or again after `moat sandbox rm`,
  // even in the middle of a turn that began before the edit) has the agent's settings as they are
  // then. Actions are attributed to "agent:<sandbox>".
  using CreateRequestFn = std::function<CreateRequest()>;
  SandboxWorkbench(SandboxManager& manager, std::string sandbox, CreateRequestFn create);

  Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view stdin_data,
                            std::chrono::milliseconds timeout, size_t output_limit,
                            const std::vector<std::string>& env = {}, const std::string& cwd = "/workspace") override;
  Result<std::string> read_file(const std::string& path, size_t max_size = 8 << 20) override;
  Status write_file(const std::string& path, std::string_view data) override;

 private:
  Status ensure_sandbox();

  SandboxManager& manager_;
  std::string sandbox_;
  std::string actor_;
  CreateRequestFn create_;
  std::mutex mu_;
  bool exists_ = false;
};

// The CreateRequest an agent's sandbox is made from (empty fields = the [sandbox] defaults).
struct AgentSpec;
CreateRequest sandbox_request_for(const AgentSpec& spec);

}  // namespace moat::agent
