// A sandbox's storage on real loop devices, real mkfs.ext4 and real idmapped overlay mounts (needs root).
// Every test works in its own temp dir and compares mounts and loop devices before and after.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "base/fs.h"
#include "base/ids.h"
#include "base/subprocess.h"
#include "image/image_store.h"
#include "sandbox/storage/mounts.h"
#include "sandbox/storage/rootfs.h"
#include "sandbox/storage/volume.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using moat::ErrorKind;
using moat::testing::TempDir;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint32_t kCount = 65536;

// A uid range of our own, so parallel tests never share one.
uint32_t pick_uid_base() { return 1000000u + static_cast<uint32_t>(std::stoul(moat::random_hex_id(1), nullptr, 16)) * kCount; }

std::vector<std::string> mounts(const fs::path& dir) {
  auto m = moat::mounts_under(dir);
  EXPECT_TRUE(m) << m.error().message;
  return m ? *m : std::vector<std::string>{};
}

std::string slurp(const fs::path& p) {
  auto s = moat::read_file(p);
  return s ? *s : "<missing>";
}

// The loop device is released asynchronously after the last reference goes; give it a moment.
bool loops_released(const fs::path& image) {
  for (int i = 0; i < 200; ++i) {
    auto l = moat::loop_devices_for(image);
    if (l && l->empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Runs `fn` in a child process with uid and gid `id` (and no supplementary groups); returns its exit code.
int run_as(uint32_t id, const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0 || setresuid(id, id, id) != 0) _exit(100);
    _exit(fn());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

int create_file(const fs::path& p) {
  int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) return errno;
  (void)!write(fd, "x\n", 2);
  close(fd);
  return 0;
}

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    uid_ = pick_uid_base();
    img_ = dir_ / "disk.img";
    vol_ = dir_ / "volume";
    fs::create_directories(vol_);
  }
  void TearDown() override {
    // Whatever a failed assertion left mounted goes before TempDir removes the tree.
    auto m = moat::mounts_under(dir_.path());
    if (m) {
      for (auto it = m->rbegin(); it != m->rend(); ++it) umount2(it->c_str(), MNT_DETACH);
    }
  }

  TempDir dir_{"moat-storage"};
  uint32_t uid_ = 0;
  fs::path img_, vol_;
};

