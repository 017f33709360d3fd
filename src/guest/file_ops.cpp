#include "guest/file_ops.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "guest/connection.h"
#include "wire/frame.h"

namespace moat::guest {
namespace {

// Absolute, no NUL, names a file (not "/" and not ending in "/", ".", "..").
bool check_path(int conn, const std::string& path) {
  if (path.empty() || path[0] != '/') {
    send_error(conn, fmt::format("path '{}' must be absolute", path));
    return false;
  }
  if (path.find('\0') != std::string::npos) {
    send_error(conn, "path must not contain NUL bytes");
    return false;
  }
  return true;
}

// Removes the temp file unless the put committed.
struct TempFile {
  int dir_fd = -1;
  std::string name;
  bool committed = false;
  ~TempFile() {
    if (!committed && !name.empty()) unlinkat(dir_fd, name.c_str(), 0);
  }
};

// After an early Error the host may still be sending data: discard its frames up to FileEnd so it reads
// our answer instead of failing on a reset connection.
void discard_until_end(int conn) {
  for (;;) {
    auto f = wire::read_frame(conn);
    if (!f || f->type == wire::FrameType::FileEnd) return;
  }
}

}  // namespace

void serve_file_put(int conn, const wire::FilePut& req) {
  const std::string& path = req.path;
  if (!check_path(conn, path)) return discard_until_end(conn);
  auto slash = path.rfind('/');
  std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  std::string base = path.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    send_error(conn, fmt::format("path '{}' does not name a file", path));
    return discard_until_end(conn);
  }
  UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) {
    int e = errno;
    send_error(conn, e == ENOENT ? fmt::format("cannot write '{}': parent directory '{}' does not exist", path, dir)
                                 : fmt::format("cannot write '{}': cannot open directory '{}': {}", path, dir, strerror(e)));
    return discard_until_end(conn);
  }
  static unsigned counter = 0;
  TempFile tmp{dir_fd.get(), fmt::format(".moat-put-{}-{}", getpid(), counter++)};
  UniqueFd fd(::openat(dir_fd.get(), tmp.name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) {
    int e = errno;
    tmp.name.clear();
    send_error(conn, fmt::format("cannot write '{}': {}", path, strerror(e)));
    return discard_until_end(conn);
  }

  uint64_t total = 0;
  for (;;) {
    auto f = wire::read_frame(conn);
    if (!f) {
      if (f.error().kind != ErrorKind::Unavailable || f.error().message.find("timed out") != std::string::npos)
        send_error(conn, f.error().message);
      return;
    }
    if (f->type == wire::FrameType::FileEnd) break;
    if (f->type != wire::FrameType::FileData) {
      send_error(conn, "protocol error: expected FileData or FileEnd, got " + wire::frame_type_name(f->type));
      return;
    }
    total += f->payload.size();
    if (total > req.size) {
      send_error(conn, fmt::format("cannot write '{}': more data than the announced {} bytes", path, req.size));
      return discard_until_end(conn);
    }
    if (auto s = wire::write_all(fd.get(), f->payload); !s) {
      send_error(conn, fmt::format("cannot write '{}': {}", path, s.error().message));
      return discard_until_end(conn);
    }
  }
  if (total != req.size) {
    send_error(conn, fmt::format("cannot write '{}': received {} bytes, announced {}", path, total, req.size));
    return;
  }
  if (geteuid() == 0 || req.uid != geteuid() || req.gid != getegid()) {
    if (fchown(fd.get(), req.uid, req.gid) != 0) {
      send_error(conn, fmt::format("cannot chown '{}' to {}:{}: {}", path, req.uid, req.gid, strerror(errno)));
      return;
    }
  }
  // After chown, which clears set-id bits.
  if (fchmod(fd.get(), req.mode & 07777) != 0) {
    send_error(conn, fmt::format("cannot chmod '{}': {}", path, strerror(errno)));
    return;
  }
  if (fsync(fd.get()) != 0) {
    send_error(conn, fmt::format("cannot write '{}': {}", path, strerror(errno)));
    return;
  }
  if (renameat(dir_fd.get(), tmp.name.c_str(), dir_fd.get(), base.c_str()) != 0) {
    int e = errno;
    send_error(conn, e == EISDIR || e == ENOTEMPTY || e == EEXIST
                         ? fmt::format("cannot write '{}': it is a directory", path)
                         : fmt::format("cannot write '{}': {}", path, strerror(e)));
    return;
  }
  tmp.committed = true;
  (void)wire::write_frame(conn, wire::FrameType::Ok);
}

void serve_file_get(int conn, const wire::FileGet& req) {
  if (!check_path(conn, req.path)) return;
  // O_NONBLOCK so a FIFO cannot hang the open; the fstat below refuses anything but a regular file.
  UniqueFd fd(::open(req.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) {
    int e = errno;
    send_error(conn, e == ENOENT ? fmt::format("no such file: '{}'", req.path)
                                 : fmt::format("cannot read '{}': {}", req.path, strerror(e)));
    return;
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) {
    send_error(conn, fmt::format("cannot read '{}': {}", req.path, strerror(errno)));
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    send_error(conn, fmt::format("cannot read '{}': not a regular file", req.path));
    return;
  }
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags >= 0) fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  wire::FileInfo info{static_cast<uint64_t>(st.st_size), static_cast<uint32_t>(st.st_mode & 07777)};
  if (!wire::write_frame(conn, wire::FrameType::FileInfo, wire::encode(info))) return;
  std::string buf(wire::kMaxChunk, '\0');
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      send_error(conn, fmt::format("cannot read '{}': {}", req.path, strerror(errno)));
      return;
    }
    if (n == 0) break;
    if (!wire::write_frame(conn, wire::FrameType::FileData, std::string_view(buf.data(), static_cast<size_t>(n)))) return;
  }
  (void)wire::write_frame(conn, wire::FrameType::FileEnd);
}

}  // namespace moat::guest
