#include "support/temp_dir.h"

#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

#include "base/subprocess.h"

namespace moat::testing {

TempDir::TempDir(std::string_view prefix) {
  std::string tmpl = fmt::format("/tmp/{}-XXXXXX", prefix);
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
  std::filesystem::permissions(path_, std::filesystem::perms(0755));
}

TempDir::~TempDir() {
  // Detach anything a failed test left mounted beneath us so removal never crosses into it.
  run_process({"sh", "-c", fmt::format("grep -o ' {}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l", path_.string())});
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void make_busybox_rootfs(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  for (auto d : {"bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root", "workspace", "run",
                 "var/tmp", "usr/local/bin"})
    fs::create_directories(dir / d);
  fs::copy_file("/bin/busybox", dir / "bin/busybox", fs::copy_options::overwrite_existing);
  auto list = run_checked({"/bin/busybox", "--list"});
  if (!list) throw std::runtime_error(list.error().message);
  size_t pos = 0;
  std::string_view names = *list;
  while (pos < names.size()) {
    auto nl = names.find('\n', pos);
    std::string name(names.substr(pos, nl - pos));
    pos = nl == std::string_view::npos ? names.size() : nl + 1;
    if (name.empty() || name == "busybox") continue;
    std::error_code ec;
    fs::create_symlink("busybox", dir / "bin" / name, ec);
  }
  std::ofstream(dir / "etc/passwd") << "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
  std::ofstream(dir / "etc/group") << "root:x:0:\nnogroup:x:65534:\n";
  fs::permissions(dir / "tmp", fs::perms(01777));
}

void make_busybox_tarball(const std::filesystem::path& tarball) {
  TempDir root("moat-busybox");
  make_busybox_rootfs(root.path());
  auto r = run_checked({"tar", "-C", root.path().string(), "-czf", tarball.string(), "--numeric-owner", "--owner=0",
                        "--group=0", "."});
  if (!r) throw std::runtime_error(r.error().message);
}

}  // namespace moat::testing