TEST_F(StorageTest, VolumeIsCappedAndFreesItsLoopDevice) {
  ASSERT_TRUE(mounts(dir_.path()).empty());

  auto st = moat::create_volume(img_, 64 * kMiB);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(fs::file_size(img_), 64 * kMiB);
  EXPECT_LT(*moat::volume_allocated_bytes(img_), 8 * kMiB) << "a fresh volume is sparse";
  EXPECT_TRUE(mounts(dir_.path()).empty()) << "create_volume leaves it unmounted";
  EXPECT_TRUE(loops_released(img_));

  ASSERT_TRUE(moat::mount_volume(img_, vol_));
  EXPECT_EQ(mounts(dir_.path()), std::vector<std::string>{vol_.string()});
  auto loops = moat::loop_devices_for(img_);
  ASSERT_TRUE(loops);
  EXPECT_EQ(loops->size(), 1u);
  // Mounting the same disk twice would corrupt it.
  fs::create_directories(dir_ / "other");
  auto twice = moat::mount_volume(img_, dir_ / "other");
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().kind, ErrorKind::Conflict);

  // The layout is there from the start, the host root's until prepare_volume gives it away.
  struct stat s {};
  for (auto d : {"upper", "work", "workspace", "run"}) {
    ASSERT_EQ(stat((vol_ / d).c_str(), &s), 0) << d;
    EXPECT_EQ(s.st_uid, 0u) << d;
  }
  ASSERT_TRUE(moat::prepare_volume(vol_, uid_, uid_ + 1));
  ASSERT_EQ(stat(vol_.c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_);
  for (auto [d, mode] : {std::pair{"upper", 0755u}, {"work", 0755u}, {"workspace", 0755u}, {"run", 0700u}}) {
    ASSERT_EQ(stat((vol_ / d).c_str(), &s), 0) << d;
    EXPECT_EQ(s.st_uid, uid_) << d;
    EXPECT_EQ(s.st_gid, uid_ + 1) << d;
    EXPECT_EQ(s.st_mode & 07777, mode) << d;
  }
  // What the sandbox changed since is its own business: a second prepare leaves it alone.
  ASSERT_EQ(chown((vol_ / "workspace").c_str(), uid_ + 1000, uid_ + 1000), 0);
  ASSERT_EQ(chmod((vol_ / "workspace").c_str(), 0711), 0);
  ASSERT_TRUE(moat::prepare_volume(vol_, uid_, uid_ + 1));
  ASSERT_EQ(stat((vol_ / "workspace").c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_ + 1000);
  EXPECT_EQ(s.st_mode & 07777, 0711u);

  // Fill it: the write stops at the cap with ENOSPC, and the host pays at most the cap.
  std::ofstream(vol_ / "workspace" / "keep.txt") << "persistent\n";
  int fd = open((vol_ / "workspace" / "fill").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  std::string chunk(kMiB, 'z');
  uint64_t written = 0;
  int err = 0;
  for (;;) {
    ssize_t n = write(fd, chunk.data(), chunk.size());
    if (n < 0) {
      err = errno;
      break;
    }
    written += static_cast<uint64_t>(n);
    ASSERT_LT(written, 128 * kMiB) << "writes went past the cap";
  }
  if (err == 0 || fsync(fd) != 0) err = err ? err : errno;
  close(fd);
  EXPECT_EQ(err, ENOSPC);
  EXPECT_GT(written, 40 * kMiB);
  EXPECT_LE(written, 64 * kMiB);
  auto allocated = *moat::volume_allocated_bytes(img_);
  EXPECT_LE(allocated, 64 * kMiB);
  // What the host lost is the image file's allocated blocks, checked above; the host's free space as
  // a whole is not a measure of it while other tests write beside this one.
  // Deleting inside hands the blocks back to the host (discard punches holes in the sparse file).
  fs::remove(vol_ / "workspace" / "fill");
  int vfd = open(vol_.c_str(), O_RDONLY | O_DIRECTORY);
  syncfs(vfd);
  close(vfd);
  bool shrank = false;
  for (int i = 0; i < 100 && !shrank; ++i) {
    shrank = *moat::volume_allocated_bytes(img_) < allocated / 2;
    if (!shrank) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(shrank) << "allocated " << *moat::volume_allocated_bytes(img_);

  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(mounts(dir_.path()).empty());
  EXPECT_TRUE(loops_released(img_)) << "autoclear frees the loop device on unmount";
  ASSERT_TRUE(moat::unmount(vol_)) << "unmounting what is not mounted is fine";

  // Persistent: mounted again, the workspace is still there.
  ASSERT_TRUE(moat::mount_volume(img_, vol_));
  EXPECT_EQ(slurp(vol_ / "workspace" / "keep.txt"), "persistent\n");
  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(loops_released(img_));
}

TEST_F(StorageTest, CreateVolumeFailuresLeaveNothingBehind) {
  auto small = moat::create_volume(img_, 1 * kMiB);
  ASSERT_FALSE(small);
  EXPECT_EQ(small.error().kind, ErrorKind::InvalidInput);
  EXPECT_FALSE(fs::exists(img_));

  auto no_dir = moat::create_volume(dir_ / "missing" / "disk.img", 64 * kMiB);
  ASSERT_FALSE(no_dir);
  EXPECT_FALSE(fs::exists(dir_ / "missing"));

  std::ofstream(img_) << "precious";
  auto exists = moat::create_volume(img_, 64 * kMiB);
  ASSERT_FALSE(exists);
  EXPECT_EQ(exists.error().kind, ErrorKind::Conflict);
  EXPECT_EQ(slurp(img_), "precious");
  fs::remove(img_);

  // A failing mkfs.ext4: one clear error and no file.
  fs::create_directories(dir_ / "fakebin");
  std::ofstream(dir_ / "fakebin" / "mkfs.ext4") << "#!/bin/sh\necho 'mkfs.ext4: simulated failure' >&2\nexit 1\n";
  fs::permissions(dir_ / "fakebin" / "mkfs.ext4", fs::perms(0755));
  std::string old_path = getenv("PATH");
  setenv("PATH", (dir_ / "fakebin").c_str(), 1);
  auto bad_mkfs = moat::create_volume(img_, 64 * kMiB);
  setenv("PATH", old_path.c_str(), 1);
  ASSERT_FALSE(bad_mkfs);
  EXPECT_EQ(bad_mkfs.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(bad_mkfs.error().message.find("simulated failure"), std::string::npos) << bad_mkfs.error().message;
  EXPECT_FALSE(fs::exists(img_));

  auto not_there = moat::mount_volume(dir_ / "nope.img", vol_);
  ASSERT_FALSE(not_there);
  EXPECT_EQ(not_there.error().kind, ErrorKind::NotFound);
  EXPECT_TRUE(mounts(dir_.path()).empty());
  // Only the fake bin dir and the volume mount point remain.
  size_t n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir_.path())) ++n;
  EXPECT_EQ(n, 2u);
}

TEST_F(StorageTest, TenGiBVolumeIsQuickAndSparse) {
  auto t0 = std::chrono::steady_clock::now();
  auto st = moat::create_volume(img_, 10ull << 30);
  ASSERT_TRUE(st) << st.error().message;
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(moat::mount_volume(img_, vol_));
  auto t2 = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto allocated = *moat::volume_allocated_bytes(img_);
  fmt::print("  10 GiB volume: create (mkfs + layout) {:.0f} ms, mount {:.1f} ms, allocated {:.1f} MiB\n", ms(t1 - t0),
             ms(t2 - t1), allocated / double(kMiB));
  EXPECT_LT(allocated, 160 * kMiB);
  auto free = moat::free_bytes(vol_);
  ASSERT_TRUE(free);
  EXPECT_GT(*free, 9ull << 30);
  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(loops_released(img_));
}

// Run a program and return its stdout ("" when it fails).
std::string output_of(const std::vector<std::string>& argv) {
  auto r = moat::run_process(argv);
  return r && r->ok() ? r->out : std::string();
}

TEST_F(StorageTest, VolumesFromATemplateAreWholeAndTheirOwn) {
  fs::path templates = dir_ / "templates";
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(moat::create_volume(img_, 10ull << 30, templates));  // makes the template
  auto t1 = std::chrono::steady_clock::now();
  fs::path second = dir_ / "second.img";
  ASSERT_TRUE(moat::create_volume(second, 10ull << 30, templates));  // copies it
  auto t2 = std::chrono::steady_clock::now();
  fmt::print("  10 GiB volume: first (mkfs of the template + copy) {:.0f} ms, next (copy) {:.0f} ms\n", ms(t1 - t0),
             ms(t2 - t1));
  size_t n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(templates)) ++n;
  EXPECT_EQ(n, 1u) << "one template per size, nothing else left there";
  EXPECT_EQ(fs::file_size(second), 10ull << 30);
  EXPECT_LT(*moat::volume_allocated_bytes(second), 160 * kMiB) << "a copy stays sparse";

  // Each copy is a sound file system (every superblock copy checks out) with a UUID of its own.
  auto uuid = [](const fs::path& img, const char* superblock = "0") {
    auto out = output_of({"dumpe2fs", "-h", "-o", fmt::format("superblock={}", superblock), "-o", "blocksize=4096", img.string()});
    auto at = out.find("Filesystem UUID:");
    return at == std::string::npos ? std::string() : out.substr(at, out.find('\n', at) - at);
  };
  EXPECT_NE(uuid(img_), "");
  EXPECT_NE(uuid(img_), uuid(second));
  for (const auto& img : {img_, second}) {
    auto fsck = moat::run_process({"e2fsck", "-fn", img.string()});
    ASSERT_TRUE(fsck);
    EXPECT_TRUE(fsck->ok()) << img << ":\n" << fsck->out << fsck->err;
    // The backup superblocks carry the same identity (dumpe2fs refuses one whose checksum is wrong).
    for (auto backup : {"32768", "98304", "1605632"}) EXPECT_EQ(uuid(img, backup), uuid(img)) << img << " at " << backup;
  }

  // And it mounts, with the layout, like a fresh one.
  ASSERT_TRUE(moat::mount_volume(second, vol_));
  ASSERT_TRUE(moat::prepare_volume(vol_, uid_, uid_));
  struct stat s {};
  ASSERT_EQ(stat((vol_ / "run").c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_);
  EXPECT_EQ(s.st_mode & 07777, 0700u);
  std::ofstream(vol_ / "workspace" / "x") << "x\n";
  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(loops_released(second));
  auto fsck = moat::run_process({"e2fsck", "-fn", second.string()});
  ASSERT_TRUE(fsck);
  EXPECT_TRUE(fsck->ok()) << fsck->out << fsck->err;
}

TEST_F(StorageTest, IdmappedOverlayRootKeepsTheImageUntouched) {
  // A busybox image through the real image store (0755 blob, root-owned files).
  auto tarball = dir_ / "busybox.tar.gz";
  moat::testing::make_busybox_tarball(tarball);
  auto store = moat::image::ImageStore::open(dir_ / "images");
  ASSERT_TRUE(store);
  auto image = store->import_tarball("busybox", tarball);
  ASSERT_TRUE(image) << image.error().message;
  fs::path image_root = store->rootfs_path(*image);
  std::string passwd_before = slurp(image_root / "etc/passwd");

  ASSERT_TRUE(moat::create_volume(img_, 64 * kMiB));
  ASSERT_TRUE(moat::mount_volume(img_, vol_));
  fs::path lower = dir_ / "lower", target = dir_ / "rootfs";
  auto t0 = std::chrono::steady_clock::now();
  auto st = moat::mount_rootfs(image_root, vol_, uid_, kCount, lower, target);
  ASSERT_TRUE(st) << st.error().message;
  fmt::print("  mount_rootfs: {:.1f} ms\n",
             std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_EQ(mounts(dir_.path()), (std::vector<std::string>{lower.string(), target.string(), vol_.string()}));

  struct stat s {};
  ASSERT_EQ(stat((target / "bin/busybox").c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_) << "image files belong to the sandbox's root";
  EXPECT_EQ(s.st_gid, uid_);
  ASSERT_EQ(stat(target.c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_) << "the sandbox's root owns /";
  EXPECT_EQ(s.st_mode & 07777, 0755u);
  ASSERT_EQ(stat((image_root / "bin/busybox").c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, 0u) << "the image itself stays root-owned";
  EXPECT_EQ(create_file(lower / "etc" / "x"), EROFS) << "the idmapped lower layer is read-only";

  // The sandbox's root (uid_base on the host) may change its root file system, including image dirs...
  EXPECT_EQ(run_as(uid_, [&] { return create_file(target / "etc" / "agent-file"); }), 0);
  EXPECT_EQ(run_as(uid_, [&] { return create_file(target / "usr/local/bin" / "tool"); }), 0);
  EXPECT_EQ(run_as(uid_, [&] { return unlink((target / "bin/ls").c_str()) == 0 ? 0 : errno; }), 0);
  // ...a host user outside its range may not.
  EXPECT_EQ(run_as(uid_ + kCount + 7, [&] { return create_file(target / "etc" / "intruder"); }), EACCES);
  { std::ofstream(target / "etc/passwd", std::ios::app) << "agent:x:1000:1000::/workspace:/bin/sh\n"; }

  // Every change went to the upper layer; the image is untouched.
  EXPECT_EQ(slurp(image_root / "etc/passwd"), passwd_before);
  EXPECT_TRUE(fs::exists(fs::symlink_status(image_root / "bin/ls")));
  EXPECT_FALSE(fs::exists(image_root / "etc/agent-file"));
  ASSERT_EQ(stat((vol_ / "upper/etc/agent-file").c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_);
  ASSERT_EQ(lstat((vol_ / "upper/bin/ls").c_str(), &s), 0);
  EXPECT_TRUE(S_ISCHR(s.st_mode) && s.st_rdev == makedev(0, 0)) << "deletion is a whiteout in upper";
  EXPECT_FALSE(fs::exists(fs::symlink_status(target / "bin/ls")));

  // Reset is refused while the overlay is mounted.
  auto busy = moat::reset_upper(vol_, uid_);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().kind, ErrorKind::Conflict);

  // Persistent across unmount/mount of everything.
  ASSERT_TRUE(moat::unmount_rootfs(lower, target));
  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(mounts(dir_.path()).empty());
  EXPECT_TRUE(loops_released(img_));
  ASSERT_TRUE(moat::mount_volume(img_, vol_));
  ASSERT_TRUE(moat::mount_rootfs(image_root, vol_, uid_, kCount, lower, target));
  EXPECT_TRUE(fs::exists(target / "usr/local/bin/tool"));
  EXPECT_NE(slurp(target / "etc/passwd").find("agent:x:1000"), std::string::npos);
  std::ofstream(vol_ / "workspace" / "notes.md") << "kept\n";

  // Reset drops the writable layer, keeps the workspace.
  ASSERT_TRUE(moat::unmount_rootfs(lower, target));
  ASSERT_TRUE(moat::reset_upper(vol_, uid_));
  ASSERT_TRUE(moat::mount_rootfs(image_root, vol_, uid_, kCount, lower, target));
  EXPECT_FALSE(fs::exists(target / "usr/local/bin/tool"));
  EXPECT_FALSE(fs::exists(target / "etc/agent-file"));
  EXPECT_TRUE(fs::exists(fs::symlink_status(target / "bin/ls")));
  EXPECT_EQ(slurp(target / "etc/passwd"), passwd_before);
  EXPECT_EQ(slurp(vol_ / "workspace" / "notes.md"), "kept\n");
  ASSERT_EQ(stat(target.c_str(), &s), 0);
  EXPECT_EQ(s.st_uid, uid_);

  // An image in use cannot be removed from under the mount's feet by the store's own rules (the caller's
  // in_use answers), and the mounted tree keeps working.
  ASSERT_TRUE(moat::unmount_rootfs(lower, target));
  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(mounts(dir_.path()).empty());
  EXPECT_TRUE(loops_released(img_));
}

TEST_F(StorageTest, FailedRootfsMountRollsBack) {
  TempDir image("moat-storage-img");
  moat::testing::make_busybox_rootfs(image.path());
  ASSERT_TRUE(moat::create_volume(img_, 64 * kMiB));
  ASSERT_TRUE(moat::mount_volume(img_, vol_));
  auto before = mounts(dir_.path());
  fs::path lower = dir_ / "lower", target = dir_ / "rootfs";

  // work/ inside upper/: overlay refuses it, after the idmapped lower was mounted.
  fs::remove(vol_ / "work");
  fs::create_directories(vol_ / "upper" / "w");
  fs::create_directory_symlink(vol_ / "upper" / "w", vol_ / "work");
  auto st = moat::mount_rootfs(image.path(), vol_, uid_, kCount, lower, target);
  ASSERT_FALSE(st);
  EXPECT_EQ(mounts(dir_.path()), before) << st.error().message;

  // Missing image, missing upper: refused before anything is mounted.
  EXPECT_EQ(moat::mount_rootfs(dir_ / "no-image", vol_, uid_, kCount, lower, target).error().kind,
            ErrorKind::NotFound);
  EXPECT_EQ(moat::mount_rootfs(image.path(), dir_ / "no-volume", uid_, kCount, lower, target).error().kind,
            ErrorKind::NotFound);
  EXPECT_EQ(mounts(dir_.path()), before);

  // Mounting over an existing root is a Conflict, and leaves the first one alone.
  fs::remove(vol_ / "work");
  fs::create_directory(vol_ / "work");
  ASSERT_TRUE(moat::mount_rootfs(image.path(), vol_, uid_, kCount, lower, target));
  auto mounted = mounts(dir_.path());
  auto again = moat::mount_rootfs(image.path(), vol_, uid_, kCount, lower, target);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, ErrorKind::Conflict);
  EXPECT_EQ(mounts(dir_.path()), mounted);
  ASSERT_TRUE(moat::unmount_rootfs(lower, target));
  EXPECT_EQ(mounts(dir_.path()), before);
  ASSERT_TRUE(moat::unmount(vol_));
  EXPECT_TRUE(loops_released(img_));
}

TEST_F(StorageTest, MountsUnderUnescapesAndFollowsTheCallersSpelling) {
  fs::path odd = dir_ / "a b\\c";
  fs::create_directories(odd);
  ASSERT_EQ(mount("tmpfs", odd.c_str(), "tmpfs", 0, "size=1m"), 0) << strerror(errno);
  moat::MountGuard guard(odd);
  EXPECT_EQ(mounts(dir_.path()), std::vector<std::string>{odd.string()});
  fs::path link = dir_.path().string() + "-link";
  fs::create_directory_symlink(dir_.path(), link);
  EXPECT_EQ(mounts(link), std::vector<std::string>{(link / "a b\\c").string()});
  fs::remove(link);
  {
    moat::MountGuard released(odd);
    released.release();
  }
  EXPECT_EQ(mounts(dir_.path()).size(), 1u) << "a released guard unmounts nothing";
  {
    // Busy: detached lazily, and gone from the tree at once.
    int fd = open((odd / "f").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    guard = moat::MountGuard();  // unmounts (lazily: fd keeps it busy)
    EXPECT_TRUE(mounts(dir_.path()).empty());
    close(fd);
  }
}


// The helper that makes an idmapped mount's user namespace is a clone of moatd. If moatd is killed
// while one exists, the helper must die too and must not keep moatd's files open: it once survived
// a SIGKILL holding the state directory's lock, and every later moatd was refused.
TEST(IdmapHelper, DiesWithItsMakerAndHoldsNoneOfItsFiles) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  TempDir dir("moat-idmap-helper");
  auto lock = dir / "lock";
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come to us, so we can see them
  int orphans = 0, locked = 0;
  for (int round = 0; round < 30; ++round) {
    pid_t maker = fork();
    ASSERT_GE(maker, 0);
    if (maker == 0) {
      int fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(2);
      // Several makers at once, so that a helper almost always exists when the kill lands.
      for (int t = 0; t < 3; ++t)
        std::thread([] {
          for (;;) (void)moat::make_idmap_userns(pick_uid_base(), kCount);
        }).detach();
      for (;;) (void)moat::make_idmap_userns(pick_uid_base(), kCount);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + round * 3));
    kill(maker, SIGKILL);
    ASSERT_EQ(waitpid(maker, nullptr, 0), maker);
    // Whatever the maker left reparents to us: reap the dead, count the living.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    for (auto& e : fs::directory_iterator("/proc")) {
      auto stat = moat::read_file(e.path() / "stat");
      if (!stat) continue;
      auto close_paren = stat->rfind(')');
      if (close_paren == std::string::npos) continue;
      int ppid = 0;
      char state = 0;
      if (std::sscanf(stat->c_str() + close_paren + 1, " %c %d", &state, &ppid) == 2 && ppid == getpid() && state != 'Z') {
        ++orphans;
        kill(std::stoi(e.path().filename()), SIGKILL);
      }
    }
    int fd = open(lock.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) ++locked;
    close(fd);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  EXPECT_EQ(orphans, 0) << "idmap helpers outlived the process that made them";
  EXPECT_EQ(locked, 0) << "a dead maker's lock was still held (by its helper's copy of the fd)";
}

}  // namespace
