#include "sandbox/manager.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <map>
#include <optional>
#include <set>
#include <thread>

#include "base/fs.h"
#include "base/ids.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "config/limits.h"
#include "sandbox/id_ranges.h"
#include "sandbox/storage/id_shift.h"
#include "sandbox/storage/rootfs.h"
#include "sandbox/storage/volume.h"
#include "store/clock.h"

namespace moat {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kUidCount = kUidRangeSize;
static_assert(limit_range(Limit::DiskBytes).min >= kMinVolumeBytes, "the disk floor must be one the volume code accepts");
constexpr uint64_t kRunscPidsOverhead = 192;
constexpr uint64_t kRunscMemoryOverhead = 128ull << 20;
constexpr std::string_view kInitInside = "/.moat/init";
constexpr std::string_view kRunInside = "/run/moat";

int64_t now_ms() { return moat::clock::now_ms(); }

std::string container_of(const SandboxRecord& rec) { return container_id(rec.name, rec.id); }

// The record's I/O throttle, in the table's terms (the store keeps four plain columns).
IoThrottle<int64_t> io_of(const SandboxRecord& rec) {
  return {rec.io_read_bps, rec.io_write_bps, rec.io_read_iops, rec.io_write_iops};
}

// `j` with the record's I/O throttle added under the table's names (io_read_bps, ...).
Json with_io(Json j, const SandboxRecord& rec) {
  auto io = io_of(rec);
  for (const auto& f : io_fields<int64_t>()) j[std::string(limit_range(f.limit).name)] = io.*f.field;
  return j;
}

std::string cgroup_of(const SandboxRecord& rec) { return cgroup_path(container_of(rec)); }

Json hardening_to_json(const oci::Hardening& h) {
  return Json{{"user_namespace", h.user_namespace}, {"seccomp", h.seccomp},
              {"drop_capabilities", h.drop_capabilities}, {"no_new_privileges", h.no_new_privileges},
              {"mask_paths", h.mask_paths}};
}

oci::Hardening hardening_from_options(const std::string& options_json) {
  oci::Hardening h;
  Json j = Json::parse(options_json, nullptr, false);
  if (j.is_discarded() || !j.contains("hardening")) return h;
  auto& hj = j["hardening"];
  h.user_namespace = hj.value("user_namespace", true);
  h.seccomp = hj.value("seccomp", true);
  h.drop_capabilities = hj.value("drop_capabilities", true);
  h.no_new_privileges = hj.value("no_new_privileges", true);
  h.mask_paths = hj.value("mask_paths", true);
  return h;
}

bool is_mounted(const fs::path& p) {
  auto m = mounts_under(p);
  if (!m) return false;
  for (auto& mp : *m) {
    if (fs::path(mp) == p) return true;
  }
  return false;
}

}  // namespace

SandboxManager::SandboxManager(ManagerOptions opts, Database& db, AuditLog& audit, image::ImageStore& images)
    : opts_(std::move(opts)), db_(db), repo_(db), audit_(audit), images_(images) {
  for (auto kind : {oci::RuntimeKind::Runc, oci::RuntimeKind::Crun, oci::RuntimeKind::Runsc}) {
    std::string name(oci::runtime_name(kind));
    runtimes_.emplace(name, std::make_unique<oci::OciRuntime>(kind, opts_.state_dir / "runtime" / name, idmap_dir()));
  }
}

SandboxManager::~SandboxManager() = default;

void SandboxManager::audit(std::string_view kind, std::string_view actor, std::string_view subject, Json data) {
  auto r = audit_.append(std::string(kind), std::string(actor), std::string(subject), std::move(data));
  if (!r) log::error("audit append failed: {}", r.error().message);
}

// A sandbox's ids must be its own: nobody else on the host may hold one of them as a user, a group or a
// subordinate range (newuidmap would let them act as the sandbox's root), and a move between ranges
// must have finished. Read at every start: users come and go.
Status SandboxManager::check_id_range(const SandboxRecord& rec) const {
  Json options = Json::parse(rec.options_json, nullptr, false);
  if (options.is_object() && options.contains("migrating_from"))
    return fail(ErrorKind::Conflict,
                "sandbox '{}' was being moved to moat's id region when it was interrupted; finish with "
                "'moat sandbox migrate-ids {}'",
                rec.name, rec.name);
  auto ids = read_host_ids(opts_.etc_dir);
  if (!ids) return std::unexpected(ids.error());
  if (auto holder = foreign_holder(*ids, rec.uid_base, kUidCount)) {
    if (is_legacy_uid_base(rec.uid_base))
      return fail(ErrorKind::Conflict,
                  "sandbox '{}' runs as host ids {}-{}, and {} holds some of them (it could act as the sandbox's root); "
                  "move the sandbox into moat's own id region with 'moat sandbox migrate-ids {}'",
                  rec.name, rec.uid_base, rec.uid_base + kUidCount - 1, *holder, rec.name);
    return fail(ErrorKind::Conflict,
                "sandbox '{}' runs as host ids {}-{} in moat's own id region, and {} holds some of them (it could act "
                "as the sandbox's root); remove or move that entry",
                rec.name, rec.uid_base, rec.uid_base + kUidCount - 1, *holder);
  }
  return {};
}

