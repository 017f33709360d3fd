#include "sandbox/oci/runtime.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "base/fs.h"
#include "base/json.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/text.h"
#include "base/unique_fd.h"

namespace moat::oci {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Verbs other than create are quick bookkeeping; a runtime that hangs must not hang moatd with it.
constexpr std::chrono::milliseconds kVerbTimeout{60'000};
constexpr size_t kMaxQuoted = 1500;
constexpr long kCgroup2Magic = 0x63677270;

std::string trim(std::string_view s) { return std::string(trim_space(s)); }

std::string cap_length(std::string s) {
  if (s.size() > kMaxQuoted) s = "..." + s.substr(s.size() - kMaxQuoted);
  return s;
}

// runc and crun print logrus lines (time="..." level=error msg="container does not exist"); keep
// just the message so our error reads as one sentence.
std::string message_from_stderr(std::string_view raw) {
  std::string out;
  std::istringstream in{std::string(raw)};
  std::string line;
  while (std::getline(in, line)) {
    std::string msg = line;
    auto at = line.find(" msg=\"");
    if (at != std::string::npos) {
      msg.clear();
      for (size_t i = at + 6; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) ++i;
        msg += line[i];
      }
    }
    msg = trim(msg);
    if (msg.empty()) continue;
    if (!out.empty()) out += "; ";
    out += msg;
  }
  return cap_length(out);
}

// The --log file with --log-format json: a sequence of objects (runsc writes them back to back,
// without newlines). Errors are what explain a failed create.
std::string message_from_json_log(const std::string& raw) {
  std::string out;
  std::istringstream in(raw);
  try {
    while ((in >> std::ws) && in.peek() != EOF) {
      Json entry;
      in >> entry;
      auto level = entry.value("level", std::string("error"));
      if (level != "error" && level != "fatal" && level != "panic") continue;
      auto msg = trim(entry.value("msg", std::string()));
      std::replace(msg.begin(), msg.end(), '\n', ' ');
      if (msg.empty()) continue;
      if (!out.empty()) out += "; ";
      out += msg;
    }
  } catch (const Json::exception&) {
    if (out.empty()) return message_from_stderr(raw);
  }
  return cap_length(out);
}

// runc repeats the verb ("runc create failed: ..."); our message already says it.
std::string strip_prefix(std::string msg, std::string_view prefix) {
  if (msg.starts_with(prefix)) msg.erase(0, prefix.size());
  return msg;
}

bool says_unknown_container(std::string_view msg) {
  return msg.find("does not exist") != std::string_view::npos ||       // runc; runsc "file does not exist"
         msg.find("No such file or directory") != std::string_view::npos;  // crun
}

ErrorKind kind_for(std::string_view verb, std::string_view msg) {
  if (verb != "create" && says_unknown_container(msg)) return ErrorKind::NotFound;
  if (msg.find("already exists") != std::string_view::npos || msg.find("id exists") != std::string_view::npos)
    return ErrorKind::Conflict;
  if (msg.find("not running") != std::string_view::npos || msg.find("cannot start") != std::string_view::npos)
    return ErrorKind::Conflict;
  return ErrorKind::Internal;
}

long elapsed_us(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - since).count();
}

// The container's own null device, <bundle>/null (the same device as /dev/null, another inode), for
// the stdio the caller leaves unset. runsc chowns the stdio it is given to its Sentry's uid: handed
// /dev/null, it gave the host's /dev/null to that uid (nobody, before moat set the Sentry's ids), who
// could then chmod it and break every program on the host. runc skips /dev/null; this is for both.
Result<UniqueFd> open_own_null(const fs::path& bundle) {
  auto path = bundle / "null";
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail(ErrorKind::Internal, "cannot replace {}: {}", path.string(), strerror(errno));
  if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0 || ::chmod(path.c_str(), 0666) != 0)
    return fail(ErrorKind::Internal, "cannot make the sandbox's null device {}: {}", path.string(), strerror(errno));
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd)
    return fail(ErrorKind::Internal,
                "cannot open the sandbox's null device {}: {} (the state directory's file system must allow device "
                "files: not mounted nodev)",
                path.string(), strerror(errno));
  return fd;
}

// The host ids the bundle maps to the container's 0: (first, count), from linux.uidMappings or
// linux.gidMappings.
Result<std::pair<uint64_t, uint64_t>> root_mapping(const Json& config, const char* key) {
  const Json* maps = nullptr;
  if (config.contains("linux") && config["linux"].contains(key)) maps = &config["linux"][key];
  if (maps && maps->is_array()) {
    for (const auto& m : *maps)
      if (m.value("containerID", uint64_t{1}) == 0) return std::pair{m.value("hostID", uint64_t{0}), m.value("size", uint64_t{0})};
  }
  return fail(ErrorKind::Internal, "the bundle maps no host id to the container's root ({})", key);
}

