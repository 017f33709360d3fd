#pragma once
// The sandbox manager owns every sandbox's lifecycle: create, start, stop, restart, reset, remove,
// exec, idle stop, and reconciling what it finds running when moatd starts. It knows images,
// storage, the OCI runtimes and moat-init; it knows nothing of agents, routers or channels.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "audit/audit_log.h"
#include "base/json.h"
#include "config/config.h"
#include "image/image_store.h"
#include "sandbox/init_client.h"
#include "sandbox/layout.h"
#include "sandbox/oci/runtime.h"
#include "sandbox/oci/spec.h"
#include "store/sandbox_repo.h"

namespace moat {

struct ManagerOptions {
  std::filesystem::path state_dir;
  std::filesystem::path init_binary;  // the built moat-init; copied into <state>/bin
  SandboxDefaults defaults;  // from moat.toml [sandbox]
  std::chrono::milliseconds stop_grace{10000};
  std::chrono::milliseconds idle_timeout{0};  // 0 = never
  std::chrono::milliseconds start_timeout{20000};
  // Where passwd, group, subuid and subgid live: moat registers its id region there and checks every
  // sandbox's range against what others hold (sandbox/id_ranges.h).
  std::filesystem::path etc_dir = "/etc";
};

struct CreateRequest {
  std::string name;
  std::string image;    // empty = default
  std::string runtime;  // empty = default
  std::optional<uint64_t> disk_bytes, memory_bytes, pids;
  std::optional<double> cpus;
  IoThrottle<std::optional<uint64_t>> io;  // unset fields take [sandbox]'s
  oci::Hardening hardening;  // explicit opt-outs only
  bool operator==(const CreateRequest&) const = default;
};

// An exec in flight: the connection to moat-init, for the caller to relay frames on.
struct ExecChannel {
  std::string sandbox;
  UniqueFd fd;
  std::chrono::steady_clock::time_point started;
};

struct ExecRecord {
  wire::ExecExit exit;
  uint64_t stdout_bytes = 0, stderr_bytes = 0;
  bool lost = false;  // the connection broke before Exit
  bool guest_gone = false;  // ...because moat-init's side closed (the sandbox may have died under it)
};

struct SandboxActivity {
  bool running = false;
  int active = 0;            // execs and file copies in flight
  int64_t last_used_ms = 0;  // wall clock, ms
  bool dirty = false;        // last_used_ms not yet written to the store
};

// What the egress side adds to each sandbox: the environment every process in it gets (proxy,
// CA bundle, credential placeholders) and host directories to mount (the gateway's socket, the CA).
// The daemon provides it; the manager knows nothing of the gateway.
struct SandboxAttachment {
  std::vector<std::string> env;        // "K=V"
  std::vector<oci::Mount> mounts;
  std::vector<std::string> init_args;  // added to moat-init's command line (e.g. --proxy-to PATH)
};

class SandboxObserver {
 public:
  virtual ~SandboxObserver() = default;
  // Before each start, and when moatd adopts a running sandbox; must be idempotent. A failure stops
  // the start: a sandbox never runs without its door to the gateway.
  virtual Result<SandboxAttachment> attach(const SandboxRecord& rec, const std::filesystem::path& image_root) = 0;
  // After the sandbox's container is gone (stop, failed start, remove, reconcile). Best effort.
  virtual void detach(const SandboxRecord& rec) = 0;
};

class SandboxManager {
 public:
  SandboxManager(ManagerOptions opts, Database& db, AuditLog& audit, image::ImageStore& images);
  ~SandboxManager();

  // Whether sandboxes (unprivileged host users) can pass through every directory down to `state_dir`;
  // an error names the one that stops them. Call before making anything there.
  static Status check_state_dir(const std::filesystem::path& state_dir);
  // Creates the state layout and installs moat-init; call once before anything else.
  Status prepare();
  // Set before reconcile(); the observer must outlive the manager's use of it.
  void set_observer(SandboxObserver* observer) { observer_ = observer; }
  // Adopts sandboxes still running from before and tears down everything half-made or orphaned.
  Status reconcile();

  Result<SandboxRecord> create(const CreateRequest& req, std::string_view actor);
  Status start(std::string_view name, std::string_view actor);
  Status stop(std::string_view name, std::string_view actor, std::string_view reason = "request");
  Status restart(std::string_view name, std::string_view actor);
  // Drops the writable layer (back to the image); /workspace is kept unless `wipe_workspace`.
  Status reset(std::string_view name, bool wipe_workspace, std::string_view actor);
  Status remove(std::string_view name, bool force, std::string_view actor);
  // Moves a stopped sandbox made before moat's id region into it: a new range, its disk's files
  // re-owned to match (with `progress` lines). Resumable: run again after a crash to finish.
  Result<Json> migrate_ids(std::string_view name, std::string_view actor,
                           const std::function<void(std::string_view)>& progress = {});

