#pragma once
// Reading the mount table and undoing mounts: shared by volume and rootfs set-up, reconcile and tests.
#include <filesystem>
#include <string>
#include <vector>

#include "base/result.h"

namespace moat {

struct MountEntry {
  std::string mount_point;  // unescaped (mountinfo octal-escapes space, tab, newline and backslash)
  std::string fs_type;      // "ext4", "overlay", ...
  std::string source;       // "/dev/loop3", "overlay", ...
  std::string super_options;  // "rw,lowerdir=...,upperdir=..." for an overlay
};

// This process's mount table, from /proc/self/mountinfo, in mount order.
Result<std::vector<MountEntry>> read_mountinfo();

// Mount points at or beneath `dir`, sorted; a path mounted twice (stacked) appears twice. The paths are
// spelled with `dir` as given even when it reaches the mounts through a symlink.
Result<std::vector<std::string>> mounts_under(const std::filesystem::path& dir);

// Unmounts `mount_point`. Not mounted (or missing) is success. If it is busy it is detached lazily
// (MNT_DETACH: gone from the tree now, released when its last user goes) and a warning is logged.
Status unmount(const std::filesystem::path& mount_point);

// Unmounts a path on scope exit unless released: rolls back a half-done set-up.
class MountGuard {
 public:
  MountGuard() = default;
  explicit MountGuard(std::filesystem::path mount_point) : path_(std::move(mount_point)) {}
  MountGuard(MountGuard&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  MountGuard& operator=(MountGuard&& o) noexcept;
  MountGuard(const MountGuard&) = delete;
  MountGuard& operator=(const MountGuard&) = delete;
  ~MountGuard();
  void release() { path_.clear(); }
  bool armed() const { return !path_.empty(); }

 private:
  std::filesystem::path path_;
};

}  // namespace moat