Result<Json> SandboxManager::migrate_ids(std::string_view name, std::string_view actor,
                                         const std::function<void(std::string_view)>& progress) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  Json options = Json::parse(rec->options_json, nullptr, false);
  if (!options.is_object()) options = Json::object();
  int64_t from = options.value("migrating_from", int64_t{0});
  if (from == 0) {
    if (!is_legacy_uid_base(rec->uid_base))
      return Json{{"name", rec->name}, {"uid_base", rec->uid_base}, {"moved", false},
                  {"note", "already in moat's own id region; nothing to do"}};
    if (rec->state == "running")
      return fail(ErrorKind::Conflict, "sandbox '{}' is running; stop it first ('moat sandbox stop {}')", rec->name, rec->name);
    // The new range is taken before any file changes (the table's UNIQUE holds it), and the old one
    // is kept in the record until every file is moved: a crash in between is finished by a rerun.
    auto to = repo_.allocate_uid_base();
    if (!to) return std::unexpected(to.error());
    from = rec->uid_base;
    options["migrating_from"] = from;
    if (auto st = repo_.set_uid_base(rec->name, *to, options.dump()); !st) return std::unexpected(st.error());
    rec->uid_base = *to;
    audit("sandbox.migrate_ids.begin", actor, rec->name, Json{{"from", from}, {"to", *to}});
  }
  if (auto st = teardown(*rec); !st) return std::unexpected(st.error());
  auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec->name);
  // While files are re-owned nobody else may enter: the old range's holder (the reason for the move)
  // could otherwise swap a directory for a link between a chown and a chmod. Root only until the
  // sandbox's next start fences it for its new range.
  if (auto st = make_fenced_dir(paths.dir, 0, 0700); !st) return std::unexpected(st.error());
  if (progress) progress(fmt::format("moving sandbox '{}' from host ids {}-{} to {}-{}", rec->name, from,
                                     from + kUidCount - 1, rec->uid_base, rec->uid_base + kUidCount - 1));
  if (auto st = mount_volume(paths.disk, paths.volume); !st) return std::unexpected(st.error());
  auto moved = shift_ids(paths.volume, static_cast<uint32_t>(from), static_cast<uint32_t>(rec->uid_base), kUidCount,
                         [&](const IdShiftCount& n) {
                           if (progress) progress(fmt::format("{} files looked at, {} re-owned", n.seen, n.shifted));
                         });
  (void)unmount(paths.volume);
  if (!moved) return std::unexpected(moved.error());
  options.erase("migrating_from");
  if (auto st = repo_.set_uid_base(rec->name, rec->uid_base, options.dump()); !st) return std::unexpected(st.error());
  audit("sandbox.migrate_ids", actor, rec->name,
        Json{{"from", from}, {"to", rec->uid_base}, {"files", moved->seen}, {"reowned", moved->shifted}});
  return Json{{"name", rec->name}, {"uid_base", rec->uid_base}, {"from", from}, {"moved", true},
              {"files", moved->seen}, {"reowned", moved->shifted}};
}

Status SandboxManager::check_record_limits(const SandboxRecord& rec) {
  for (auto st : {check_limit(Limit::DiskBytes, rec.disk_bytes, "disk_bytes"),
                  check_limit(Limit::MemoryBytes, rec.memory_bytes, "memory_bytes"),
                  check_limit(Limit::Pids, rec.pids_limit, "pids"), check_limit(Limit::Cpus, rec.cpus, "cpus")})
    if (!st) return st;
  auto io = io_of(rec);
  for (const auto& f : io_fields<int64_t>())
    if (auto st = check_limit(f.limit, static_cast<double>(io.*f.field), limit_range(f.limit).name); !st) return st;
  return {};
}

Status SandboxManager::check_state_dir(const fs::path& state_dir) {
  // A sandbox's root is an unprivileged host user, and its runtime reaches the sandbox's files through
  // every directory above them: a parent it cannot pass through fails every start with runc's bare
  // "mount ... permission denied". Said before anything is made, once, naming the directory.
  std::error_code ec;
  auto real = fs::weakly_canonical(state_dir, ec);
  if (ec) return {};
  for (auto dir = real.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    struct stat st {};
    if (stat(dir.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH))
      return fail(ErrorKind::InvalidInput,
                  "sandboxes cannot reach the state directory {}: {} (mode {:04o}) may not be passed through by other "
                  "users, and a sandbox runs as one; allow it with 'chmod o+x {}' or choose a state directory elsewhere",
                  state_dir.string(), dir.string(), st.st_mode & 07777, dir.string());
    if (dir == dir.root_path()) break;
  }
  return {};
}

Status SandboxManager::prepare() {
  if (auto st = register_id_region(opts_.etc_dir); !st) return st;
  // 0711: sandboxes' mapped roots must traverse to their bind-mount sources, but may list nothing.
  for (auto dir : {opts_.state_dir, opts_.state_dir / "sandboxes", opts_.state_dir / "bin", opts_.state_dir / "runtime"}) {
    if (auto st = make_dirs(dir, 0711); !st) return st;
  }
  auto binary = read_file(opts_.init_binary);
  if (!binary) {
    return fail(ErrorKind::Unavailable, "moat-init binary not found at {}; build it with 'make build'",
                opts_.init_binary.string());
  }
  // Content-addressed name: running sandboxes keep the binary they started with.
  init_binary_installed_ = opts_.state_dir / "bin" / fmt::format("moat-init-{}", sha256_hex(*binary).substr(0, 16));
  if (!fs::exists(init_binary_installed_)) {
    if (auto st = write_file_atomic(init_binary_installed_, *binary, 0755); !st) return st;
  }
  // moat-init is also runsc's newuidmap/newgidmap (guest/host_idmap.h): root-only, first in runsc's PATH.
  if (auto st = make_dirs(idmap_dir(), 0700); !st) return st;
  for (auto name : {"newuidmap", "newgidmap"}) {
    auto link = idmap_dir() / name, next = idmap_dir() / fmt::format(".{}.new", name);
    std::error_code ec;
    fs::remove(next, ec);
    fs::create_symlink(init_binary_installed_, next, ec);
    if (!ec) fs::rename(next, link, ec);
    if (ec) return fail(ErrorKind::Internal, "cannot set up {}: {}", link.string(), ec.message());
  }
  return {};
}

