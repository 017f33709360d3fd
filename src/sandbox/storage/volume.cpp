#include "sandbox/storage/volume.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "base/fs.h"
#include "base/ids.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"

namespace fs = std::filesystem;

namespace moat {
namespace {

constexpr std::string_view kNoLoop =
    "loop devices are unavailable ({}); load the loop module with 'modprobe loop' (in a container, pass "
    "/dev/loop-control and /dev/loop* through) so each sandbox can have its own capped disk";

Result<UniqueFd> open_loop_control() {
  UniqueFd ctl(open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl) {
    return fail(ErrorKind::Unavailable, fmt::runtime(kNoLoop),
                fmt::format("cannot open /dev/loop-control: {}", strerror(errno)));
  }
  return ctl;
}

// Removes a path on scope exit unless released.
class PathCleanup {
 public:
  explicit PathCleanup(fs::path p, bool dir) : path_(std::move(p)), dir_(dir) {}
  ~PathCleanup() {
    if (path_.empty()) return;
    if ((dir_ ? rmdir(path_.c_str()) : unlink(path_.c_str())) != 0 && errno != ENOENT)
      log::warn("cannot remove {}: {}", path_.string(), strerror(errno));
  }
  PathCleanup(const PathCleanup&) = delete;
  PathCleanup& operator=(const PathCleanup&) = delete;
  void release() { path_.clear(); }

