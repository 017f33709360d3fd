#include "base/fs.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moat {

Result<std::string> read_file(const std::filesystem::path& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Internal, "cannot read {}: {}", path.string(),
                strerror(errno));
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrorKind::Internal, "cannot read {}: {}", path.string(), strerror(errno));
    if (n == 0) break;
    out.append(buf, n);
  }
  return out;
}

Status write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode) {
  auto tmp = path;
  tmp += fmt::format(".tmp{}", getpid());
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return fail(ErrorKind::Internal, "cannot write {}: {}", tmp.string(), strerror(errno));
  fchmod(fd.get(), mode);
  while (!data.empty()) {
    ssize_t n = write(fd.get(), data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      unlink(tmp.c_str());
      return fail(e == ENOSPC ? ErrorKind::ResourceLimit : ErrorKind::Internal, "cannot write {}: {}",
                  path.string(), strerror(e));
    }
    data.remove_prefix(n);
  }
  if (fsync(fd.get()) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return fail(ErrorKind::Internal, "cannot write {}: {}", path.string(), strerror(e));
  }
  return {};
}

Status make_dirs(const std::filesystem::path& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return fail(ErrorKind::Internal, "cannot create directory {}: {}", path.string(), ec.message());
  chmod(path.c_str(), mode);
  return {};
}

Status make_fenced_dir(const std::filesystem::path& path, gid_t gid, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);  // parents keep whatever mode they have
  if (ec) return fail(ErrorKind::Internal, "cannot create directory {}: {}", path.parent_path().string(), ec.message());
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    return fail(ErrorKind::Internal, "cannot create directory {}: {}", path.string(), strerror(errno));
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd || fchown(fd.get(), 0, gid) != 0 || fchmod(fd.get(), mode) != 0)
    return fail(ErrorKind::Internal, "cannot fence directory {} (root:{} {:04o}): {}", path.string(), gid, mode,
                strerror(errno));
  return {};
}

Status remove_tree(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return fail(ErrorKind::Internal, "cannot remove {}: {}", path.string(), ec.message());
  return {};
}

Result<UniqueFd> open_beneath(int dir_fd, const std::string& relative, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  int fd = static_cast<int>(syscall(SYS_openat2, dir_fd, relative.c_str(), &how, sizeof how));
  if (fd < 0) {
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::InvalidInput,
                "refusing or unable to open '{}' beneath its root: {}", relative, strerror(errno));
  }
  return UniqueFd(fd);
}

Result<uint64_t> free_bytes(const std::filesystem::path& path) {
  struct statvfs st {};
  if (statvfs(path.c_str(), &st) != 0) return fail(ErrorKind::Internal, "statvfs {}: {}", path.string(), strerror(errno));
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace moat
