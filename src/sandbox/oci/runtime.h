#pragma once
// Drives an OCI runtime (runc, crun or runsc) through its command line, the way containerd's shim
// does: one short-lived process per verb, container state kept by the runtime under its --root.
// The bundle (config.json from spec.h, plus the rootfs) is written by the caller.
#include <sys/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace moat::oci {

enum class RuntimeKind { Runc, Crun, Runsc };

// "runc" | "crun" | "runsc"; anything else is InvalidInput naming the choices.
Result<RuntimeKind> parse_runtime(std::string_view name);
std::string_view runtime_name(RuntimeKind kind);

struct ContainerState {
  std::string status;  // created, running, stopped, paused
  pid_t pid = 0;       // host pid of the container's init (runsc: of the sandbox process); 0 when stopped
};

// Where the container's stdin/stdout/stderr go; -1 = a null device of the bundle's own (see launch()).
// The fds are only borrowed for the duration of create() (the container keeps its own copies).
struct ContainerStdio {
  int in = -1, out = -1, err = -1;
};

// Writes <bundle>/config.json (mode 0600). Not fsynced: a bundle is written afresh before every
// create, and the runtime reads it at once; after a host crash there is no container to describe.
Status write_bundle_config(const std::filesystem::path& bundle, std::string_view config_json);

// Removes the (empty) cgroup at `cgroup_path` ("/moat/<id>") from every hierarchy of this host, v1 or
// v2. Only rmdir is used, so a cgroup that still has processes is never touched (Conflict); a path
// that does not exist is fine.
Status remove_empty_cgroup(std::string_view cgroup_path);

class OciRuntime {
 public:
  // state_root is the runtime's --root (e.g. <state>/runtime/runc); created on first use. idmap_dir
  // holds moat-init as newuidmap and newgidmap (guest/host_idmap.h); runsc cannot start without it.
  OciRuntime(RuntimeKind kind, std::filesystem::path state_root, std::filesystem::path idmap_dir = {});

  RuntimeKind kind() const { return kind_; }
  std::string_view name() const { return runtime_name(kind_); }
  const std::filesystem::path& state_root() const { return state_root_; }

  // The binary is installed and can run containers on this host. Unavailable explains why not
  // (missing binary; crun on a hybrid cgroup v1/v2 host) and what to do instead.
  Status probe() const;

  // Creates the container detached (its init waits for start()). The runtime writes the init's pid
  // to <bundle>/init.pid and its own diagnostics to <bundle>/<runtime>.log.
  Status create(const std::string& id, const std::filesystem::path& bundle, const ContainerStdio& stdio = {}) const;
  Status start(const std::string& id) const;
  // create + start in one runtime process ("run --detach"): the container is running when this
  // returns. The same files and errors as create(); a failure leaves nothing behind.
  Status run_detached(const std::string& id, const std::filesystem::path& bundle, const ContainerStdio& stdio = {}) const;
  // NotFound when the runtime does not know `id`.
  Result<ContainerState> state(const std::string& id) const;
  Status kill(const std::string& id, int signal, bool all = false) const;
  // The runtime's "delete": removes its state and the container's cgroup; force kills it first.
  // When cgroup_path (the spec's linux.cgroupsPath) is given, an empty cgroup the runtime left behind
  // is removed too (runsc leaves one when its sandbox failed to boot), even if the runtime no longer
  // knows the id.
  Status remove(const std::string& id, bool force, std::string_view cgroup_path = {}) const;
  // Every container the runtime knows under state_root, with its state: one runtime process for all
  // of them (reconcile after a moatd restart would otherwise pay one `state` per sandbox).
  Result<std::map<std::string, ContainerState>> list() const;

 private:
  std::vector<std::string> base_argv() const;
  Result<std::string> run(std::string_view verb, const std::string& id, std::vector<std::string> args) const;
  // create or run --detach: the runtime's diagnostics go to <bundle>/<runtime>.log, not a pipe.
  Status launch(std::string_view verb, const std::string& id, const std::filesystem::path& bundle,
                const ContainerStdio& stdio) const;
  Status require_binary() const;

  RuntimeKind kind_;
  std::filesystem::path state_root_;
  std::filesystem::path idmap_dir_;
  std::string binary_;  // absolute path, empty when not installed
};

}  // namespace moat::oci
