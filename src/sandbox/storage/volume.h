#pragma once
// Each sandbox's own disk: a sparse ext4 image file mounted through a loop device. Its size is the
// sandbox's cap, so filling it fills neither the host nor another sandbox; blocks freed inside are
// handed back to the host (mounted with discard, the loop device punches holes in the file).
//
// Volume layout (the mount point of the image):
//   upper/      overlay upper layer: everything the sandbox changed in its root    owner:owner 0755
//   work/       overlay work dir                                                  owner:owner 0755
//   workspace/  bind-mounted at /workspace                                        owner:owner 0755
//   run/        moat-init's socket directory                                      owner:owner 0700
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "base/result.h"
#include "sandbox/storage/mounts.h"

namespace moat {

inline constexpr uint64_t kMinVolumeBytes = 32ull << 20;

// Creates `image_file` (must not exist) as a sparse file of `size_bytes` holding an ext4 file system with
// the volume layout, and leaves it unmounted. The layout belongs to the host's root until
// prepare_volume gives it to the sandbox (at its first start). With a `template_dir`, the file system is
// a copy of a template made once per size there (with its own UUID), not a fresh mkfs.ext4. On any
// failure nothing is left behind. No loop device or a failing mkfs.ext4 is one clear error
// (Unavailable) naming what to do.
Status create_volume(const std::filesystem::path& image_file, uint64_t size_bytes,
                     const std::filesystem::path& template_dir = {});

// On the mounted volume: gives the root and the layout's directories that are still fresh from
// create_volume (owned by the host's root) to owner_uid:owner_gid with the layout's modes, and makes
// any that are missing. What the sandbox has re-owned since is left alone. Nothing is followed.
Status prepare_volume(const std::filesystem::path& mount_point, uint32_t owner_uid, uint32_t owner_gid);

// Mounts `image_file` at `mount_point` (nosuid, nodev, noatime, discard) through a free loop device
// configured with autoclear and direct I/O, so unmounting frees the loop device and the file's pages
// are cached once (by ext4), not twice.
Status mount_volume(const std::filesystem::path& image_file, const std::filesystem::path& mount_point);

// The device `mount_point` is mounted from, checked to be a loop device backed by `image_file` (the
// kernel's record in sysfs), so that what is done to it (an I/O throttle) lands on this disk only.
Result<dev_t> volume_device(const std::filesystem::path& mount_point, const std::filesystem::path& image_file);

// The loop devices ("/dev/loop3") currently backed by `image_file`: empty once it is unmounted.
Result<std::vector<std::string>> loop_devices_for(const std::filesystem::path& image_file);

// Bytes the image file really occupies on the host (allocated blocks of the sparse file).
Result<uint64_t> volume_allocated_bytes(const std::filesystem::path& image_file);

}  // namespace moat