// The sandbox's own nobody, as whom runsc's Sentry runs on the host (see guest/host_idmap.h).
constexpr uint64_t kSentryIdInside = 65534;

}  // namespace

Result<RuntimeKind> parse_runtime(std::string_view name) {
  if (name == "runc") return RuntimeKind::Runc;
  if (name == "crun") return RuntimeKind::Crun;
  if (name == "runsc") return RuntimeKind::Runsc;
  return fail(ErrorKind::InvalidInput, "unknown runtime '{}'; choose one of: runc, crun, runsc", name);
}

std::string_view runtime_name(RuntimeKind kind) {
  switch (kind) {
    case RuntimeKind::Runc: return "runc";
    case RuntimeKind::Crun: return "crun";
    case RuntimeKind::Runsc: return "runsc";
  }
  return "unknown";
}

OciRuntime::OciRuntime(RuntimeKind kind, fs::path state_root, fs::path idmap_dir)
    : kind_(kind), state_root_(std::move(state_root)), idmap_dir_(std::move(idmap_dir)) {
  if (auto bin = find_program(std::string(runtime_name(kind)))) binary_ = *bin;
}

Status OciRuntime::require_binary() const {
  if (!binary_.empty()) return {};
  if (kind_ == RuntimeKind::Runc)
    return fail(ErrorKind::Unavailable, "runtime 'runc' is not installed; run scripts/install-deps");
  return fail(ErrorKind::Unavailable,
              "runtime '{}' is not installed; run scripts/install-deps or choose --runtime runc", name());
}

Status OciRuntime::probe() const {
  if (auto s = require_binary(); !s) return s;
  if (kind_ == RuntimeKind::Crun) {
    // crun 1.x refuses a hybrid host (v1 hierarchies, plus controllers enabled in the v2 hierarchy
    // mounted at /sys/fs/cgroup/unified) at create time with "cgroups in hybrid mode not supported".
    // Say so up front instead of failing every sandbox.
    struct statfs st {};
    if (statfs("/sys/fs/cgroup", &st) == 0 && st.f_type != kCgroup2Magic) {
      struct statfs unified {};
      if (statfs("/sys/fs/cgroup/unified", &unified) == 0 && unified.f_type == kCgroup2Magic) {
        auto controllers = read_file("/sys/fs/cgroup/unified/cgroup.controllers");
        if (controllers && !trim(*controllers).empty())
          return fail(ErrorKind::Unavailable,
                      "runtime 'crun' cannot run sandboxes on this host: cgroups are in hybrid mode (v1 hierarchies "
                      "plus controllers '{}' in the v2 hierarchy at /sys/fs/cgroup/unified), which crun refuses; "
                      "choose --runtime runc (or runsc), or boot the host with cgroup v2 only",
                      trim(*controllers));
      }
    }
  }
  return {};
}

std::vector<std::string> OciRuntime::base_argv() const {
  std::vector<std::string> argv{binary_, "--root", state_root_.string()};
  if (kind_ == RuntimeKind::Runsc) {
    // --network=none: the sandbox gets loopback only (gVisor's own netstack, no host interface).
    // --host-uds=all: moat-init listens on, and the host connects to, unix sockets in a bind-mounted dir.
    // --oci-seccomp: without it runsc ignores linux.seccomp in config.json.
    // --overlay2=none: writes must land in our overlay (the persistent upper layer), not sandbox memory.
    // --platform=ptrace: works everywhere; the KVM platform hangs on some hosts.
    for (auto f : {"--network=none", "--host-uds=all", "--oci-seccomp", "--overlay2=none", "--platform=ptrace"})
      argv.emplace_back(f);
  }
  return argv;
}

Result<std::string> OciRuntime::run(std::string_view verb, const std::string& id,
                                    std::vector<std::string> args) const {
  if (auto s = require_binary(); !s) return std::unexpected(s.error());
  auto argv = base_argv();
  argv.emplace_back(verb);
  for (auto& a : args) argv.push_back(std::move(a));
  auto t0 = Clock::now();
  RunOptions opts;
  opts.timeout = kVerbTimeout;
  auto r = run_process(argv, opts);
  log::debug("{} {} {}: {} us", name(), verb, id, elapsed_us(t0));
  // "runc state of 'sbx-1'" / "runc list": which runtime, which verb, which container.
  std::string what = id.empty() ? fmt::format("{} {}", name(), verb) : fmt::format("{} {} of '{}'", name(), verb, id);
  if (!r) return wrap(r.error(), what);
  if (r->timed_out)
    return fail(ErrorKind::Internal, "{} did not finish within {} s and was killed", what, kVerbTimeout.count() / 1000);
  if (!r->ok()) {
    auto msg = message_from_stderr(r->err.empty() ? r->out : r->err);
    if (msg.empty()) msg = r->signal ? fmt::format("killed by signal {}", r->signal)
                                     : fmt::format("exit status {}", r->exit_code);
    msg = strip_prefix(msg, fmt::format("{} {} failed: ", name(), verb));
    return fail(kind_for(verb, msg), "{} failed: {}", what, msg);
  }
  return std::move(r->out);
}