Result<const oci::OciRuntime*> SandboxManager::runtime(std::string_view kind) {
  auto it = runtimes_.find(kind);
  if (it == runtimes_.end())
    return fail(ErrorKind::InvalidInput, "unknown runtime '{}': choose runc (default), runsc (gVisor) or crun", kind);
  return it->second.get();
}

std::shared_ptr<std::mutex> SandboxManager::lock_for(std::string_view name) {
  std::lock_guard g(locks_mu_);
  auto it = locks_.find(name);
  if (it == locks_.end()) it = locks_.emplace(std::string(name), std::make_shared<std::mutex>()).first;
  return it->second;
}

Result<SandboxRecord> SandboxManager::create(const CreateRequest& req, std::string_view actor) {
  if (auto st = validate_name("sandbox", req.name); !st) return std::unexpected(st.error());
  std::string runtime_name = req.runtime.empty() ? opts_.defaults.runtime : req.runtime;
  auto rt = runtime(runtime_name);
  if (!rt) return std::unexpected(rt.error());
  if (auto st = (*rt)->probe(); !st) return std::unexpected(st.error());
  std::string image_name = req.image.empty() ? opts_.defaults.image : req.image;
  auto image = images_.get(image_name);
  if (!image) return std::unexpected(image.error());

  auto lock = lock_for(req.name);
  std::lock_guard g(*lock);
  if (repo_.get(req.name)) {
    return fail(ErrorKind::Conflict, "a sandbox named '{}' already exists; pick another name or remove it first",
                req.name);
  }
  SandboxRecord rec;
  rec.name = req.name;
  rec.id = random_hex_id(8);
  rec.image = image->name;
  rec.image_digest = image->digest;
  rec.runtime = runtime_name;
  rec.state = "created";
  rec.disk_bytes = static_cast<int64_t>(req.disk_bytes.value_or(opts_.defaults.disk_bytes));
  rec.memory_bytes = static_cast<int64_t>(req.memory_bytes.value_or(opts_.defaults.memory_bytes));
  rec.pids_limit = static_cast<int64_t>(req.pids.value_or(opts_.defaults.pids));
  rec.cpus = req.cpus.value_or(opts_.defaults.cpus);
  auto io = io_or(req.io, opts_.defaults.io);
  rec.io_read_bps = static_cast<int64_t>(io.read_bps);
  rec.io_write_bps = static_cast<int64_t>(io.write_bps);
  rec.io_read_iops = static_cast<int64_t>(io.read_iops);
  rec.io_write_iops = static_cast<int64_t>(io.write_iops);
  rec.options_json = Json{{"hardening", hardening_to_json(req.hardening)}}.dump();
  rec.created_at_ms = now_ms();
  // The authoritative check (config/limits.h): no path creates a sandbox whose limits are off.
  if (auto st = check_record_limits(rec); !st) return std::unexpected(st.error());

  auto stored = repo_.insert(rec);
  if (!stored) return std::unexpected(stored.error());
  rec = *stored;

  // Everything below is rolled back if a later step fails: nothing half-created survives.
  auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec.name);
  auto rollback = [&](const Error& e) -> std::unexpected<Error> {
    (void)unmount(paths.volume);
    (void)remove_tree(paths.dir);
    (void)repo_.remove(rec.name);
    return std::unexpected(e);
  };
  if (fs::exists(paths.dir)) {
    // Left by a crash before reconcile ran; it holds nothing we know of.
    if (auto m = mounts_under(paths.dir); m && !m->empty())
      return rollback(Error{ErrorKind::Conflict, fmt::format("{} still has mounts; restart moatd to reconcile", paths.dir.string())});
    (void)remove_tree(paths.dir);
  }
  if (auto st = lay_out(rec, paths); !st) return rollback(st.error());
  audit("sandbox.create", actor, rec.name,
        with_io(Json{{"image", rec.image}, {"digest", rec.image_digest}, {"runtime", rec.runtime},
                     {"uid_base", rec.uid_base}, {"disk_bytes", rec.disk_bytes}, {"memory_bytes", rec.memory_bytes},
                     {"pids", rec.pids_limit}, {"cpus", rec.cpus}, {"hardening", hardening_to_json(req.hardening)}},
                rec));
  return rec;
}

Status SandboxManager::lay_out(const SandboxRecord& rec, const SandboxPaths& paths) {
  // root:<sandbox root gid> 0710 (see start): the sandbox's runtime must pass through to its mount
  // sources; no other host user may enter, so nothing below depends on its own mode for secrecy.
  if (auto st = make_fenced_dir(paths.dir, static_cast<gid_t>(rec.uid_base)); !st) return st;
  for (auto& d : {paths.volume, paths.lower, paths.rootfs, paths.bundle}) {
    if (auto st = make_dirs(d, 0711); !st) return st;
  }
  if (std::error_code ec; fs::exists(paths.disk, ec)) return {};
  // The disk is a copy of a per-size template; its layout becomes the sandbox's at its first start.
  return create_volume(paths.disk, static_cast<uint64_t>(rec.disk_bytes), opts_.state_dir / "volume-templates");
}

