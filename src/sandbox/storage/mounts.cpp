#include "sandbox/storage/mounts.h"

#include <sys/mount.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "base/fs.h"
#include "base/log.h"

namespace fs = std::filesystem;

namespace moat {
namespace {

std::string unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string_view> split_spaces(std::string_view line) {
  std::vector<std::string_view> f;
  size_t pos = 0;
  while (pos < line.size()) {
    auto sp = line.find(' ', pos);
    if (sp == std::string_view::npos) sp = line.size();
    f.push_back(line.substr(pos, sp - pos));
    pos = sp + 1;
  }
  return f;
}

}  // namespace

Result<std::vector<MountEntry>> read_mountinfo() {
  auto text = read_file("/proc/self/mountinfo");
  if (!text) return std::unexpected(text.error());
  std::vector<MountEntry> out;
  std::string_view rest = *text;
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    // id parent major:minor root mount_point options [optional fields...] - fstype source super_options
    auto f = split_spaces(line);
    if (f.size() < 7) continue;
    auto dash = std::find(f.begin() + 6, f.end(), std::string_view("-"));
    if (dash == f.end() || f.end() - dash < 3) continue;
    MountEntry e;
    e.mount_point = unescape(f[4]);
    e.fs_type = unescape(dash[1]);
    e.source = unescape(dash[2]);
    if (f.end() - dash >= 4) e.super_options = unescape(dash[3]);
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<std::string>> mounts_under(const fs::path& dir) {
  auto table = read_mountinfo();
  if (!table) return std::unexpected(table.error());
  std::error_code ec;
  fs::path given = dir.lexically_normal();
  if (given.has_filename() == false && given.has_parent_path()) given = given.parent_path();
  fs::path canon = fs::weakly_canonical(dir, ec);
  if (ec) canon = given;
  std::string base = canon.string();
  std::vector<std::string> out;
  for (const auto& m : *table) {
    if (m.mount_point == base) {
      out.push_back(given.string());
    } else if (base == "/" ? true : m.mount_point.starts_with(base + "/")) {
      std::string rest = base == "/" ? m.mount_point.substr(1) : m.mount_point.substr(base.size() + 1);
      out.push_back((given / rest).string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status unmount(const fs::path& mount_point) {
  if (umount2(mount_point.c_str(), UMOUNT_NOFOLLOW) == 0) return {};
  int e = errno;
  if (e == EINVAL || e == ENOENT) return {};  // not a mount point (any more), or gone
  if (e == EBUSY) {
    if (umount2(mount_point.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
      log::warn("{} was busy; detached it lazily (released when its last user exits)", mount_point.string());
      return {};
    }
    e = errno;
  }
  return fail(ErrorKind::Internal, "cannot unmount {}: {}", mount_point.string(), strerror(e));
}

MountGuard& MountGuard::operator=(MountGuard&& o) noexcept {
  if (this != &o) {
    if (!path_.empty()) (void)unmount(path_);
    path_ = std::exchange(o.path_, {});
  }
  return *this;
}

MountGuard::~MountGuard() {
  if (path_.empty()) return;
  if (auto st = unmount(path_); !st) log::warn("rollback: {}", st.error().message);
}

}  // namespace moat
