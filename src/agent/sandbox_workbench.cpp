#include "agent/sandbox_workbench.h"

#include "agent/agent_spec.h"
#include "wire/messages.h"

namespace moat::agent {

namespace {

using Clock = std::chrono::steady_clock;

// moat-init enforces the timeout itself (it kills the whole tree and reports timed_out). This much
// longer host-side backstop only covers a moat-init that stops answering: closing the connection
// also kills the command.
constexpr std::chrono::seconds kBackstopSlack{30};

// The parent of an absolute sandbox path ("/a/b" -> "/a"; "/a" -> "/").
std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

CreateRequest sandbox_request_for(const AgentSpec& spec) {
  CreateRequest r;
  r.name = spec.name;
  r.image = spec.image;
  r.runtime = spec.runtime;
  r.disk_bytes = spec.disk_bytes;
  r.memory_bytes = spec.memory_bytes;
  r.pids = spec.pids;
  r.cpus = spec.cpus;
  r.io = spec.io;
  return r;
}

SandboxWorkbench::SandboxWorkbench(SandboxManager& manager, std::string sandbox, CreateRequestFn create)
    : manager_(manager), sandbox_(std::move(sandbox)), actor_("agent:" + sandbox_), create_(std::move(create)) {}

Status SandboxWorkbench::ensure_sandbox() {
  std::lock_guard g(mu_);
  if (exists_) return {};
  auto rec = manager_.get(sandbox_);
  if (!rec) {
    if (rec.error().kind != ErrorKind::NotFound) return std::unexpected(rec.error());
    CreateRequest req = create_();
    req.name = sandbox_;
    auto made = manager_.create(req, actor_);
    // Someone else (the owner through the CLI, another turn) may have created it meanwhile: fine.
    if (!made && made.error().kind != ErrorKind::Conflict)
      return wrap(made.error(), fmt::format("creating the sandbox for agent '{}'", sandbox_));
  }
  exists_ = true;
  return {};
}

Result<CommandResult> SandboxWorkbench::run(const std::vector<std::string>& argv, std::string_view stdin_data,
                                            std::chrono::milliseconds timeout, size_t output_limit,
                                            const std::vector<std::string>& env, const std::string& cwd) {
  if (auto st = ensure_sandbox(); !st) return std::unexpected(st.error());
  wire::ExecStart req;
  req.argv = argv;
  req.env = env;
  req.cwd = cwd;
  req.timeout_ms = static_cast<uint64_t>(std::max<int64_t>(timeout.count(), 1));
  auto ch = manager_.open_exec(sandbox_, req, actor_);
  if (!ch) {
    // The sandbox may have been removed behind our back: create it again once.
    if (ch.error().kind == ErrorKind::NotFound) {
      {
        std::lock_guard g(mu_);
        exists_ = false;
      }
      if (auto st = ensure_sandbox(); !st) return std::unexpected(st.error());
      ch = manager_.open_exec(sandbox_, req, actor_);
    }
    if (!ch) return std::unexpected(ch.error());
  }
  ExecResult got;
  auto deadline = Clock::now() + timeout + kBackstopSlack;
  Status relayed = relay_exec(ch->fd.get(), stdin_data, output_limit, got, deadline);
  ExecRecord rec;
  rec.stdout_bytes = got.out_bytes;
  rec.stderr_bytes = got.err_bytes;
  rec.lost = !relayed;
  rec.exit = {got.exit_code, got.signal, got.timed_out, got.duration_ms};
  manager_.finish_exec(*ch, req, rec, actor_);
  const bool truncated = got.truncated();  // before the output is moved out
  CommandResult res{.exit_code = got.exit_code, .signal = got.signal, .timed_out = got.timed_out,
                    .out = std::move(got.out), .err = std::move(got.err), .truncated = truncated,
                    .out_bytes = got.out_bytes, .err_bytes = got.err_bytes};
  if (!relayed) {
    if (Clock::now() < deadline) return std::unexpected(relayed.error());
    res.exit_code = -1;
    res.timed_out = true;
    res.err += "\n[moat-init did not end the command in time; the connection was closed, which kills it]";
  }
  return res;
}

Result<std::string> SandboxWorkbench::read_file(const std::string& path, size_t max_size) {
  if (auto st = ensure_sandbox(); !st) return std::unexpected(st.error());
  // The client (not manager_.get_file) because it takes a size cap: an agent's 1 GiB file must not
  // land in moatd's memory because the model asked to read it.
  auto client = manager_.init_client(sandbox_);
  if (!client) return std::unexpected(client.error());
  auto data = client->get_file(path, max_size);
  if (data || data.error().kind != ErrorKind::Unavailable) return data;
  // moat-init did not answer (the sandbox died behind our back): the manager's own copy restarts
  // it and retries; the cap is then checked after the fact.
  data = manager_.get_file(sandbox_, path, actor_);
  if (data && data->size() > max_size)
    return fail(ErrorKind::ResourceLimit, "{} is {} bytes, over the {} byte limit", path, data->size(), max_size);
  return data;
}

Status SandboxWorkbench::write_file(const std::string& path, std::string_view data) {
  if (auto st = ensure_sandbox(); !st) return st;
  if (path.empty() || path[0] != '/') return fail(ErrorKind::InvalidInput, "path '{}' must be absolute", path);
  // moat-init wants the parent to exist; making it inside the sandbox keeps the path work there.
  auto parent = parent_of(path);
  if (parent != "/") {
    auto mk = run({"mkdir", "-p", "--", parent}, {}, std::chrono::seconds(30), 4096, {}, "/");
    if (!mk) return std::unexpected(mk.error());
    if (mk->exit_code != 0)
      return fail(ErrorKind::InvalidInput, "cannot create directory {}: {}", parent, mk->err.empty() ? mk->out : mk->err);
  }
  return manager_.put_file(sandbox_, path, data, 0644, actor_);
}

}  // namespace moat::agent