Status SandboxManager::write_bundle(const SandboxRecord& rec, const SandboxPaths& paths,
                                    const SandboxAttachment& attachment) {
  oci::SandboxSpec spec;
  spec.id = container_of(rec);
  spec.hostname = rec.name;
  spec.rootfs = paths.rootfs;
  spec.uid_base = static_cast<uint32_t>(rec.uid_base);
  spec.uid_count = kUidCount;
  spec.args = {std::string(kInitInside), "--listen", fmt::format("{}/init.sock", kRunInside), "--log",
               fmt::format("{}/init.log", kRunInside)};
  // Processes inside the sandbox may not drive moat-init; under gVisor the host's connections arrive
  // through the gofer and carry no peer pid, so the check cannot tell them apart there.
  if (rec.runtime != "runsc") spec.args.push_back("--host-peers-only");
  spec.args.insert(spec.args.end(), attachment.init_args.begin(), attachment.init_args.end());
  // moat-init's environment is every process's base environment (exec requests add to it).
  spec.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "container=moat"};
  spec.env.insert(spec.env.end(), attachment.env.begin(), attachment.env.end());
  spec.extra_mounts = {
      {std::string(kInitInside), init_binary_installed_.string(), "bind", {"ro", "nosuid", "nodev"}},
      {"/workspace", paths.workspace().string(), "bind", {"rw", "nosuid", "nodev"}},
      {std::string(kRunInside), paths.run_dir().string(), "bind", {"rw", "nosuid", "nodev", "noexec"}},
  };
  spec.extra_mounts.insert(spec.extra_mounts.end(), attachment.mounts.begin(), attachment.mounts.end());
  spec.limits.memory_bytes = static_cast<uint64_t>(rec.memory_bytes);
  spec.limits.pids = static_cast<uint64_t>(rec.pids_limit);
  if (rec.runtime == "runsc") {
    // gVisor's Sentry and gofer live in the sandbox's cgroup: their host threads count against pids
    // and their memory against the limit. Give them room so the agent still gets what it was promised.
    spec.limits.pids += kRunscPidsOverhead;
    spec.limits.memory_bytes += kRunscMemoryOverhead;
  }
  spec.limits.cpus = rec.cpus;
  // The loop device is read at every start: a restart may get another one.
  auto device = volume_device(paths.volume, paths.disk);
  if (!device) return std::unexpected(device.error());
  spec.limits.io_device = oci::BlockDevice{major(*device), minor(*device)};
  // Checked in range (positive) at this start by check_record_limits.
  spec.limits.io = {static_cast<uint64_t>(rec.io_read_bps), static_cast<uint64_t>(rec.io_write_bps),
                    static_cast<uint64_t>(rec.io_read_iops), static_cast<uint64_t>(rec.io_write_iops)};
  spec.hardening = hardening_from_options(rec.options_json);
  spec.cgroup_path = cgroup_of(rec);
  Json j = oci::make_runtime_spec(spec);
  return oci::write_bundle_config(paths.bundle, j.dump(2));
}

Status SandboxManager::wait_healthy(const SandboxRecord& rec, const SandboxPaths& paths) {
  InitClient client(paths.run_dir());
  auto deadline = std::chrono::steady_clock::now() + opts_.start_timeout;
  Error last{ErrorKind::Unavailable, "no answer"};
  auto delay = 1ms;
  for (int attempt = 0; std::chrono::steady_clock::now() < deadline; ++attempt) {
    auto st = client.health(1000ms);
    if (st) return {};
    last = st.error();
    std::this_thread::sleep_for(delay);
    // moat-init listens a few milliseconds after the runtime returns: look every millisecond at first
    // (a failed look is three system calls), then back off.
    if (attempt >= 50) delay = std::min(delay * 2, 50ms);
  }
  return fail(ErrorKind::Unavailable, "sandbox '{}' started but moat-init did not answer within {} ms: {}", rec.name,
              opts_.start_timeout.count(), last.message);
}

Status SandboxManager::start(std::string_view name, std::string_view actor) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  return start_locked(*rec, actor);
}

