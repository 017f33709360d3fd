#include "sandbox/storage/id_shift.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>

namespace moat {
namespace {

// nftw has no user pointer: the walk's state, one walk at a time per thread.
struct Walk {
  uint32_t from = 0, to = 0, count = 0;
  IdShiftCount n;
  const std::function<void(const IdShiftCount&)>* progress = nullptr;
  std::string error;
};
thread_local Walk* walk = nullptr;

bool in_range(uint32_t id) { return id >= walk->from && id - walk->from < walk->count; }
uint32_t shifted(uint32_t id) { return in_range(id) ? walk->to + (id - walk->from) : id; }

// POSIX ACL xattr: a 4-byte version (2), then entries {u16 tag, u16 perm, u32 id}; user (2) and
// group (8) entries carry ids.
bool shift_acl(std::string& value) {
  if (value.size() < 4 || (value.size() - 4) % 8 != 0) return false;
  bool changed = false;
  for (size_t off = 4; off < value.size(); off += 8) {
    uint16_t tag;
    uint32_t id;
    std::memcpy(&tag, value.data() + off, 2);
    std::memcpy(&id, value.data() + off + 4, 4);
    if ((tag == 2 || tag == 8) && in_range(id)) {
      id = shifted(id);
      std::memcpy(value.data() + off + 4, &id, 4);
      changed = true;
    }
  }
  return changed;
}

// An extended attribute's value, "" when the file has none; any other failure is the walk's error.
std::optional<std::string> get_xattr(const char* path, const char* name) {
  ssize_t size = lgetxattr(path, name, nullptr, 0);
  if (size < 0) {
    if (errno == ENODATA || errno == ENOTSUP) return std::string();
    walk->error = fmt::format("cannot read {} of {}: {}", name, path, strerror(errno));
    return std::nullopt;
  }
  std::string value(static_cast<size_t>(size), '\0');
  ssize_t n = lgetxattr(path, name, value.data(), value.size());
  if (n < 0) {
    walk->error = fmt::format("cannot read {} of {}: {}", name, path, strerror(errno));
    return std::nullopt;
  }
  value.resize(static_cast<size_t>(n));
  return value;
}

int visit(const char* path, const struct stat* st, int type, FTW*) {
  ++walk->n.seen;
  if (walk->progress && *walk->progress && walk->n.seen % 10000 == 0) (*walk->progress)(walk->n);
  if (type == FTW_NS || type == FTW_DNR) {
    walk->error = fmt::format("cannot read {}", path);
    return 1;
  }
  bool owner = in_range(st->st_uid), group = in_range(st->st_gid);
  bool is_link = S_ISLNK(st->st_mode);
  // Read before chown, which drops file capabilities (and setuid bits).
  std::string caps, acls[2];
  const char* acl_names[2] = {"system.posix_acl_access", "system.posix_acl_default"};
  if (!is_link) {
    auto c = get_xattr(path, "security.capability");
    if (!c) return 1;
    caps = std::move(*c);
    for (int i = 0; i < 2; ++i) {
      auto a = get_xattr(path, acl_names[i]);
      if (!a) return 1;
      acls[i] = std::move(*a);
    }
  }
  if (owner || group) {
    if (lchown(path, shifted(st->st_uid), shifted(st->st_gid)) != 0) {
      walk->error = fmt::format("cannot change the owner of {}: {}", path, strerror(errno));
      return 1;
    }
    if (!is_link && (st->st_mode & (S_ISUID | S_ISGID)) && chmod(path, st->st_mode & 07777) != 0) {
      walk->error = fmt::format("cannot restore the mode of {}: {}", path, strerror(errno));
      return 1;
    }
    ++walk->n.shifted;
  }
  if (caps.size() == sizeof(vfs_ns_cap_data)) {
    vfs_ns_cap_data data;
    std::memcpy(&data, caps.data(), sizeof data);
    if ((data.magic_etc & VFS_CAP_REVISION_MASK) == VFS_CAP_REVISION_3) data.rootid = shifted(data.rootid);
    caps.assign(reinterpret_cast<const char*>(&data), sizeof data);
  }
  if (!caps.empty() && (owner || group || caps.size() == sizeof(vfs_ns_cap_data)) &&
      lsetxattr(path, "security.capability", caps.data(), caps.size(), 0) != 0) {
    walk->error = fmt::format("cannot restore the capabilities of {}: {}", path, strerror(errno));
    return 1;
  }
  for (int i = 0; i < 2; ++i) {
    if (!acls[i].empty() && shift_acl(acls[i]) && lsetxattr(path, acl_names[i], acls[i].data(), acls[i].size(), 0) != 0) {
      walk->error = fmt::format("cannot shift the ACL of {}: {}", path, strerror(errno));
      return 1;
    }
  }
  return 0;
}

}  // namespace

Result<IdShiftCount> shift_ids(const std::filesystem::path& root, uint32_t from, uint32_t to, uint32_t count,
                               const std::function<void(const IdShiftCount&)>& progress) {
  Walk w{from, to, count, {}, &progress, {}};
  walk = &w;
  // FTW_PHYS: links are entries, never followed; FTW_MOUNT: the walk stays on the sandbox's disk.
  int rc = nftw(root.c_str(), visit, 64, FTW_PHYS | FTW_MOUNT);
  walk = nullptr;
  if (rc != 0)
    return fail(ErrorKind::Internal, "moving {} to host ids {}-{}: {}", root.string(), to, to + count - 1,
                w.error.empty() ? std::string(strerror(errno)) : w.error);
  return w.n;
}

}  // namespace moat