 private:
  fs::path path_;
  bool dir_;
};

Status make_owned_dir(const fs::path& p, uint32_t uid, uint32_t gid, mode_t mode) {
  if (mkdir(p.c_str(), mode) != 0 && errno != EEXIST)
    return fail(ErrorKind::Internal, "cannot create {}: {}", p.string(), strerror(errno));
  if (chown(p.c_str(), uid, gid) != 0 || chmod(p.c_str(), mode) != 0)
    return fail(ErrorKind::Internal, "cannot set owner of {}: {}", p.string(), strerror(errno));
  return {};
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Status create_volume(const fs::path& image_file, uint64_t size_bytes, uint32_t owner_uid, uint32_t owner_gid) {
  if (size_bytes < kMinVolumeBytes) {
    return fail(ErrorKind::InvalidInput, "disk size {} MiB is too small; use at least {} MiB", size_bytes >> 20,
                kMinVolumeBytes >> 20);
  }
  std::error_code ec;
  if (fs::exists(fs::symlink_status(image_file, ec))) {
    return fail(ErrorKind::Conflict, "disk image {} already exists", image_file.string());
  }
  if (auto ctl = open_loop_control(); !ctl) return std::unexpected(ctl.error());
  if (auto mkfs = find_program("mkfs.ext4"); !mkfs) {
    return fail(ErrorKind::Unavailable, "mkfs.ext4 is not installed; install e2fsprogs ('apt-get install e2fsprogs')");
  }

  UniqueFd fd(open(image_file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return fail(ErrorKind::Internal, "cannot create disk image {}: {}", image_file.string(), strerror(errno));
  PathCleanup remove_file(image_file, false);
  if (ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0) {
    int e = errno;
    return fail(e == EFBIG || e == ENOSPC ? ErrorKind::ResourceLimit : ErrorKind::Internal,
                "cannot size disk image {} to {} bytes: {}", image_file.string(), size_bytes, strerror(e));
  }
  fd.reset();

  // The file is fresh and sparse, so it reads as zeros: mke2fs need not zero inode tables or the journal
  // (assume_storage_prezeroed marks them zeroed, so no lazy-init thread fills the file in later either).
  auto mkfs = run_process({"mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", "moat", "-E",
                           fmt::format("root_owner={}:{},lazy_itable_init=1,lazy_journal_init=1,nodiscard,"
                                       "assume_storage_prezeroed=1",
                                       owner_uid, owner_gid),
                           image_file.string()},
                          RunOptions{.timeout = std::chrono::minutes(2)});
  if (!mkfs) return std::unexpected(mkfs.error());
  if (!mkfs->ok()) {
    return fail(ErrorKind::Unavailable, "mkfs.ext4 failed on {} ({}): {}; check that e2fsprogs >= 1.47 is installed",
                image_file.string(), mkfs->timed_out ? std::string("timed out") : mkfs->signal ? fmt::format("signal {}", mkfs->signal) : fmt::format("exit status {}", mkfs->exit_code),
                trim(mkfs->err.empty() ? mkfs->out : mkfs->err));
  }

  // Lay out the top-level directories through a private, temporary mount.
  fs::path mnt = image_file.parent_path() / fmt::format(".{}.init-{}", image_file.filename().string(), random_hex_id(4));
  if (mkdir(mnt.c_str(), 0700) != 0) return fail(ErrorKind::Internal, "cannot create {}: {}", mnt.string(), strerror(errno));
  PathCleanup remove_mnt(mnt, true);
  if (auto st = mount_volume(image_file, mnt); !st) return st;
  MountGuard guard(mnt);
  for (auto [dir, mode] : {std::pair{"upper", 0755}, {"work", 0755}, {"workspace", 0755}, {"run", 0700}}) {
    if (auto st = make_owned_dir(mnt / dir, owner_uid, owner_gid, static_cast<mode_t>(mode)); !st) return st;
  }
  guard.release();
  if (auto st = unmount(mnt); !st) return st;
  remove_file.release();
  return {};
}

Status mount_volume(const fs::path& image_file, const fs::path& mount_point) {
  UniqueFd file(open(image_file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!file) {
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Internal, "cannot open disk image {}: {}",
                image_file.string(), strerror(errno));
  }
  // The same ext4 mounted twice through two loop devices would be corrupted: refuse. A loop device
  // whose mount just went away detaches asynchronously (autoclear runs after the last close), so give
  // a just-unmounted image a moment before calling it attached.
  auto busy = loop_devices_for(image_file);
  for (int i = 0; i < 100 && busy && !busy->empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    busy = loop_devices_for(image_file);
  }
  if (busy && !busy->empty()) {
    return fail(ErrorKind::Conflict, "disk image {} is already attached to {}; unmount it first", image_file.string(),
                busy->front());
  }
  auto ctl = open_loop_control();
  if (!ctl) return std::unexpected(ctl.error());

  uint32_t flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
  for (int attempt = 0; attempt < 64; ++attempt) {
    int n = ioctl(ctl->get(), LOOP_CTL_GET_FREE);
    if (n < 0) {
      return fail(ErrorKind::Unavailable, fmt::runtime(kNoLoop), fmt::format("no free loop device: {}", strerror(errno)));
    }
    std::string dev = fmt::format("/dev/loop{}", n);
    UniqueFd loop;
    for (int wait = 0; wait < 50 && !loop; ++wait) {  // devtmpfs creates a new node asynchronously
      loop.reset(open(dev.c_str(), O_RDWR | O_CLOEXEC));
      if (!loop && errno != ENOENT) break;
      if (!loop) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!loop) {
      return fail(ErrorKind::Unavailable, fmt::runtime(kNoLoop), fmt::format("cannot open {}: {}", dev, strerror(errno)));
    }
    loop_config cfg{};
    cfg.fd = static_cast<uint32_t>(file.get());
    cfg.block_size = 4096;
    cfg.info.lo_flags = flags;
    std::string name = image_file.string();
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), name.c_str(), LO_NAME_SIZE - 1);
    if (ioctl(loop.get(), LOOP_CONFIGURE, &cfg) != 0) {
      if (errno == EBUSY) continue;  // another process took this device first
      if (errno == EINVAL && (flags & LO_FLAGS_DIRECT_IO)) {  // backing file system without O_DIRECT
        flags &= ~LO_FLAGS_DIRECT_IO;
        continue;
      }
      return fail(ErrorKind::Unavailable, fmt::runtime(kNoLoop), fmt::format("cannot configure {}: {}", dev, strerror(errno)));
    }
    // From here the loop device is released automatically when the last reference goes: our fd on
    // failure below, the mount once it is unmounted.
    if (mount(dev.c_str(), mount_point.c_str(), "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "discard") != 0) {
      int e = errno;
      return fail(e == ENOENT || e == ENOTDIR ? ErrorKind::NotFound : ErrorKind::Internal,
                  "cannot mount disk image {} ({}) at {}: {}", image_file.string(), dev, mount_point.string(),
                  strerror(e));
    }
    return {};
  }
  return fail(ErrorKind::Unavailable, fmt::runtime(kNoLoop), "every free loop device was taken by others (64 tries)");
}

Result<std::vector<std::string>> loop_devices_for(const fs::path& image_file) {
  std::error_code ec;
  fs::path want = fs::weakly_canonical(image_file, ec);
  if (ec) want = image_file;
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/sys/block", ec)) {
    std::string n = e.path().filename().string();
    if (!n.starts_with("loop")) continue;
    auto backing = read_file(e.path() / "loop" / "backing_file");
    if (!backing) continue;  // not bound
    std::string b = trim(*backing);
    if (b.ends_with(" (deleted)")) b.resize(b.size() - 10);
    if (b == want.string() || b == image_file.string()) out.push_back("/dev/" + n);
  }
  if (ec) return fail(ErrorKind::Internal, "cannot list /sys/block: {}", ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

Result<uint64_t> volume_allocated_bytes(const fs::path& image_file) {
  struct stat st {};
  if (stat(image_file.c_str(), &st) != 0)
    return fail(ErrorKind::NotFound, "cannot stat {}: {}", image_file.string(), strerror(errno));
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace moat