Status SandboxManager::start_locked(const SandboxRecord& rec, std::string_view actor) {
  auto rt = runtime(rec.runtime);
  if (!rt) return std::unexpected(rt.error());
  auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec.name);
  auto cid = container_of(rec);
  if (rec.state == "running") {
    auto st = (*rt)->state(cid);
    if (st && st->status == "running") {
      set_running(rec.name, true);
      return {};
    }
    // Recorded as running but the container is gone (it died): clean up, then start afresh.
    (void)teardown(rec);
  }
  auto t0 = std::chrono::steady_clock::now();
  auto image = images_.get(rec.image_digest);
  if (!image) return wrap(image.error(), fmt::format("sandbox '{}' uses image {}", rec.name, rec.image));

  auto fail_start = [&](const Error& e) -> Status {
    (void)teardown(rec);
    (void)repo_.update_state(rec.name, "stopped");
    audit("sandbox.start_failed", actor, rec.name, Json{{"error", e.message}});
    return wrap(e, fmt::format("cannot start sandbox '{}'", rec.name));
  };
  if (auto st = check_id_range(rec); !st) return fail_start(st.error());
  // A record made before limits were checked (pids 0, cpus -1: no limit at all) never starts unbounded.
  if (auto st = check_record_limits(rec); !st)
    return fail_start(Error{st.error().kind, fmt::format("{}; this sandbox was made with it by an older moat: remove it "
                                                         "('moat sandbox rm {}') and create it again with a value in range",
                                                         st.error().message, rec.name)});
  // The fence that keeps other host users out of everything below (disk, workspace, root, sockets):
  // root and the sandbox's own root group only. Applied at every start, so sandboxes made before the
  // fence existed get it too.
  if (auto st = make_fenced_dir(paths.dir, static_cast<gid_t>(rec.uid_base)); !st) return fail_start(st.error());
  if (!is_mounted(paths.volume)) {
    // A moatd killed during this sandbox's create may have left its record without its directories
    // or disk; it never ran, so finishing the lay-out loses nothing.
    if (std::error_code ec; rec.started_at_ms == 0 && !(fs::exists(paths.bundle, ec) && fs::exists(paths.disk, ec))) {
      log::warn("sandbox {}: its create was cut short (moatd stopped); finishing it", rec.name);
      if (auto st = lay_out(rec, paths); !st) return fail_start(st.error());
    }
    if (auto st = mount_volume(paths.disk, paths.volume); !st) return fail_start(st.error());
  }
  if (!is_mounted(paths.rootfs)) {
    if (auto st = mount_rootfs(images_.rootfs_path(*image), paths.volume, static_cast<uint32_t>(rec.uid_base),
                               kUidCount, paths.lower, paths.rootfs);
        !st) {
      return fail_start(st.error());
    }
  }
  SandboxAttachment attachment;
  if (observer_) {
    auto a = observer_->attach(rec, images_.rootfs_path(*image));
    if (!a) return fail_start(a.error());
    attachment = std::move(*a);
  }
  if (auto st = write_bundle(rec, paths, attachment); !st) return fail_start(st.error());
  // create + start in one runtime process: a runtime invocation is tens of milliseconds.
  if (auto st = (*rt)->run_detached(cid, paths.bundle); !st) {
    // A stopped leftover with the same id (a crash between create and delete) blocks create: clear it once.
    if (!(*rt)->state(cid)) return fail_start(st.error());
    (void)(*rt)->remove(cid, true, cgroup_of(rec));
    if (auto again = (*rt)->run_detached(cid, paths.bundle); !again) return fail_start(again.error());
  }
  if (auto st = wait_healthy(rec, paths); !st) return fail_start(st.error());
  (void)repo_.mark_started(rec.name, now_ms());
  set_running(rec.name, true);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  audit("sandbox.start", actor, rec.name, Json{{"runtime", rec.runtime}, {"duration_ms", ms}});
  return {};
}

Status SandboxManager::teardown(const SandboxRecord& rec) {
  set_running(rec.name, false);
  auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec.name);
  auto cid = container_of(rec);
  std::optional<Error> first;
  if (auto rt = runtime(rec.runtime); rt) {
    if ((*rt)->state(cid)) {
      (void)(*rt)->kill(cid, SIGKILL, true);
      if (auto st = (*rt)->remove(cid, true, cgroup_of(rec)); !st && !first) first = st.error();
    }
  }
  if (observer_) observer_->detach(rec);
  if (auto st = unmount_rootfs(paths.lower, paths.rootfs); !st && !first) first = st.error();
  if (is_mounted(paths.volume)) {
    if (auto st = unmount(paths.volume); !st && !first) first = st.error();
  }
  if (first) return std::unexpected(*first);
  return {};
}

Status SandboxManager::stop(std::string_view name, std::string_view actor, std::string_view reason) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  return stop_locked(*rec, actor, reason);
}

Status SandboxManager::stop_locked(const SandboxRecord& rec, std::string_view actor, std::string_view reason) {
  auto rt = runtime(rec.runtime);
  if (!rt) return std::unexpected(rt.error());
  auto cid = container_of(rec);
  auto t0 = std::chrono::steady_clock::now();
  bool killed = false;
  auto st = (*rt)->state(cid);
  if (st && st->status == "running") {
    // moat-init forwards TERM to every process and exits when they are gone; KILL after the grace period.
    (void)(*rt)->kill(cid, SIGTERM, false);
    auto deadline = t0 + opts_.stop_grace;
    for (;;) {
      auto s = (*rt)->state(cid);
      if (!s || s->status != "running") break;
      if (std::chrono::steady_clock::now() >= deadline) {
        (void)(*rt)->kill(cid, SIGKILL, true);
        killed = true;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  auto td = teardown(rec);
  (void)repo_.update_state(rec.name, "stopped");
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  if (rec.state != "stopped" || st) {
    audit("sandbox.stop", actor, rec.name,
          Json{{"reason", reason}, {"killed_after_grace", killed}, {"duration_ms", ms}});
  }
  if (!td) return wrap(td.error(), fmt::format("sandbox '{}' stopped but cleanup failed", rec.name));
  return {};
}

Status SandboxManager::restart(std::string_view name, std::string_view actor) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  if (auto st = stop_locked(*rec, actor, "restart"); !st) return st;
  auto fresh = repo_.get(name);
  if (!fresh) return std::unexpected(fresh.error());
  return start_locked(*fresh, actor);
}

Status SandboxManager::reset(std::string_view name, bool wipe_workspace, std::string_view actor) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  bool was_running = rec->state == "running";
  if (auto st = stop_locked(*rec, actor, "reset"); !st) return st;
  auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec->name);
  if (auto st = mount_volume(paths.disk, paths.volume); !st) return st;
  auto st = reset_upper(paths.volume, static_cast<uint32_t>(rec->uid_base));
  if (st && wipe_workspace) {
    st = reset_directory(paths.workspace(), static_cast<uint32_t>(rec->uid_base));
  }
  (void)unmount(paths.volume);
  if (!st) return st;
  audit("sandbox.reset", actor, rec->name, Json{{"workspace_wiped", wipe_workspace}});
  if (was_running) {
    auto fresh = repo_.get(name);
    if (!fresh) return std::unexpected(fresh.error());
    return start_locked(*fresh, actor);
  }
  return {};
}