  Result<std::vector<SandboxRecord>> list();
  Result<SandboxRecord> get(std::string_view name);
  Result<Json> inspect(std::string_view name);

  // Starts the sandbox if it is stopped (idle stop is invisible to callers), then opens an exec.
  Result<ExecChannel> open_exec(std::string_view name, const wire::ExecStart& req, std::string_view actor);
  // Records the end of an exec opened by open_exec (audit event, idle accounting).
  void finish_exec(ExecChannel& ch, const wire::ExecStart& req, const ExecRecord& rec, std::string_view actor);
  // For an exec whose moat-init went away before the command's exit: if the sandbox's container has
  // stopped (killed from the host, out of memory), tears it down and records it stopped, so its state
  // is reported as it is and a start brings it back with its disk. True when the sandbox had died.
  bool reap_if_died(std::string_view name, std::string_view actor);
  Result<InitClient> init_client(std::string_view name);

  // Copies a file into / out of a sandbox. moat-init does the path work inside the sandbox, so a link
  // the agent planted resolves inside its own root, never on the host (invariant 1).
  Status put_file(std::string_view name, const std::string& path, std::string_view data, uint32_t mode,
                  std::string_view actor);
  Result<std::string> get_file(std::string_view name, const std::string& path, std::string_view actor);

  // Stops running sandboxes idle for longer than idle_timeout; returns how many were stopped.
  size_t stop_idle();

  bool image_in_use(const std::string& digest);
  const ManagerOptions& options() const { return opts_; }
  Result<const oci::OciRuntime*> runtime(std::string_view kind);

 private:
  // moat-init as runsc's newuidmap and newgidmap (set up by prepare()).
  std::filesystem::path idmap_dir() const { return opts_.state_dir / "bin" / "runsc-idmap"; }
  Status check_id_range(const SandboxRecord& rec) const;
  static Status check_record_limits(const SandboxRecord& rec);
  std::shared_ptr<std::mutex> lock_for(std::string_view name);
  Status start_locked(const SandboxRecord& rec, std::string_view actor);
  Status stop_locked(const SandboxRecord& rec, std::string_view actor, std::string_view reason);
  // Kills the container if any and unmounts everything; best effort, reports the first failure.
  Status teardown(const SandboxRecord& rec);
  // Reconcile's end of a remove a crash cut short (record in state "removing"): the directory, then
  // the record. Leaves both, with a warning, while anything is still mounted there.
  void finish_removal(const SandboxRecord& rec);
  // A removed sandbox's directory, then its record (marked "removing" first); refused while anything
  // is still mounted there. remove() and finish_removal() share it.
  Status delete_data(const SandboxRecord& rec);
  // The sandbox's directories and its disk (made when missing): at create, and at the first start of
  // a sandbox whose create a killed moatd cut short.
  Status lay_out(const SandboxRecord& rec, const SandboxPaths& paths);
  Status write_bundle(const SandboxRecord& rec, const SandboxPaths& paths, const SandboxAttachment& attachment);
  Status wait_healthy(const SandboxRecord& rec, const SandboxPaths& paths);
  void set_running(std::string_view name, bool running);
  // Runs fn against the sandbox's moat-init; if moat-init is unreachable, restarts the sandbox once.
  template <class T>
  Result<T> with_client(std::string_view name, const std::function<Result<T>(const InitClient&)>& fn);
  void begin_use(std::string_view name);
  void end_use(std::string_view name);
  void audit(std::string_view kind, std::string_view actor, std::string_view subject, Json data);

  ManagerOptions opts_;
  SandboxObserver* observer_ = nullptr;
  Database& db_;
  SandboxRepo repo_;
  AuditLog& audit_;
  image::ImageStore& images_;
  std::filesystem::path init_binary_installed_;
  std::map<std::string, std::unique_ptr<oci::OciRuntime>, std::less<>> runtimes_;

  std::mutex locks_mu_;
  std::map<std::string, std::shared_ptr<std::mutex>, std::less<>> locks_;
  // What this moatd knows of each sandbox's use, kept in memory so execs touch neither the store
  // nor the runtime: whether it is running, execs in flight, and when it was last used.
  std::mutex activity_mu_;
  std::map<std::string, SandboxActivity, std::less<>> activity_;
};

}  // namespace moat
