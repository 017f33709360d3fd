#pragma once
// Where a sandbox's pieces live in the state directory. Host-owned paths only: nothing here is
// inside a sandbox's root, so the host may use them as ordinary paths.
//
//   <state>/sandboxes/<name>/disk.img     sparse ext4 image: the sandbox's own capped disk
//   <state>/sandboxes/<name>/volume/      disk.img mounted (upper/, work/, workspace/, run/)
//   <state>/sandboxes/<name>/lower/       the image's rootfs, idmapped to the sandbox's uid range, ro
//   <state>/sandboxes/<name>/rootfs/      overlay of lower + volume/upper: the sandbox's /
//   <state>/sandboxes/<name>/bundle/      OCI bundle (config.json)
#include <filesystem>
#include <string>

namespace moat {

struct SandboxPaths {
  std::filesystem::path dir, disk, volume, lower, rootfs, bundle;
  // moat-init's socket directory, bind-mounted at /run/moat inside. The agent can write here, so
  // the host reaches it only through connect_init_socket(), which follows no link.
  std::filesystem::path run_dir() const { return volume / "run"; }
  std::filesystem::path workspace() const { return volume / "workspace"; }

  static SandboxPaths for_sandbox(const std::filesystem::path& state_dir, const std::string& name) {
    SandboxPaths p;
    p.dir = state_dir / "sandboxes" / name;
    p.disk = p.dir / "disk.img";
    p.volume = p.dir / "volume";
    p.lower = p.dir / "lower";
    p.rootfs = p.dir / "rootfs";
    p.bundle = p.dir / "bundle";
    return p;
  }
};

// The runtime's container id for a sandbox: unique host-wide, not just per moatd, because runsc names
// its control sockets after the id in one host-wide namespace (two state directories with a sandbox
// of the same name must not collide). The prefix lets reconcile recognise moat's containers.
inline constexpr std::string_view kContainerPrefix = "moat-";
inline std::string container_id(const std::string& sandbox_name, const std::string& sandbox_id) {
  return std::string(kContainerPrefix) + sandbox_name + "-" + sandbox_id.substr(0, 8);
}
// The sandbox's cgroup, named like its container for the same reason.
inline std::string cgroup_path(const std::string& container) { return "/moat/" + container; }

}  // namespace moat