Status SandboxManager::remove(std::string_view name, bool force, std::string_view actor) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  if (rec->state == "running" && !force) {
    return fail(ErrorKind::Conflict, "sandbox '{}' is running; stop it first or use --force", rec->name);
  }
  if (rec->state == "running") {
    if (auto st = stop_locked(*rec, actor, "remove"); !st) return st;
  } else if (auto st = teardown(*rec); !st) {
    return st;
  }
  if (auto st = delete_data(*rec); !st) return st;
  {
    std::lock_guard a(activity_mu_);
    activity_.erase(rec->name);
  }
  audit("sandbox.remove", actor, rec->name, Json{{"forced", force}});
  return {};
}

Status SandboxManager::delete_data(const SandboxRecord& rec) {
  auto dir = SandboxPaths::for_sandbox(opts_.state_dir, rec.name).dir;
  if (auto m = mounts_under(dir); m && !m->empty())
    return fail(ErrorKind::Conflict, "sandbox '{}' still has mounts under {}; not removing its data", rec.name, dir.string());
  // Marked first: a moatd killed while the tree is half removed finishes the removal when it starts
  // again (reconcile), instead of leaving a record whose data is partly gone.
  if (auto st = repo_.update_state(rec.name, "removing"); !st) return st;
  if (auto st = remove_tree(dir); !st) return st;
  return repo_.remove(rec.name);
}

Result<std::vector<SandboxRecord>> SandboxManager::list() { return repo_.list(); }
Result<SandboxRecord> SandboxManager::get(std::string_view name) { return repo_.get(name); }

Result<Json> SandboxManager::inspect(std::string_view name) {
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec->name);
  Json j{{"name", rec->name},
         {"id", rec->id},
         {"image", rec->image},
         {"image_digest", rec->image_digest},
         {"runtime", rec->runtime},
         {"state", rec->state},
         {"uid_base", rec->uid_base},
         {"limits", with_io({{"disk_bytes", rec->disk_bytes}, {"memory_bytes", rec->memory_bytes},
                              {"pids", rec->pids_limit}, {"cpus", rec->cpus}},
                             *rec)},
         {"options", Json::parse(rec->options_json, nullptr, false)},
         {"created_at_ms", rec->created_at_ms},
         {"started_at_ms", rec->started_at_ms},
         {"last_used_at_ms", rec->last_used_at_ms},
         {"container_id", container_of(*rec)},
         {"paths", {{"dir", paths.dir.string()}, {"disk", paths.disk.string()}, {"rootfs", paths.rootfs.string()}}}};
  if (auto rt = runtime(rec->runtime); rt) {
    if (auto st = (*rt)->state(container_of(*rec)); st) {
      j["container"] = {{"status", st->status}, {"pid", st->pid}};
    }
  }
  // The sparse image's allocated blocks: what the sandbox's disk really costs the host.
  if (struct stat sb {}; ::stat(paths.disk.c_str(), &sb) == 0) j["disk_used_bytes"] = static_cast<int64_t>(sb.st_blocks) * 512;
  return j;
}

void SandboxManager::set_running(std::string_view name, bool running) {
  std::lock_guard g(activity_mu_);
  auto& a = activity_[std::string(name)];
  a.running = running;
  if (running) {
    a.last_used_ms = now_ms();
    a.dirty = true;
  }
}

Result<InitClient> SandboxManager::init_client(std::string_view name) {
  auto dir = SandboxPaths::for_sandbox(opts_.state_dir, std::string(name)).run_dir();
  {
    // Fast path: a sandbox this moatd started or adopted is used without the store or the runtime.
    // If it died meanwhile, connecting fails and open_exec comes back through the slow path.
    std::lock_guard g(activity_mu_);
    auto it = activity_.find(name);
    if (it != activity_.end() && it->second.running) {
      it->second.last_used_ms = now_ms();
      it->second.dirty = true;
      return InitClient(dir);
    }
  }
  // Slow path: start_locked keeps a container the runtime reports running (a slow moat-init is not
  // a dead one) and starts a stopped or dead sandbox afresh.
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec) return std::unexpected(rec.error());
  if (auto st = start_locked(*rec, "daemon"); !st) return std::unexpected(st.error());
  return InitClient(dir);
}

template <class T>
Result<T> SandboxManager::with_client(std::string_view name, const std::function<Result<T>(const InitClient&)>& fn) {
  auto client = init_client(name);
  if (!client) return std::unexpected(client.error());
  auto r = fn(*client);
  if (!r && r.error().kind == ErrorKind::Unavailable) {
    // moat-init did not answer: the sandbox died behind our back. Start it again and retry once.
    set_running(name, false);
    client = init_client(name);
    if (!client) return std::unexpected(client.error());
    r = fn(*client);
  }
  return r;
}