Status OciRuntime::create(const std::string& id, const fs::path& bundle, const ContainerStdio& stdio) const {
  return launch("create", id, bundle, stdio);
}

Status OciRuntime::run_detached(const std::string& id, const fs::path& bundle, const ContainerStdio& stdio) const {
  return launch("run", id, bundle, stdio);
}

Status OciRuntime::launch(std::string_view verb, const std::string& id, const fs::path& bundle,
                          const ContainerStdio& stdio) const {
  if (auto s = require_binary(); !s) return s;
  if (auto s = make_dirs(state_root_, 0700); !s) return s;
  // The container inherits the runtime's stdio, so the runtime's own stderr cannot be a pipe we
  // read to the end: its diagnostics go to a log file in the bundle instead.
  fs::path log_path = bundle / fmt::format("{}.log", name());
  std::error_code ec;
  fs::remove(log_path, ec);
  auto argv = base_argv();
  argv.insert(argv.end(), {"--log", log_path.string(), "--log-format", "json", std::string(verb)});
  if (verb == "run") argv.emplace_back("--detach");
  argv.insert(argv.end(), {"--bundle", bundle.string(), "--pid-file", (bundle / "init.pid").string(), id});

  SpawnOptions opts;
  auto null = open_own_null(bundle);
  if (!null) return wrap(null.error(), fmt::format("{} {} {}", name(), verb, id));
  opts.stdin_fd = stdio.in >= 0 ? stdio.in : null->get();
  opts.stdout_fd = stdio.out >= 0 ? stdio.out : null->get();
  opts.stderr_fd = stdio.err >= 0 ? stdio.err : null->get();
  if (kind_ == RuntimeKind::Runsc) {
    // runsc runs its Sentry as host nobody (65534) when started by root, so any local nobody could
    // signal it. Started with real ids of the sandbox's own nobody and effective ids root, it maps the
    // Sentry to that real id instead, and maps the gofer through newuidmap/newgidmap, which moat-init
    // stands in for (guest/host_idmap.h: why, and what it allows).
    if (idmap_dir_.empty())
      return fail(ErrorKind::Internal, "runsc {} of '{}': no id-mapping helper directory was set up", verb, id);
    auto config_text = read_file(bundle / "config.json");
    if (!config_text) return std::unexpected(config_text.error());
    auto config = Json::parse(*config_text, nullptr, false);
    auto uids = root_mapping(config, "uidMappings");
    auto gids = root_mapping(config, "gidMappings");
    if (!uids || !gids) return std::unexpected(!uids ? uids.error() : gids.error());
    if (uids->second <= kSentryIdInside || gids->second <= kSentryIdInside)
      return fail(ErrorKind::Internal, "runsc needs the sandbox to map at least {} ids", kSentryIdInside + 1);
    auto sentry_uid = std::to_string(uids->first + kSentryIdInside), sentry_gid = std::to_string(gids->first + kSentryIdInside);
    // setpriv (util-linux, in every Debian): the real ids alone change; capabilities stay, since the
    // effective ids stay root. No supplementary groups: the gofer keeps the caller's.
    argv.insert(argv.begin(), {"setpriv", "--ruid", sentry_uid, "--euid", "0", "--rgid", sentry_gid, "--egid", "0",
                               "--clear-groups", "--"});
    const char* path = getenv("PATH");
    opts.env_extra["PATH"] = idmap_dir_.string() + ":" + (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
    opts.env_extra["MOAT_IDMAP_UID_RANGE"] = fmt::format("{}:{}", uids->first, uids->second);
    opts.env_extra["MOAT_IDMAP_GID_RANGE"] = fmt::format("{}:{}", gids->first, gids->second);
  }

  auto t0 = Clock::now();
  auto child = spawn_process(argv, opts);
  if (!child) return wrap(child.error(), fmt::format("{} {} {}", name(), verb, id));
  int status = child->wait();
  log::debug("{} {} {}: {} us", name(), verb, id, elapsed_us(t0));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};

  std::string msg;
  if (auto log = read_file(log_path)) msg = message_from_json_log(*log);
  if (msg.empty()) msg = describe_wait_status(status);
  auto kind = kind_for("create", msg);
  // A failed create leaves nothing behind: whatever state and cgroup the runtime made go too. Not
  // for a duplicate id, whose state belongs to the container that already has it.
  if (kind != ErrorKind::Conflict) {
    std::string cgroup_path;
    if (auto config = read_file(bundle / "config.json")) {
      auto j = Json::parse(*config, nullptr, false);
      if (!j.is_discarded()) cgroup_path = j.value("/linux/cgroupsPath"_json_pointer, std::string());
    }
    (void)remove(id, true, cgroup_path);
  }
  msg = strip_prefix(msg, fmt::format("{} {} failed: ", name(), verb));
  return fail(kind, "{} {} of '{}' failed: {}", name(), verb, id, msg);
}

