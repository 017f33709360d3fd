#include "sandbox/storage/volume.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/fs.h"
#include "base/ids.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/text.h"
#include "base/unique_fd.h"

namespace fs = std::filesystem;

namespace moat {
namespace {

// Bumped whenever make_ext4's options change, so old templates are not reused.
constexpr int kTemplateVersion = 1;

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

std::string trim(std::string_view s) { return std::string(trim_space(s)); }

// --- ext4 superblocks: just enough to give a cloned file system an identity of its own. ---

constexpr size_t kSuperblockSize = 1024;
constexpr uint16_t kExt4Magic = 0xEF53;
constexpr uint32_t kRoCompatSparseSuper = 0x1, kRoCompatMetadataCsum = 0x400;
constexpr uint32_t kIncompat64Bit = 0x80, kIncompatCsumSeed = 0x2000;
constexpr uint32_t kCompatSparseSuper2 = 0x200;

uint32_t le32(const unsigned char* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24); }
uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void put_le32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// CRC-32C as ext4 stores it (seed ~0, no final inversion).
uint32_t crc32c(uint32_t crc, const unsigned char* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

bool power_of(uint64_t n, uint64_t base) {
  while (n > 1 && n % base == 0) n /= base;
  return n == 1;
}

// Byte offsets of the primary superblock and every backup.
Result<std::vector<off_t>> superblock_offsets(const unsigned char* sb) {
  uint32_t log = le32(sb + 0x18);
  uint64_t block_size = 1024ull << log;
  uint64_t per_group = le32(sb + 0x20);
  uint64_t first = le32(sb + 0x14);
  uint64_t blocks = le32(sb + 0x04);
  if (le32(sb + 0x60) & kIncompat64Bit) blocks |= uint64_t{le32(sb + 0x150)} << 32;
  if (log > 6 || per_group == 0 || blocks <= first)
    return fail(ErrorKind::Internal, "implausible ext4 geometry");
  uint64_t groups = (blocks - first + per_group - 1) / per_group;
  std::vector<off_t> out{static_cast<off_t>(kSuperblockSize)};
  auto add = [&](uint64_t g) { out.push_back(static_cast<off_t>((first + g * per_group) * block_size)); };
  if (le32(sb + 0x5C) & kCompatSparseSuper2) {
    for (uint32_t g : {le32(sb + 0x24C), le32(sb + 0x250)})
      if (g > 0 && g < groups) add(g);
  } else {
    bool sparse = le32(sb + 0x64) & kRoCompatSparseSuper;
    for (uint64_t g = 1; g < groups; ++g)
      if (!sparse || g == 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)) add(g);
  }
  return out;
}

// A new UUID and directory hash seed in every superblock copy. The template is made with
// metadata_csum_seed, so the metadata checksums do not depend on the UUID: only each superblock's own
// checksum changes. Every copy is checked before any is written; anything unexpected is an error and
// the caller makes the file system with mkfs instead.
Status give_new_identity(int fd) {
  std::array<unsigned char, kSuperblockSize> sb{};
  if (pread(fd, sb.data(), sb.size(), kSuperblockSize) != static_cast<ssize_t>(sb.size()))
    return fail(ErrorKind::Internal, "cannot read the superblock: {}", strerror(errno));
  if (le16(sb.data() + 0x38) != kExt4Magic) return fail(ErrorKind::Internal, "not an ext4 file system");
  if (!(le32(sb.data() + 0x64) & kRoCompatMetadataCsum) || !(le32(sb.data() + 0x60) & kIncompatCsumSeed))
    return fail(ErrorKind::Internal, "the template lacks metadata_csum_seed");
  auto offsets = superblock_offsets(sb.data());
  if (!offsets) return std::unexpected(offsets.error());
  std::array<unsigned char, 32> fresh{};
  for (size_t got = 0; got < fresh.size();) {
    ssize_t n = getrandom(fresh.data() + got, fresh.size() - got, 0);
    if (n < 0 && errno != EINTR) return fail(ErrorKind::Internal, "getrandom: {}", strerror(errno));
    if (n > 0) got += static_cast<size_t>(n);
  }
  fresh[6] = static_cast<unsigned char>((fresh[6] & 0x0F) | 0x40);  // a version 4 (random) UUID
  fresh[8] = static_cast<unsigned char>((fresh[8] & 0x3F) | 0x80);
  std::vector<std::array<unsigned char, kSuperblockSize>> copies(offsets->size());
  for (size_t i = 0; i < offsets->size(); ++i) {
    auto& c = copies[i];
    if (pread(fd, c.data(), c.size(), (*offsets)[i]) != static_cast<ssize_t>(c.size()) ||
        le16(c.data() + 0x38) != kExt4Magic || crc32c(~0u, c.data(), 0x3FC) != le32(c.data() + 0x3FC))
      return fail(ErrorKind::Internal, "superblock copy at byte {} is not what was expected", (*offsets)[i]);
  }
  for (size_t i = 0; i < offsets->size(); ++i) {
    auto& c = copies[i];
    std::memcpy(c.data() + 0x68, fresh.data(), 16);       // s_uuid
    std::memcpy(c.data() + 0xEC, fresh.data() + 16, 16);  // s_hash_seed
    put_le32(c.data() + 0x3FC, crc32c(~0u, c.data(), 0x3FC));
    if (pwrite(fd, c.data(), c.size(), (*offsets)[i]) != static_cast<ssize_t>(c.size()))
      return fail(ErrorKind::Internal, "cannot write the superblock: {}", strerror(errno));
  }
  return {};
}

// Copies the allocated extents of `from` into the fresh, already sized `to_fd`; holes stay holes.
Status copy_sparse(int from_fd, int to_fd) {
  off_t off = 0;
  for (;;) {
    off_t data = lseek(from_fd, off, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return {};
      return fail(ErrorKind::Internal, "lseek(SEEK_DATA): {}", strerror(errno));
    }
    off_t hole = lseek(from_fd, data, SEEK_HOLE);
    if (hole < 0) return fail(ErrorKind::Internal, "lseek(SEEK_HOLE): {}", strerror(errno));
    loff_t in = data, out = data;
    while (in < hole) {
      ssize_t n = copy_file_range(from_fd, &in, to_fd, &out, static_cast<size_t>(hole - in), 0);
      if (n > 0) continue;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
        // No in-kernel copy between these files: plain reads and writes.
        char buf[1 << 16];
        while (in < hole) {
          ssize_t r = pread(from_fd, buf, static_cast<size_t>(std::min<off_t>(sizeof buf, hole - in)), in);
          if (r <= 0 || pwrite(to_fd, buf, static_cast<size_t>(r), out) != r)
            return fail(ErrorKind::Internal, "copying the volume template: {}", strerror(errno));
          in += r;
          out += r;
        }
        break;
      }
      return fail(ErrorKind::Internal, "copying the volume template: {}", n < 0 ? strerror(errno) : "short copy");
    }
    off = hole;
  }
}