void SandboxManager::begin_use(std::string_view name) {
  std::lock_guard g(activity_mu_);
  ++activity_[std::string(name)].active;
}

void SandboxManager::end_use(std::string_view name) {
  std::lock_guard g(activity_mu_);
  auto& a = activity_[std::string(name)];
  --a.active;
  a.last_used_ms = now_ms();
  a.dirty = true;
}

Result<ExecChannel> SandboxManager::open_exec(std::string_view name, const wire::ExecStart& req,
                                              std::string_view actor) {
  if (req.argv.empty()) return fail(ErrorKind::InvalidInput, "no command given: use 'moat exec NAME -- CMD...'");
  auto fd = with_client<UniqueFd>(name, [&](const InitClient& c) { return c.start_exec(req); });
  if (!fd) return wrap(fd.error(), fmt::format("cannot exec in sandbox '{}'", name));
  begin_use(name);
  return ExecChannel{std::string(name), std::move(*fd), std::chrono::steady_clock::now()};
}

bool SandboxManager::reap_if_died(std::string_view name, std::string_view actor) {
  auto lock = lock_for(name);
  std::lock_guard g(*lock);
  auto rec = repo_.get(name);
  if (!rec || rec->state != "running") return false;
  auto rt = runtime(rec->runtime);
  if (!rt) return false;
  // moat-init's connections close while the kernel is still killing the sandbox's processes, before
  // its init has exited: the runtime reports the container running for a moment longer.
  for (auto deadline = std::chrono::steady_clock::now() + 2s;;) {
    auto st = (*rt)->state(container_of(*rec));
    if (!st || st->status != "running") break;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  log::warn("sandbox {}: its container stopped while a command ran in it (killed from outside?); recorded as stopped",
            rec->name);
  (void)teardown(*rec);
  (void)repo_.update_state(rec->name, "stopped");
  audit("sandbox.stop", actor, rec->name, Json{{"reason", "died"}});
  return true;
}

void SandboxManager::finish_exec(ExecChannel& ch, const wire::ExecStart& req, const ExecRecord& rec,
                                 std::string_view actor) {
  end_use(ch.sandbox);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - ch.started).count();
  Json data{{"argv", req.argv},          {"cwd", req.cwd},
            {"uid", req.uid},            {"tty", req.tty},
            {"exit_code", rec.exit.exit_code}, {"signal", rec.exit.signal},
            {"timed_out", rec.exit.timed_out}, {"duration_ms", ms},
            {"stdout_bytes", rec.stdout_bytes}, {"stderr_bytes", rec.stderr_bytes}};
  if (rec.lost) data["connection_lost"] = true;
  audit("exec", actor, ch.sandbox, std::move(data));
}

Status SandboxManager::put_file(std::string_view name, const std::string& path, std::string_view data, uint32_t mode,
                                std::string_view actor) {
  auto st = with_client<bool>(name, [&](const InitClient& c) -> Result<bool> {
    if (auto put = c.put_file(path, data, mode); !put) return std::unexpected(put.error());
    return true;
  });
  audit("file.put", actor, name, Json{{"path", path}, {"bytes", data.size()}, {"ok", st.has_value()}});
  if (!st) return wrap(st.error(), fmt::format("copying into sandbox '{}'", name));
  return {};
}

Result<std::string> SandboxManager::get_file(std::string_view name, const std::string& path, std::string_view actor) {
  auto data = with_client<std::string>(name, [&](const InitClient& c) { return c.get_file(path); });
  audit("file.get", actor, name, Json{{"path", path}, {"bytes", data ? data->size() : 0}, {"ok", data.has_value()}});
  if (!data) return wrap(data.error(), fmt::format("copying out of sandbox '{}'", name));
  return data;
}

size_t SandboxManager::stop_idle() {
  // Last-use times live in memory (an exec must not wait for a store write); persist them here.
  std::vector<std::pair<std::string, int64_t>> to_persist;
  std::map<std::string, SandboxActivity, std::less<>> snapshot;
  {
    std::lock_guard g(activity_mu_);
    for (auto& [name, a] : activity_) {
      if (a.dirty) to_persist.emplace_back(name, a.last_used_ms);
      a.dirty = false;
    }
    snapshot = activity_;
  }
  for (auto& [name, ms] : to_persist) (void)repo_.touch(name, ms);
  if (opts_.idle_timeout.count() <= 0) return 0;
  auto all = repo_.list();
  if (!all) return 0;
  size_t stopped = 0;
  auto now = now_ms();
  auto idle_since = [&](const SandboxRecord& rec) {
    int64_t last = std::max(rec.last_used_at_ms, rec.started_at_ms);
    if (auto it = snapshot.find(rec.name); it != snapshot.end()) last = std::max(last, it->second.last_used_ms);
    return last;
  };
  for (auto& rec : *all) {
    if (rec.state != "running" || now - idle_since(rec) < opts_.idle_timeout.count()) continue;
    auto lock = lock_for(rec.name);
    std::unique_lock g(*lock, std::try_to_lock);
    if (!g.owns_lock()) continue;
    {
      std::lock_guard a(activity_mu_);
      auto& act = activity_[rec.name];
      if (act.active > 0 || now - act.last_used_ms < opts_.idle_timeout.count()) continue;
    }
    auto fresh = repo_.get(rec.name);
    if (!fresh || fresh->state != "running") continue;
    if (stop_locked(*fresh, "daemon", "idle")) ++stopped;
  }
  return stopped;
}

