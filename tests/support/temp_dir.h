#pragma once
// Test helpers that are real things: a temp directory removed at scope exit, and a tiny busybox
// root file system (dir or tarball) so tests of real runtimes stay fast.
#include <filesystem>
#include <string>

namespace moat::testing {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "moat-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view sub) const { return path_ / sub; }

 private:
  std::filesystem::path path_;
};

// Fills `dir` with a minimal root: /bin/busybox (static) plus applet links for common tools,
// and the empty directories a runtime mounts over (proc, sys, dev, tmp, etc, workspace).
void make_busybox_rootfs(const std::filesystem::path& dir);

// Writes a gzip tarball of make_busybox_rootfs() to `tarball`.
void make_busybox_tarball(const std::filesystem::path& tarball);

// Skips the current test with a clear message unless running as root (mounts, loop devices, runc).
#define MOAT_REQUIRE_ROOT()                                                   \
  do {                                                                        \
    if (geteuid() != 0) GTEST_SKIP() << "needs root (mounts, loop devices)"; \
  } while (0)

}  // namespace moat::testing