// mkfs.ext4 on `file` (a sparse file of the volume's size) with the volume's top-level directories in
// it, owned by the host's root until prepare_volume gives them to the sandbox.
Status make_ext4(const fs::path& file) {
  if (auto mkfs = find_program("mkfs.ext4"); !mkfs) {
    return fail(ErrorKind::Unavailable, "mkfs.ext4 is not installed; install e2fsprogs ('apt-get install e2fsprogs')");
  }
  fs::path layout = file.parent_path() / fmt::format(".{}.layout-{}", file.filename().string(), random_hex_id(4));
  if (mkdir(layout.c_str(), 0755) != 0)
    return fail(ErrorKind::Internal, "cannot create {}: {}", layout.string(), strerror(errno));
  struct RemoveLayout {
    fs::path p;
    ~RemoveLayout() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } remove_layout{layout};
  for (auto [dir, mode] : {std::pair{"upper", 0755}, {"work", 0755}, {"workspace", 0755}, {"run", 0700}}) {
    fs::path d = layout / dir;
    if (mkdir(d.c_str(), static_cast<mode_t>(mode)) != 0 || chmod(d.c_str(), static_cast<mode_t>(mode)) != 0)
      return fail(ErrorKind::Internal, "cannot create {}: {}", d.string(), strerror(errno));
  }
  // The file is fresh and sparse, so it reads as zeros: mke2fs need not zero inode tables or the journal
  // (assume_storage_prezeroed marks them zeroed, so no lazy-init thread fills the file in later either).
  // metadata_csum_seed: a copy can take a new UUID without rewriting every checksum (give_new_identity).
  auto mkfs = run_process({"mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", "moat", "-O", "metadata_csum_seed",
                           "-d", layout.string(), "-E",
                           "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard,assume_storage_prezeroed=1",
                           file.string()},
                          RunOptions{.timeout = std::chrono::minutes(2)});
  if (!mkfs) return std::unexpected(mkfs.error());
  if (!mkfs->ok()) {
    return fail(ErrorKind::Unavailable, "mkfs.ext4 failed on {} ({}): {}; check that e2fsprogs >= 1.47 is installed",
                file.string(), mkfs->timed_out ? std::string("timed out") : mkfs->signal ? fmt::format("signal {}", mkfs->signal) : fmt::format("exit status {}", mkfs->exit_code),
                trim(mkfs->err.empty() ? mkfs->out : mkfs->err));
  }
  return {};
}

