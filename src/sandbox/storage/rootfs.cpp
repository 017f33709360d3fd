#include "sandbox/storage/rootfs.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/fs.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "sandbox/storage/volume.h"

namespace fs = std::filesystem;

namespace moat {
namespace {

Status write_proc(pid_t pid, std::string_view file, std::string_view data) {
  std::string path = fmt::format("/proc/{}/{}", pid, file);
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd || write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    return fail(ErrorKind::Internal, "cannot write {}: {}", path, strerror(errno));
  }
  return {};
}

Status check_overlay_path(const fs::path& p) {
  if (p.string().find_first_of(",:\\") != std::string::npos) {
    return fail(ErrorKind::InvalidInput, "path {} contains ',', ':' or '\\', which overlay options cannot hold",
                p.string());
  }
  return {};
}

bool is_mount_point(const fs::path& p) {
  auto m = mounts_under(p);
  if (!m) return false;
  for (const auto& mp : *m)
    if (fs::path(mp) == p) return true;
  return false;
}

}  // namespace

namespace {

// Runs in the clone, on moatd's memory. It only has to exist while its maps are written, then it is
// SIGKILLed. It must not outlive moatd: it drops its copy of moatd's fd table (else it would hold the
// state lock, the API socket and the store open after a moatd crash, and the next moatd would be
// refused) and asks to be killed when moatd dies.
int idmap_helper(void* parent) {
  ::close_range(0, ~0U, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != *static_cast<pid_t*>(parent)) ::_exit(0);  // moatd died before prctl
  for (;;) pause();  // until SIGKILLed
}

// The helper's stack; unmapped once the helper is dead (declared before it, so destroyed after it).
struct HelperStack {
  static constexpr size_t kSize = 16 << 10;
  void* base = MAP_FAILED;
  HelperStack() : base(mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0)) {}
  ~HelperStack() {
    if (base != MAP_FAILED) munmap(base, kSize);
  }
  char* top() const { return static_cast<char*>(base) + kSize; }
};

}  // namespace

Result<UniqueFd> make_idmap_userns(uint32_t uid_base, uint32_t uid_count) {
  // The helper is cloned straight into a new user namespace, sharing moatd's memory: no copy of the
  // daemon's page tables (a fork of a large, threaded process is dear) and no exec. It runs nothing
  // but pause() with every signal blocked (no handler of ours can run on the shared memory); SIGKILL
  // still ends it.
  HelperStack stack;
  if (stack.base == MAP_FAILED) return fail(ErrorKind::Internal, "mmap: {}", strerror(errno));
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t self = ::getpid();
  pid_t pid = clone(idmap_helper, stack.top(), CLONE_NEWUSER | CLONE_VM | SIGCHLD, &self);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    return fail(ErrorKind::Unavailable, "cannot create a user namespace for the idmapped mount: {}", strerror(err));
  }
  ChildProcess child(pid);  // SIGKILLed and reaped on every path out of here
  std::string map = fmt::format("0 {} {}\n", uid_base, uid_count);
  if (auto st = write_proc(pid, "uid_map", map); !st) return std::unexpected(st.error());
  if (auto st = write_proc(pid, "setgroups", "deny"); !st) return std::unexpected(st.error());
  if (auto st = write_proc(pid, "gid_map", map); !st) return std::unexpected(st.error());
  std::string ns = fmt::format("/proc/{}/ns/user", pid);
  UniqueFd fd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail(ErrorKind::Internal, "cannot open {}: {}", ns, strerror(errno));
  return fd;  // the namespace lives on through fd after the helper is killed
}