bool SandboxManager::image_in_use(const std::string& digest) {
  auto n = repo_.count_using_image(digest);
  return !n || *n > 0;  // when unsure, say yes: refusing an image rm is the safe mistake
}

void SandboxManager::finish_removal(const SandboxRecord& rec) {
  auto lock = lock_for(rec.name);
  std::lock_guard g(*lock);
  if (auto t = teardown(rec); !t) log::warn("reconcile: sandbox {}: {}", rec.name, t.error().message);
  if (auto st = delete_data(rec); !st) {
    log::warn("reconcile: the removal of sandbox {} stays unfinished: {}", rec.name, st.error().message);
    return;
  }
  audit("sandbox.remove", "daemon", rec.name, Json{{"reason", "finishing a removal cut short by a crash"}});
}

Status SandboxManager::reconcile() {
  auto all = repo_.list();
  if (!all) return std::unexpected(all.error());
  // One `list` per runtime instead of one `state` per sandbox: with a hundred sandboxes the per-call
  // cost of the runtime (~30 ms each for runc) dominated a restart.
  std::map<std::string, std::map<std::string, oci::ContainerState>, std::less<>> listed;
  for (auto& [name, rt] : runtimes_) {
    if (!rt->probe()) continue;
    if (auto l = rt->list()) listed.emplace(name, std::move(*l));
    else log::warn("reconcile: {}", l.error().message);
  }
  auto state_of = [&](const SandboxRecord& rec) -> std::optional<oci::ContainerState> {
    auto rt = listed.find(rec.runtime);
    if (rt == listed.end()) return std::nullopt;
    auto it = rt->second.find(container_of(rec));
    if (it == rt->second.end()) return std::nullopt;
    return it->second;
  };
  std::set<std::string> known, known_names;
  for (auto& rec : *all) {
    if (rec.state == "removing") {
      known_names.insert(rec.name);  // what finish_removal cannot remove stays, with its record
      finish_removal(rec);           // its container, if any, goes as an orphan below
      continue;
    }
    known.insert(container_of(rec));
    known_names.insert(rec.name);
    auto lock = lock_for(rec.name);
    std::lock_guard g(*lock);
    auto paths = SandboxPaths::for_sandbox(opts_.state_dir, rec.name);
    auto st = state_of(rec);
    bool adopted = false;
    if (st && st->status == "running" && InitClient(paths.run_dir()).health(1000ms)) {
      adopted = true;
      // A sandbox started by an older moatd gets the fence now, not at its next start; a range someone
      // else holds is said at once (the sandbox is left running: stopping it is the operator's call).
      if (auto f = make_fenced_dir(paths.dir, static_cast<gid_t>(rec.uid_base)); !f)
        log::warn("reconcile: sandbox {}: {}", rec.name, f.error().message);
      if (auto ids = check_id_range(rec); !ids) log::warn("reconcile: {}", ids.error().message);
      if (observer_) {
        // The container keeps its environment and mounts; the gateway only needs its socket back.
        if (auto a = observer_->attach(rec, images_.rootfs_path(rec.image_digest)); !a)
          log::warn("reconcile: sandbox {}: {}", rec.name, a.error().message);
      }
      if (rec.state != "running") (void)repo_.update_state(rec.name, "running");
      set_running(rec.name, true);
      audit("sandbox.adopt", "daemon", rec.name, Json{{"pid", st->pid}});
    }
    if (!adopted) {
      bool had_anything = rec.state == "running";
      if (auto m = mounts_under(paths.dir); m && !m->empty()) had_anything = true;
      if (auto t = teardown(rec); !t) log::warn("reconcile: cleaning up sandbox {}: {}", rec.name, t.error().message);
      if (rec.state == "running") (void)repo_.update_state(rec.name, "stopped");
      if (had_anything) audit("sandbox.teardown", "daemon", rec.name, Json{{"reason", "not running at daemon start"}});
    }
  }
  // Containers and directories nobody owns: left by a crash in the middle of create or remove.
  for (auto& [name, containers] : listed) {
    auto& rt = runtimes_.find(name)->second;
    for (auto& [id, state] : containers) {
      if (!id.starts_with(kContainerPrefix) || known.contains(id)) continue;
      (void)rt->kill(id, SIGKILL, true);
      (void)rt->remove(id, true, cgroup_path(id));
      audit("sandbox.teardown", "daemon", id, Json{{"reason", "orphaned container"}, {"runtime", name}});
    }
  }
  std::error_code ec;
  for (auto& entry : fs::directory_iterator(opts_.state_dir / "sandboxes", ec)) {
    auto name = entry.path().filename().string();
    if (known_names.contains(name)) continue;
    auto paths = SandboxPaths::for_sandbox(opts_.state_dir, name);
    (void)unmount_rootfs(paths.lower, paths.rootfs);
    if (is_mounted(paths.volume)) (void)unmount(paths.volume);
    if (auto m = mounts_under(paths.dir); m && !m->empty()) {
      log::warn("reconcile: {} still has mounts; leaving it", paths.dir.string());
      continue;
    }
    (void)remove_tree(paths.dir);
    audit("sandbox.teardown", "daemon", name, Json{{"reason", "orphaned directory"}});
  }
  return {};
}

}  // namespace moat