Result<UniqueFd> create_sparse(const fs::path& file, uint64_t size_bytes) {
  UniqueFd fd(open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return fail(ErrorKind::Internal, "cannot create disk image {}: {}", file.string(), strerror(errno));
  if (ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0) {
    int e = errno;
    unlink(file.c_str());
    return fail(e == EFBIG || e == ENOSPC ? ErrorKind::ResourceLimit : ErrorKind::Internal,
                "cannot size disk image {} to {} bytes: {}", file.string(), size_bytes, strerror(e));
  }
  return fd;
}

// The template for volumes of `size_bytes`, made with mkfs.ext4 the first time.
Result<fs::path> volume_template(const fs::path& dir, uint64_t size_bytes) {
  fs::path t = dir / fmt::format("ext4-v{}-{}.img", kTemplateVersion, size_bytes);
  struct stat st {};
  if (stat(t.c_str(), &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == size_bytes) return t;
  if (auto s = make_dirs(dir, 0700); !s) return std::unexpected(s.error());
  // Made under a temporary name and renamed into place: a crash or a concurrent create never leaves a
  // half-made template where another create would copy it.
  fs::path tmp = dir / fmt::format(".{}.{}", t.filename().string(), random_hex_id(4));
  {
    auto fd = create_sparse(tmp, size_bytes);
    if (!fd) return std::unexpected(fd.error());
  }
  PathCleanup remove_tmp(tmp, false);
  if (auto s = make_ext4(tmp); !s) return std::unexpected(s.error());
  UniqueFd fd(open(tmp.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd || fsync(fd.get()) != 0 || rename(tmp.c_str(), t.c_str()) != 0)
    return fail(ErrorKind::Internal, "cannot store the volume template {}: {}", t.string(), strerror(errno));
  remove_tmp.release();
  return t;
}

// Copies the template into a fresh `image_file` and gives the copy its own UUID; fsynced, like mkfs.
Status clone_template(const fs::path& tmpl, const fs::path& image_file, uint64_t size_bytes) {
  UniqueFd from(open(tmpl.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!from) return fail(ErrorKind::Internal, "cannot open the volume template {}: {}", tmpl.string(), strerror(errno));
  auto to = create_sparse(image_file, size_bytes);
  if (!to) return std::unexpected(to.error());
  PathCleanup remove_file(image_file, false);
  if (auto s = copy_sparse(from.get(), to->get()); !s) return s;
  if (auto s = give_new_identity(to->get()); !s) return s;
  if (fsync(to->get()) != 0) return fail(ErrorKind::Internal, "fsync {}: {}", image_file.string(), strerror(errno));
  remove_file.release();
  return {};
}

}  // namespace

namespace {

// The file system is made under a temporary name and renamed into place once it is whole and synced:
// a moatd killed half-way leaves no half-made disk.img (a sandbox whose disk is missing gets it made at
// its first start; one with a torn file system could never start again).
Status make_volume_file(const fs::path& tmp, uint64_t size_bytes, const fs::path& template_dir) {
  // A copy of a template made once per size costs a few small writes; mkfs.ext4 costs a process and
  // several fsyncs on every create.
  if (!template_dir.empty()) {
    auto tmpl = volume_template(template_dir, size_bytes);
    if (tmpl) {
      auto cloned = clone_template(*tmpl, tmp, size_bytes);
      if (cloned) return {};
      log::warn("cannot clone the volume template {} ({}); making the file system directly", tmpl->string(),
                cloned.error().message);
    } else if (tmpl.error().kind == ErrorKind::Unavailable) {
      return std::unexpected(tmpl.error());  // mkfs.ext4 itself is missing or failing: the same below
    } else {
      log::warn("volume template for {} bytes: {}; making the file system directly", size_bytes, tmpl.error().message);
    }
  }
  auto fd = create_sparse(tmp, size_bytes);
  if (!fd) return std::unexpected(fd.error());
  PathCleanup remove_file(tmp, false);
  if (auto s = make_ext4(tmp); !s) return s;
  if (fsync(fd->get()) != 0) return fail(ErrorKind::Internal, "fsync {}: {}", tmp.string(), strerror(errno));
  remove_file.release();
  return {};
}

}  // namespace

Status create_volume(const fs::path& image_file, uint64_t size_bytes, const fs::path& template_dir) {
  if (size_bytes < kMinVolumeBytes) {
    return fail(ErrorKind::InvalidInput, "disk size {} MiB is too small; use at least {} MiB", size_bytes >> 20,
                kMinVolumeBytes >> 20);
  }
  std::error_code ec;
  if (fs::exists(fs::symlink_status(image_file, ec))) {
    return fail(ErrorKind::Conflict, "disk image {} already exists", image_file.string());
  }
  if (auto ctl = open_loop_control(); !ctl) return std::unexpected(ctl.error());
  if (!fs::is_directory(image_file.parent_path(), ec)) {
    return fail(ErrorKind::NotFound, "cannot create disk image {}: its directory does not exist", image_file.string());
  }
  fs::path tmp = image_file.parent_path() / fmt::format(".{}.new-{}", image_file.filename().string(), random_hex_id(4));
  if (auto st = make_volume_file(tmp, size_bytes, template_dir); !st) return st;
  PathCleanup remove_tmp(tmp, false);
  if (::rename(tmp.c_str(), image_file.c_str()) != 0)
    return fail(ErrorKind::Internal, "cannot move {} into place: {}", image_file.string(), strerror(errno));
  remove_tmp.release();
  UniqueFd dir(open(image_file.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) (void)fsync(dir.get());  // the rename, durable like the file
  return {};
}

Status prepare_volume(const fs::path& mount_point, uint32_t owner_uid, uint32_t owner_gid) {
  UniqueFd root(open(mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root) return fail(ErrorKind::Internal, "cannot open {}: {}", mount_point.string(), strerror(errno));
  for (auto [name, mode] : {std::pair{".", 0755}, {"upper", 0755}, {"work", 0755}, {"workspace", 0755}, {"run", 0700}}) {
    fs::path p = mount_point / name;
    struct stat st {};
    if (fstatat(root.get(), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) return fail(ErrorKind::Internal, "cannot stat {}: {}", p.string(), strerror(errno));
      // A volume made before the layout was part of its file system, or a directory removed by hand.
      if (mkdirat(root.get(), name, static_cast<mode_t>(mode)) != 0 && errno != EEXIST)
        return fail(ErrorKind::Internal, "cannot create {}: {}", p.string(), strerror(errno));
      st.st_uid = st.st_gid = 0;
      st.st_mode = S_IFDIR;
    }
    // Host root owns only what is fresh from create_volume: the sandbox's root is mapped to owner_uid and
    // can never make a file the host's root's, so whatever the sandbox has re-owned since is left alone.
    // Anything but a directory is not ours to fix (mounting refuses it later).
    if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || st.st_gid != 0 || (owner_uid == 0 && owner_gid == 0)) continue;
    int fd = std::string_view(name) == "." ? dup(root.get())
                                            : openat(root.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fail(ErrorKind::Internal, "cannot open {}: {}", p.string(), strerror(errno));
    UniqueFd dir(fd);
    if (fchown(dir.get(), owner_uid, owner_gid) != 0 || fchmod(dir.get(), static_cast<mode_t>(mode)) != 0)
      return fail(ErrorKind::Internal, "cannot set owner of {}: {}", p.string(), strerror(errno));
  }
  return {};
}

Status mount_volume(const fs::path& image_file, const fs::path& mount_point) {
  UniqueFd file(open(image_file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!file) {
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Internal, "cannot open disk image {}: {}",
                image_file.string(), strerror(errno));
  }
  // The same ext4 mounted twice through two loop devices would be corrupted: refuse. An open file
  // description lock on the image marks it attached: the loop device holds this very open file (and so
  // the lock) until it detaches, so a second attach finds it taken, and no scan of every loop device on
  // the host (milliseconds with hundreds of them) is needed. A loop device whose mount just went away
  // detaches asynchronously (autoclear runs after the last close), so give it a moment.
  struct flock attached {};
  attached.l_type = F_WRLCK;
  attached.l_whence = SEEK_SET;
  for (int i = 0; fcntl(file.get(), F_OFD_SETLK, &attached) != 0; ++i) {
    if (errno != EAGAIN && errno != EACCES && errno != EINTR)
      return fail(ErrorKind::Internal, "cannot lock disk image {}: {}", image_file.string(), strerror(errno));
    if (i == 400) {
      auto loops = loop_devices_for(image_file);
      return fail(ErrorKind::Conflict, "disk image {} is already attached to {}; unmount it first", image_file.string(),
                  loops && !loops->empty() ? loops->front() : std::string("a loop device"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a detach takes a few ms: look often
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

namespace {

// Whether a loop device's backing_file text (from sysfs) names `image_file` (or its canonical path).
bool backed_by(const std::string& backing_text, const fs::path& image_file, const fs::path& canonical) {
  std::string b = trim(backing_text);
  if (b.ends_with(" (deleted)")) b.resize(b.size() - 10);
  return b == canonical.string() || b == image_file.string();
}

fs::path canonical_or_same(const fs::path& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(p, ec);
  return ec ? p : c;
}

}  // namespace

Result<dev_t> volume_device(const fs::path& mount_point, const fs::path& image_file) {
  struct stat st {};
  if (::stat(mount_point.c_str(), &st) != 0)
    return fail(ErrorKind::Internal, "cannot stat {}: {}", mount_point.string(), strerror(errno));
  auto backing = read_file(fmt::format("/sys/dev/block/{}:{}/loop/backing_file", major(st.st_dev), minor(st.st_dev)));
  if (!backing || !backed_by(*backing, image_file, canonical_or_same(image_file)))
    return fail(ErrorKind::Internal, "{} is on device {}:{}, which is not a loop device of {}; restart moatd to reconcile",
                mount_point.string(), major(st.st_dev), minor(st.st_dev), image_file.string());
  return st.st_dev;
}

Result<std::vector<std::string>> loop_devices_for(const fs::path& image_file) {
  fs::path want = canonical_or_same(image_file);
  std::error_code ec;
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/sys/block", ec)) {
    std::string n = e.path().filename().string();
    if (!n.starts_with("loop")) continue;
    auto backing = read_file(e.path() / "loop" / "backing_file");
    if (!backing) continue;  // not bound
    if (backed_by(*backing, image_file, want)) out.push_back("/dev/" + n);
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