Status mount_idmapped(const fs::path& source, const fs::path& target, int userns_fd, bool read_only) {
  UniqueFd tree(open_tree(AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (!tree) {
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Internal, "cannot clone {} (open_tree): {}",
                source.string(), strerror(errno));
  }
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (read_only ? MOUNT_ATTR_RDONLY : 0);
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    int e = errno;
    return fail(ErrorKind::Unavailable,
                "cannot make an idmapped mount of {}: {}; the image store must be on a file system that supports "
                "idmapped mounts (ext4, xfs, btrfs; tmpfs from Linux 6.3)",
                source.string(), strerror(e));
  }
  if (move_mount(tree.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return fail(ErrorKind::Internal, "cannot attach the idmapped mount at {}: {}", target.string(), strerror(errno));
  }
  return {};
}

Status mount_rootfs(const fs::path& image_rootfs, const fs::path& volume_dir, uint32_t uid_base, uint32_t uid_count,
                    const fs::path& lower_mnt, const fs::path& target) {
  fs::path upper = volume_dir / "upper", work = volume_dir / "work";
  for (const auto& p : {lower_mnt, upper, work}) {
    if (auto st = check_overlay_path(p); !st) return st;
  }
  std::error_code ec;
  if (!fs::is_directory(image_rootfs, ec)) {
    return fail(ErrorKind::NotFound, "image root {} is missing", image_rootfs.string());
  }
  // A volume fresh from create_volume is laid out but still the host's root's: the sandbox's now.
  if (fs::exists(volume_dir / "lost+found", ec)) {
    if (auto st = prepare_volume(volume_dir, uid_base, uid_base); !st) return st;
  }
  if (!fs::is_directory(upper, ec) || !fs::is_directory(work, ec)) {
    return fail(ErrorKind::NotFound, "{} has no upper/ and work/; is the sandbox's disk mounted there?",
                volume_dir.string());
  }
  for (const auto& p : {lower_mnt, target}) {
    if (auto st = make_dirs(p, 0755); !st) return st;
    if (is_mount_point(p)) return fail(ErrorKind::Conflict, "{} is already mounted", p.string());
  }

  auto userns = make_idmap_userns(uid_base, uid_count);
  if (!userns) return std::unexpected(userns.error());
  if (auto st = mount_idmapped(image_rootfs, lower_mnt, userns->get(), true); !st) return st;
  MountGuard lower_guard(lower_mnt);

  // The overlay's "/" takes its owner and mode from upper/: the sandbox's root must own it.
  if (lchown(upper.c_str(), uid_base, uid_base) != 0 || chmod(upper.c_str(), 0755) != 0) {
    return fail(ErrorKind::Internal, "cannot set owner of {}: {}", upper.string(), strerror(errno));
  }
  // index/metacopy off: the upper layer stays a plain tree (the exact record of what the sandbox changed)
  // that needs no matching lower inodes; redirect_dir off: no trusted.overlay.redirect xattrs to trust.
  std::string data = fmt::format("lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off",
                                 lower_mnt.string(), upper.string(), work.string());
  if (mount("overlay", target.c_str(), "overlay", MS_NODEV, data.c_str()) != 0) {
    int e = errno;
    return fail(ErrorKind::Internal, "cannot mount the sandbox root at {} (overlay {}): {}; see dmesg for details",
                target.string(), data, strerror(e));
  }
  lower_guard.release();
  return {};
}

Status unmount_rootfs(const fs::path& lower_mnt, const fs::path& target) {
  auto a = unmount(target);
  auto b = unmount(lower_mnt);
  if (!a) return a;
  return b;
}

Status reset_upper(const fs::path& volume_dir, uint32_t uid_base) {
  fs::path upper = volume_dir / "upper", work = volume_dir / "work";
  std::error_code ec;
  if (!fs::is_directory(upper, ec)) {
    return fail(ErrorKind::NotFound, "{} has no upper/; is the sandbox's disk mounted there?", volume_dir.string());
  }
  auto table = read_mountinfo();
  if (!table) return std::unexpected(table.error());
  fs::path canon = fs::weakly_canonical(upper, ec);
  for (const auto& m : *table) {
    if (m.fs_type != "overlay") continue;
    for (const auto& u : {upper.string(), canon.string()}) {
      std::string needle = "upperdir=" + u;
      auto pos = m.super_options.find(needle);
      if (pos != std::string::npos &&
          (pos + needle.size() == m.super_options.size() || m.super_options[pos + needle.size()] == ',')) {
        return fail(ErrorKind::Conflict, "the writable layer {} is still in use by the overlay at {}; stop the sandbox first",
                    upper.string(), m.mount_point);
      }
    }
  }
  for (const auto& dir : {upper, work}) {
    if (auto st = reset_directory(dir, uid_base); !st) return st;
  }
  return {};
}

Status reset_directory(const fs::path& dir, uint32_t uid_base) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) {
    return fail(ErrorKind::NotFound, "{} is not a directory", dir.string());
  }
  auto inner = mounts_under(dir);
  if (!inner) return std::unexpected(inner.error());
  if (!inner->empty()) {
    return fail(ErrorKind::Conflict, "{} has mounts beneath it ({}); not emptying it", dir.string(), inner->front());
  }
  std::vector<fs::path> children;
  for (const auto& e : fs::directory_iterator(dir, ec)) children.push_back(e.path());
  if (ec) return fail(ErrorKind::Internal, "cannot list {}: {}", dir.string(), ec.message());
  for (const auto& c : children) {
    fs::remove_all(c, ec);  // removes symlinks themselves, never what they point at
    if (ec) return fail(ErrorKind::Internal, "cannot remove {}: {}", c.string(), ec.message());
  }
  if (lchown(dir.c_str(), uid_base, uid_base) != 0 || chmod(dir.c_str(), 0755) != 0) {
    return fail(ErrorKind::Internal, "cannot set owner of {}: {}", dir.string(), strerror(errno));
  }
  return {};
}

}  // namespace moat
