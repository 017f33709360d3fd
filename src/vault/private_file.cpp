#include "vault/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/ids.h"
#include "base/unique_fd.h"

namespace moat::vault {

namespace {

std::string_view file_type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
  }
}

Status fsync_parent(const std::filesystem::path& path) {
  auto parent = path.parent_path();
  if (parent.empty()) parent = ".";
  UniqueFd dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir || ::fsync(dir.get()) != 0)
    return fail(ErrorKind::Internal, "cannot sync directory {}: {}", parent.string(), strerror(errno));
  return {};
}

}  // namespace

Status check_private_file(int fd, const std::filesystem::path& path, std::string_view what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(ErrorKind::Internal, "cannot stat {} {}: {}", what, path.string(), strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fail(ErrorKind::InvalidInput, "{} {} is {}, not a regular file; refusing to use it (put the key file itself there)",
                what, path.string(), file_type_name(st.st_mode));
  if (st.st_uid != ::geteuid())
    return fail(ErrorKind::InvalidInput,
                "{} {} is owned by uid {}, not by moatd's user (uid {}); refusing to use it: fix with 'chown {}:{} {}'",
                what, path.string(), st.st_uid, ::geteuid(), ::geteuid(), ::getegid(), path.string());
  if ((st.st_mode & 077) != 0)
    return fail(ErrorKind::InvalidInput,
                "{} {} is accessible to group or others (mode {:04o}); refusing to use it: fix with 'chmod 600 {}' "
                "(and consider what it protects exposed)",
                what, path.string(), st.st_mode & 07777, path.string());
  return {};
}

Result<SecretValue> read_private_file(const std::filesystem::path& path, std::string_view what, size_t max_bytes) {
  // O_NONBLOCK so that a FIFO planted at the path cannot hang moatd before fstat refuses it.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (err == ENOENT) return fail(ErrorKind::NotFound, "{} {} does not exist", what, path.string());
    if (err == ELOOP)
      return fail(ErrorKind::InvalidInput,
                  "{} {} is a symbolic link; refusing to follow it (put the key file itself there)", what, path.string());
    return fail(ErrorKind::Unavailable, "cannot open {} {}: {}", what, path.string(), strerror(err));
  }
  if (auto st = check_private_file(fd.get(), path, what); !st) return std::unexpected(st.error());
  // One byte more than allowed tells "too big" apart from "exactly the limit".
  SecretValue buf(max_bytes + 1);
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd.get(), buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrorKind::Internal, "cannot read {} {}: {}", what, path.string(), strerror(errno));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > max_bytes)
    return fail(ErrorKind::InvalidInput, "{} {} is larger than {} bytes; it is not the file moat made", what,
                path.string(), max_bytes);
  return SecretValue(buf.view().substr(0, got));
}

Status create_private_file(const std::filesystem::path& path, std::string_view data, std::string_view what) {
  auto tmp = path;
  tmp += fmt::format(".new-{}", random_hex_id(6));
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail(ErrorKind::Unavailable, "cannot create {} {}: {}", what, tmp.string(), strerror(errno));
  auto cleanup_fail = [&](int err, std::string_view op) {
    ::unlink(tmp.c_str());
    return fail(err == ENOSPC || err == EDQUOT ? ErrorKind::ResourceLimit : ErrorKind::Internal,
                "cannot {} {} {}: {}", op, what, path.string(), strerror(err));
  };
  // The umask cannot widen 0600, but it could narrow it to something odd; set it exactly.
  if (::fchmod(fd.get(), 0600) != 0) return cleanup_fail(errno, "create");
  while (!data.empty()) {
    ssize_t n = ::write(fd.get(), data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return cleanup_fail(errno, "write");
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd.get()) != 0) return cleanup_fail(errno, "write");
  fd.reset();
  // Publish without overwriting: RENAME_NOREPLACE, or link() where the file system lacks it.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    if (err == EINVAL || err == ENOSYS) {
      err = ::link(tmp.c_str(), path.c_str()) == 0 ? 0 : errno;
      ::unlink(tmp.c_str());
    } else {
      ::unlink(tmp.c_str());
    }
    if (err == EEXIST) return fail(ErrorKind::Conflict, "{} {} already exists", what, path.string());
    if (err != 0)
      return fail(ErrorKind::Internal, "cannot create {} {}: {}", what, path.string(), strerror(err));
  }
  return fsync_parent(path);
}

}  // namespace moat::vault