Status OciRuntime::start(const std::string& id) const {
  auto r = run("start", id, {id});
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<ContainerState> OciRuntime::state(const std::string& id) const {
  auto r = run("state", id, {id});
  if (!r) return std::unexpected(r.error());
  auto j = Json::parse(*r, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(ErrorKind::Internal, "{} state of '{}' printed something that is not JSON: {}", name(), id,
                cap_length(trim(*r)));
  ContainerState st;
  st.status = j.value("status", std::string());
  st.pid = j.value("pid", 0);
  return st;
}

Status OciRuntime::kill(const std::string& id, int signal, bool all) const {
  std::vector<std::string> args;
  if (all) args.emplace_back("--all");
  args.push_back(id);
  args.push_back(std::to_string(signal));
  auto r = run("kill", id, std::move(args));
  if (!r) return std::unexpected(r.error());
  return {};
}

Status OciRuntime::remove(const std::string& id, bool force, std::string_view cgroup_path) const {
  std::vector<std::string> args;
  if (force) args.emplace_back("--force");
  args.push_back(id);
  auto r = run("delete", id, std::move(args));
  if (!cgroup_path.empty() && (r || r.error().kind == ErrorKind::NotFound)) {
    if (auto c = remove_empty_cgroup(cgroup_path); !c) return c;
  }
  if (!r) return std::unexpected(r.error());
  return {};
}

Status write_bundle_config(const fs::path& bundle, std::string_view config_json) {
  fs::path path = bundle / "config.json";
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd || fchmod(fd.get(), 0600) != 0) return fail(ErrorKind::Internal, "cannot write {}: {}", path.string(), strerror(errno));
  while (!config_json.empty()) {
    ssize_t n = write(fd.get(), config_json.data(), config_json.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return fail(errno == ENOSPC ? ErrorKind::ResourceLimit : ErrorKind::Internal, "cannot write {}: {}", path.string(),
                  strerror(errno));
    config_json.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Status remove_empty_cgroup(std::string_view cgroup_path) {
  if (!cgroup_path.starts_with('/') || cgroup_path.find("..") != std::string_view::npos || cgroup_path == "/")
    return fail(ErrorKind::InvalidInput, "cgroup path '{}' must be absolute, below the root, without '..'",
                cgroup_path);
  auto rel = cgroup_path.substr(1);
  std::vector<fs::path> candidates;
  struct statfs st {};
  if (statfs("/sys/fs/cgroup", &st) == 0 && st.f_type == kCgroup2Magic) {
    candidates.push_back(fs::path("/sys/fs/cgroup") / rel);
  } else {
    std::error_code ec;
    for (const auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) candidates.push_back(h.path() / rel);
  }
  for (const auto& dir : candidates) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT || errno == ENOTDIR) continue;
    return fail(errno == EBUSY ? ErrorKind::Conflict : ErrorKind::Internal, "cannot remove cgroup {}: {}",
                dir.string(), strerror(errno));
  }
  return {};
}

Result<std::map<std::string, ContainerState>> OciRuntime::list() const {
  auto r = run("list", "", {"--format", "json"});
  if (!r) return std::unexpected(r.error());
  auto j = Json::parse(*r, nullptr, false);
  // runc prints "null" when it knows no container.
  if (j.is_null()) return std::map<std::string, ContainerState>{};
  if (j.is_discarded() || !j.is_array())
    return fail(ErrorKind::Internal, "{} list printed something that is not a JSON array: {}", name(), cap_length(trim(*r)));
  std::map<std::string, ContainerState> out;
  for (const auto& c : j) {
    if (!c.is_object() || !c.contains("id") || !c["id"].is_string()) continue;
    ContainerState st;
    st.status = c.value("status", std::string());
    st.pid = c.value("pid", 0);
    out.emplace(c["id"].get<std::string>(), std::move(st));
  }
  return out;
}

}  // namespace moat::oci
