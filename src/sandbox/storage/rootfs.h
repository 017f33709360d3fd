#pragma once
// A sandbox's root file system: an overlay of the image (idmapped to the sandbox's uid range, read-only)
// under the sandbox's own upper layer on its volume.
//
//   lower_mnt  <- open_tree(image rootfs) + MOUNT_ATTR_IDMAP (0 -> uid_base, uid_count) + ro,nosuid,nodev
//   target     <- overlay lowerdir=lower_mnt, upperdir=<volume>/upper, workdir=<volume>/work (nodev)
//
// Image files (root-owned on the host) appear owned by uid_base, i.e. by the sandbox's root; what the
// sandbox writes lands in <volume>/upper, owned by its own range. The image itself is never written.
#include <cstdint>
#include <filesystem>

#include "base/result.h"
#include "base/unique_fd.h"
#include "sandbox/storage/mounts.h"

namespace moat {

// A user namespace fd whose uid and gid maps are "0 uid_base uid_count" (for MOUNT_ATTR_IDMAP).
// The helper process that owned it is gone when this returns.
Result<UniqueFd> make_idmap_userns(uint32_t uid_base, uint32_t uid_count);

// Mounts a clone of `source` at `target`, idmapped through `userns_fd`, read-only, nosuid, nodev.
Status mount_idmapped(const std::filesystem::path& source, const std::filesystem::path& target, int userns_fd,
                      bool read_only = true);

// Creates lower_mnt and target if missing, mounts both; on failure nothing stays mounted.
// Paths must not contain ',', ':' or '\' (overlay option syntax); moat's own paths never do.
Status mount_rootfs(const std::filesystem::path& image_rootfs, const std::filesystem::path& volume_dir,
                    uint32_t uid_base, uint32_t uid_count, const std::filesystem::path& lower_mnt,
                    const std::filesystem::path& target);

// Unmounts target, then lower_mnt. Either not being mounted is fine.
Status unmount_rootfs(const std::filesystem::path& lower_mnt, const std::filesystem::path& target);

// `moat sandbox reset`: empties <volume>/upper and <volume>/work, keeping workspace/ and run/. Refused
// (Conflict) while an overlay still uses this upper layer. The volume itself must be mounted.
Status reset_upper(const std::filesystem::path& volume_dir, uint32_t uid_base);

// Empties `dir` (never following symlinks or crossing into mounts beneath it, which are refused) and makes
// it owned by uid_base:uid_base, mode 0755. Used for upper/, work/ and (reset --wipe-workspace) workspace/.
Status reset_directory(const std::filesystem::path& dir, uint32_t uid_base);

}  // namespace moat
