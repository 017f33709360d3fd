#pragma once
// Host-side file helpers. Paths here are moat's own (state directory, bundles), never paths an
// agent controls; for anything under a sandbox's root use open_beneath(), which refuses links.
#include <sys/types.h>

#include <filesystem>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace moat {

Result<std::string> read_file(const std::filesystem::path& path);
// Writes via a temp file + fsync + rename so readers never see a half-written file.
Status write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode = 0644);
Status make_dirs(const std::filesystem::path& path, mode_t mode = 0755);
// Makes `path` (and its parents, as make_dirs) a directory only root and the group `gid` may enter:
// owner root, group `gid`, mode `mode` (0710: the group may pass through but not list). An existing
// directory gets that owner and mode too, so older state directories are fenced at their next use.
// The fence is what keeps other host users out of a sandbox's files and sockets: whatever lies below
// it may have any mode the sandbox needs.
Status make_fenced_dir(const std::filesystem::path& path, gid_t gid, mode_t mode = 0710);
// Removes a tree without crossing into other file systems (a stale mount is reported, not emptied).
Status remove_tree(const std::filesystem::path& path);

// Opens `relative` beneath the directory `dir_fd` with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no symlink, `..` escape or mount crossing is followed.
Result<UniqueFd> open_beneath(int dir_fd, const std::string& relative, int flags, mode_t mode = 0);

// Free bytes on the file system holding `path`.
Result<uint64_t> free_bytes(const std::filesystem::path& path);

}  // namespace moat
