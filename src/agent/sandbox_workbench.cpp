#include "agent/sandbox_workbench.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/agent_spec.h"
#include "wire/frame.h"
#include "wire/messages.h"

namespace moat::agent {

namespace {

using wire::FrameType;
using Clock = std::chrono::steady_clock;

// moat-init enforces the timeout itself (it kills the whole tree and reports timed_out). This much
// longer host-side backstop only covers a moat-init that stops answering: closing the connection
// also kills the command.
constexpr std::chrono::seconds kBackstopSlack{30};

// Relays one exec: stdin out as frames, interleaved with reading output so neither side can stall
// the other; output past `limit` per stream is counted and dropped (the head is what a model can use).
Result<CommandResult> relay(int fd, std::string_view stdin_data, size_t limit, std::chrono::milliseconds timeout,
                            ExecRecord& rec) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  std::string out_q;
  size_t out_off = 0, stdin_off = 0;
  bool eof_queued = false, can_write = true;
  auto refill = [&] {
    while (out_q.size() - out_off < wire::kMaxChunk && !eof_queued) {
      if (stdin_off < stdin_data.size()) {
        size_t n = std::min(wire::kMaxChunk, stdin_data.size() - stdin_off);
        wire::append_frame(out_q, FrameType::Stdin, stdin_data.substr(stdin_off, n));
        stdin_off += n;
      } else {
        wire::append_frame(out_q, FrameType::StdinEof);
        eof_queued = true;
      }
    }
  };
  CommandResult res;
  wire::FrameDecoder dec;
  constexpr size_t kReadSize = 64 << 10;
  auto deadline = Clock::now() + timeout + kBackstopSlack;
  for (;;) {
    refill();
    pollfd p{fd, POLLIN, 0};
    if (can_write && out_off < out_q.size()) p.events |= POLLOUT;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      rec.lost = true;
      res.timed_out = true;
      res.exit_code = -1;
      res.err += "\n[moat-init did not end the command in time; the connection was closed, which kills it]";
      return res;
    }
    int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorKind::Internal, "poll: {}", strerror(errno));
    }
    if (r == 0) continue;
    if (p.revents & POLLOUT) {
      ssize_t n = ::send(fd, out_q.data() + out_off, out_q.size() - out_off, MSG_NOSIGNAL);
      if (n > 0) {
        out_off += static_cast<size_t>(n);
        if (out_off == out_q.size()) {
          out_q.clear();
          out_off = 0;
        }
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        can_write = false;  // the command ended without reading all its input; its answer follows
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(fd, dec.prepare(kReadSize), kReadSize);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        rec.lost = true;
        return fail(ErrorKind::Unavailable, "moat-init connection failed during exec: {}", strerror(errno));
      }
      if (n == 0) {
        rec.lost = true;
        return fail(ErrorKind::Unavailable, "moat-init closed the connection before the command finished");
      }
      dec.commit(static_cast<size_t>(n));
      for (;;) {
        auto f = dec.next_view();
        if (!f) return wrap(f.error(), "reading from moat-init");
        if (!*f) break;
        auto& fr = **f;
        if (fr.type == FrameType::Stdout || fr.type == FrameType::Stderr) {
          bool is_out = fr.type == FrameType::Stdout;
          std::string& dst = is_out ? res.out : res.err;
          (is_out ? rec.stdout_bytes : rec.stderr_bytes) += fr.payload.size();
          (is_out ? res.out_bytes : res.err_bytes) += fr.payload.size();
          size_t room = limit > dst.size() ? limit - dst.size() : 0;
          if (fr.payload.size() > room) res.truncated = true;
          dst.append(fr.payload.substr(0, std::min(room, fr.payload.size())));
        } else if (fr.type == FrameType::Exit) {
          auto x = wire::decode<wire::ExecExit>(fr.payload);
          if (!x) return std::unexpected(x.error());
          rec.exit = *x;
          res.exit_code = x->exit_code;
          res.signal = x->signal;
          res.timed_out = x->timed_out;
          return res;
        } else if (fr.type == FrameType::Error) {
          auto m = wire::decode<wire::ErrorMsg>(fr.payload);
          rec.lost = true;
          return fail(ErrorKind::Internal, "moat-init: {}", m ? m->message : "malformed error");
        } else {
          rec.lost = true;
          return fail(ErrorKind::Internal, "protocol error: unexpected {} from moat-init during exec",
                      wire::frame_type_name(fr.type));
        }
      }
    }
  }
}

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
  return r;
}

SandboxWorkbench::SandboxWorkbench(SandboxManager& manager, std::string sandbox, CreateRequest create)
    : manager_(manager), sandbox_(std::move(sandbox)), actor_("agent:" + sandbox_), create_(std::move(create)) {
  create_.name = sandbox_;
}

Status SandboxWorkbench::ensure_sandbox() {
  std::lock_guard g(mu_);
  if (exists_) return {};
  auto rec = manager_.get(sandbox_);
  if (!rec) {
    if (rec.error().kind != ErrorKind::NotFound) return std::unexpected(rec.error());
    auto made = manager_.create(create_, actor_);
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
  ExecRecord rec;
  auto res = relay(ch->fd.get(), stdin_data, output_limit, timeout, rec);
  manager_.finish_exec(*ch, req, rec, actor_);
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
