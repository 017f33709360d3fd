#pragma once
// Host-side file helpers. Paths here are moat's own (state directory, bundles), never paths an
// agent controls; for anything under a sandbox's root use open_beneath(), which refuses links.
#include <filesystem>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace moat {

Result<std::string> read_file(const std::filesystem::path& path);
// Writes via a temp file + fsync + rename so readers never see a half-written file.
Status write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode = 0644);
Status make_dirs(const std::filesystem::path& path, mode_t mode = 0755);
// Removes a tree without crossing into other file systems (a stale mount is reported, not emptied).
Status remove_tree(const std::filesystem::path& path);

// Opens `relative` beneath the directory `dir_fd` with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no symlink, `..` escape or mount crossing is followed.
Result<UniqueFd> open_beneath(int dir_fd, const std::string& relative, int flags, mode_t mode = 0);

// Free bytes on the file system holding `path`.
Result<uint64_t> free_bytes(const std::filesystem::path& path);

}  // namespace moat
