// The hostile agent tries to get out: every escape it tries from inside a real sandbox must fail,
// on every runtime tier (runc, runsc; crun where the host allows it). moat-probe makes the attempts
// (mount, namespaces, ptrace, modules, kernel interfaces in /proc and /sys, cgroup release_agent,
// netlink, devices, bpf, perf, userfaultfd, io_uring, keyctl, reboot, clocks, the 32-bit ABI, the
// host-side moat-init binary through /proc/1/exe...); the tests check the host side too.
#include <sys/stat.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "support/hostile_sandbox.h"

using namespace moat;
using namespace moat::testing;

namespace {

class HostileEscape : public HostileSandbox {};

// The moat-init binaries sandboxes see at /.moat/init, by content hash.
std::map<std::string, std::string> init_binaries(const std::filesystem::path& state_dir) {
  std::map<std::string, std::string> out;
  for (auto& e : std::filesystem::directory_iterator(state_dir / "bin"))
    if (auto data = read_file(e.path())) out[e.path().filename()] = sha256_hex(*data);
  return out;
}

TEST_P(HostileEscape, EveryForbiddenOperationFails) {
  copy_probe();
  auto before = init_binaries(env_->state_dir());
  ASSERT_FALSE(before.empty());
  auto r = env_->moat({"exec", "box", "--", "/usr/local/bin/moat-probe", std::to_string(env_->daemon_pid())});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_GE(report_.add_probe_lines("escape", r.out), 50) << "moat-probe made fewer attempts than it has:\n" << r.out << r.err;
  // CVE-2019-5736 checked from the host: the binary every sandbox runs as PID 1 is unchanged.
  auto after = init_binaries(env_->state_dir());
  report_.add("escape", "overwrite the host's moat-init binary (CVE-2019-5736)",
              after == before ? "host binary unchanged" : "HOST BINARY CHANGED", after == before);
}

TEST_P(HostileEscape, HostProcessesAreInvisible) {
  auto ps = env_->ok({"exec", "box", "--", "ps", "-o", "pid,args"});
  bool hidden = ps.find("moatd") == std::string::npos && ps.find("systemd") == std::string::npos;
  auto count = std::stoi(env_->ok({"exec", "box", "--", "sh", "-c", "ls -d /proc/[0-9]* | wc -l"}));
  report_.add("reach", "list the host's processes",
              fmt::format("{} processes visible, {}", count, hidden ? "none of the host's" : "HOST PROCESSES VISIBLE"),
              hidden && count < 10);
}

TEST_P(HostileEscape, RootInsideIsAnUnprivilegedHostUser) {
  auto inspect = Json::parse(env_->ok({"--json", "sandbox", "inspect", "box"}));
  int64_t uid_base = inspect["uid_base"];
  ASSERT_GE(uid_base, 100000);
  EXPECT_EQ(env_->ok({"exec", "box", "--", "id", "-u"}), "0\n");
  env_->ok({"exec", "box", "--", "sh", "-c", "echo x > /root/owned-by-root"});
  // What root writes inside lands on the host owned by the sandbox's own unprivileged uid.
  struct stat st {};
  auto upper = env_->state_dir() / "sandboxes/box/volume/upper/root/owned-by-root";
  ASSERT_EQ(::stat(upper.c_str(), &st), 0) << upper;
  report_.add("escape", "root inside writes a file",
              fmt::format("lands on the host owned by uid {} (the sandbox's range starts at {})", st.st_uid, uid_base),
              static_cast<int64_t>(st.st_uid) == uid_base);
  if (GetParam() == "runc") {
    auto map = env_->ok({"exec", "box", "--", "cat", "/proc/self/uid_map"});
    EXPECT_NE(map.find(std::to_string(uid_base)), std::string::npos) << map;
    int pid = inspect["container"]["pid"];
    auto status = read_file(fmt::format("/proc/{}/status", pid));
    ASSERT_TRUE(status);
    bool mapped = status->find(fmt::format("Uid:\t{}", uid_base)) != std::string::npos;
    report_.add("escape", "run as host root", mapped ? fmt::format("PID 1 runs as host uid {}", uid_base) : *status, mapped);
  }
}

// The agent's part of runc's 2025 mount CVEs (CVE-2025-31133, -52565): runc bind-mounts the
// container's /dev/null over masked files and a pty over /dev/console while it creates the container;
// a /dev/null or /dev/console replaced by a link redirects those mounts onto host files. From inside,
// the agent plants such links (and tries its writable layer's /dev) and asks for a restart: /dev must
// come back a fresh tmpfs with a real null device, masked files must still read empty, and the
// host's core_pattern must be what it was.
TEST_P(HostileEscape, PlantedDeviceLinksDoNotSurviveARestart) {
  auto core_pattern = read_file("/proc/sys/kernel/core_pattern");
  ASSERT_TRUE(core_pattern);
  auto planted = sh("box",
                    "rm -f /dev/null /dev/console; ln -s /proc/sys/kernel/core_pattern /dev/null; "
                    "ln -s /proc/sysrq-trigger /dev/console; ls -l /dev/null /dev/console");
  report_.add("escape", "replace /dev/null and /dev/console with links to host procfs files (while running)",
              planted.out.find("->") != std::string::npos ? "planted inside the sandbox's own /dev" : planted.out + planted.err,
              true);
  env_->ok({"sandbox", "restart", "box"});
  auto null_dev = env_->ok({"exec", "box", "--", "stat", "-c", "%F %t:%T", "/dev/null"});
  report_.add("escape", "after a restart: is /dev/null still the planted link (CVE-2025-31133's precondition)?",
              "/dev/null is: " + null_dev.substr(0, null_dev.find('\n')), null_dev == "character special file 1:3\n");
  auto console = sh("box", "test -L /dev/console && echo LINK || echo 'no link'");
  report_.add("escape", "after a restart: is /dev/console still the planted link (CVE-2025-52565's precondition)?",
              console.out.substr(0, console.out.find('\n')), console.out == "no link\n");
  auto kcore = sh("box", "wc -c < /proc/kcore");
  report_.add("escape", "after a restart: read the masked /proc/kcore",
              kcore.code == 0 ? "read " + kcore.out.substr(0, kcore.out.find('\n')) + " bytes"
                              : "refused: " + kcore.err.substr(0, kcore.err.find('\n')),
              kcore.out == "0\n" || kcore.code != 0);
  auto after = read_file("/proc/sys/kernel/core_pattern");
  report_.add("escape", "host core_pattern after the restart", after && *after == *core_pattern ? "unchanged" : "CHANGED",
              after && *after == *core_pattern);
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileEscape);

}  // namespace
