// Real runtimes (runc, runsc; crun where the host allows it) running a busybox root with the full
// hardened spec: lifecycle, host-side view of uids and cgroup limits, and containment as seen from
// inside. The same assertions run on every runtime.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "base/fs.h"
#include "base/ids.h"
#include "base/subprocess.h"
#include "sandbox/oci/runtime.h"
#include "sandbox/oci/spec.h"
#include "support/temp_dir.h"

namespace moat::oci {
// So gtest (and ctest's list) names the runtime instead of dumping its bytes.
void PrintTo(RuntimeKind kind, std::ostream* os) { *os << runtime_name(kind); }

namespace {

namespace fs = std::filesystem;
using moat::testing::TempDir;
using Clock = std::chrono::steady_clock;

constexpr long kCgroup2Magic = 0x63677270;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Each test its own host uid range, like each sandbox in production.
uint32_t random_uid_base() {
  std::random_device rd;
  return 1'000'000 + (rd() % 4000) * 65536;
}

bool cgroup_v2_only() {
  struct statfs st {};
  return statfs("/sys/fs/cgroup", &st) == 0 && st.f_type == kCgroup2Magic;
}

// The file of a controller for a cgroup path ("/moat-test/x"), on a v1 (per-controller hierarchies)
// or a v2 (unified) host.
fs::path cgroup_file(std::string_view controller, const std::string& cg_path, std::string_view v1_file,
                     std::string_view v2_file) {
  if (cgroup_v2_only()) return fs::path("/sys/fs/cgroup") / cg_path.substr(1) / v2_file;
  return fs::path("/sys/fs/cgroup") / controller / cg_path.substr(1) / v1_file;
}

std::string read_trimmed(const fs::path& p) {
  auto r = read_file(p);
  if (!r) return "<" + r.error().message + ">";
  std::string s = *r;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Host uid (real) of a process, from /proc/<pid>/status; -1 when unreadable.
long host_uid(pid_t pid, std::string_view field = "Uid:") {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(field)) return std::stol(line.substr(field.size()));
  return -1;
}

std::vector<pid_t> cgroup_pids(const std::string& cg_path) {
  std::vector<pid_t> pids;
  std::ifstream in(cgroup_file("pids", cg_path, "cgroup.procs", "cgroup.procs"));
  pid_t p;
  while (in >> p) pids.push_back(p);
  return pids;
}

bool any_cgroup_dir_left(const std::string& cg_path) {
  if (cgroup_v2_only()) return fs::exists(fs::path("/sys/fs/cgroup") / cg_path.substr(1));
  for (const auto& e : fs::directory_iterator("/sys/fs/cgroup")) {
    std::error_code ec;
    if (fs::exists(e.path() / cg_path.substr(1), ec)) return true;
  }
  return false;
}

// Removes the shared parent cgroup when the last test using it is done; busy = another test still runs.
void remove_parent_cgroup_if_empty(const std::string& cg_path) {
  auto parent = fs::path(cg_path).parent_path().string();
  if (parent.size() < 2) return;
  parent.erase(0, 1);
  if (cgroup_v2_only()) {
    ::rmdir((fs::path("/sys/fs/cgroup") / parent).c_str());
    return;
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/fs/cgroup", ec)) ::rmdir((e.path() / parent).c_str());
}

// A bundle with a busybox root owned by the sandbox's uid range (production shares one image through
// idmapped mounts instead) and a host directory bind-mounted at /out for results.
struct TestBundle {
  TempDir dir{"moat-oci"};
  fs::path bundle = dir.path() / "bundle";
  fs::path out = dir.path() / "out";
  SandboxSpec spec;

  TestBundle(std::string id, std::vector<std::string> args) {
    spec.id = std::move(id);
    spec.rootfs = bundle / "rootfs";
    spec.uid_base = random_uid_base();
    spec.args = std::move(args);
    spec.cgroup_path = "/moat-test/" + spec.id;
    spec.limits.memory_bytes = 256ull << 20;
    spec.limits.pids = 256;
    spec.limits.cpus = 0.5;
    spec.extra_mounts.push_back({"/out", out.string(), "bind", {}});
    fs::create_directories(spec.rootfs);
    fs::create_directories(out);
    moat::testing::make_busybox_rootfs(spec.rootfs);
    auto owner = fmt::format("{}:{}", spec.uid_base, spec.uid_base);
    auto r = run_checked({"chown", "-hR", owner, spec.rootfs.string(), out.string()});
    if (!r) throw std::runtime_error(r.error().message);
  }

  void write_config() const {
    auto r = write_file_atomic(bundle / "config.json", make_runtime_spec(spec).dump(2));
    if (!r) throw std::runtime_error(r.error().message);
  }
};

// Force-deletes the container whatever happened to the test.
struct ContainerGuard {
  const OciRuntime& runtime;
  std::string id;
  std::string cgroup_path;
  ~ContainerGuard() {
    (void)runtime.remove(id, true, cgroup_path);
    remove_parent_cgroup_if_empty(cgroup_path);
  }
};

std::string unique_id(std::string_view what) { return fmt::format("moat-t-{}-{}", what, random_hex_id(4)); }

Result<ContainerState> wait_for_status(const OciRuntime& rt, const std::string& id, std::string_view want,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    auto st = rt.state(id);
    if (!st || st->status == want || Clock::now() > deadline) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class OciRuntimeTest : public ::testing::TestWithParam<RuntimeKind> {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    auto probe = runtime_.probe();
    if (!probe) GTEST_SKIP() << runtime_name(GetParam()) << " cannot run here: " << probe.error().message;
  }
  bool is_gvisor() const { return GetParam() == RuntimeKind::Runsc; }

  // moat-init as runsc's newuidmap/newgidmap, as SandboxManager::prepare sets it up.
  static std::filesystem::path idmap_dir(const TempDir& state) {
    auto dir = state.path() / "runsc-idmap";
    std::filesystem::create_directories(dir);
    for (auto name : {"newuidmap", "newgidmap"}) std::filesystem::create_symlink(MOAT_BUILD_DIR "/moat-init", dir / name);
    return dir;
  }

  TempDir state_dir_{"moat-oci-state"};
  OciRuntime runtime_{GetParam(), state_dir_.path() / std::string(runtime_name(GetParam())), idmap_dir(state_dir_)};
};

TEST_P(OciRuntimeTest, LifecycleUidsAndCgroupLimits) {
  TestBundle b(unique_id("life"), {"/bin/sleep", "1000"});
  b.write_config();
  const auto& id = b.spec.id;
  ContainerGuard guard{runtime_, id, b.spec.cgroup_path};

  auto t0 = Clock::now();
  auto created = runtime_.create(id, b.bundle);
  double create_ms = ms_since(t0);
  ASSERT_TRUE(created) << created.error().message;
  auto st = runtime_.state(id);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(st->status, "created");
  EXPECT_TRUE(fs::exists(b.bundle / "init.pid"));

  t0 = Clock::now();
  auto started = runtime_.start(id);
  double start_ms = ms_since(t0);
  ASSERT_TRUE(started) << started.error().message;
  t0 = Clock::now();
  st = runtime_.state(id);
  double state_ms = ms_since(t0);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(st->status, "running");
  ASSERT_GT(st->pid, 0);

  auto ids = runtime_.list();
  ASSERT_TRUE(ids) << ids.error().message;
  ASSERT_TRUE(ids->contains(id));
  EXPECT_EQ(ids->at(id).status, "running");
  EXPECT_EQ(ids->at(id).pid, st->pid);

  // Root inside is an unprivileged user outside.
  auto pids = cgroup_pids(b.spec.cgroup_path);
  ASSERT_FALSE(pids.empty()) << "no process in the container's cgroup " << b.spec.cgroup_path;
  std::map<pid_t, long> uids;
  for (pid_t p : pids) uids[p] = host_uid(p);
  for (auto [p, uid] : uids) {
    if (uid < 0) continue;  // exited meanwhile
    EXPECT_NE(uid, 0) << "pid " << p << " in the sandbox's cgroup runs as host root";
    EXPECT_NE(host_uid(p, "Gid:"), 0) << "pid " << p << " runs with host gid 0";
  }
  if (is_gvisor()) {
    // runsc: the state pid is the Sentry, which moat has runsc run as the sandbox's own nobody (not the
    // host's) in a user namespace of its own; the gofer (the only process touching the host file
    // system) runs as the sandbox's root.
    EXPECT_EQ(host_uid(st->pid), b.spec.uid_base + 65534);
    EXPECT_EQ(host_uid(st->pid, "Gid:"), b.spec.uid_base + 65534);
    EXPECT_TRUE(std::any_of(uids.begin(), uids.end(), [&](auto& kv) { return kv.second == b.spec.uid_base; }))
        << "no gofer running as the sandbox's uid base " << b.spec.uid_base;
  } else {
    EXPECT_EQ(host_uid(st->pid), b.spec.uid_base);
    EXPECT_EQ(host_uid(st->pid, "Gid:"), b.spec.uid_base);
  }
  EXPECT_EQ(read_trimmed(fmt::format("/proc/{}/oom_score_adj", st->pid)), std::to_string(kSandboxOomScoreAdj));

  // Limits are in the cgroup the runtime made.
  const auto& cg = b.spec.cgroup_path;
  EXPECT_EQ(read_trimmed(cgroup_file("memory", cg, "memory.limit_in_bytes", "memory.max")),
            std::to_string(256ull << 20));
  if (cgroup_v2_only())
    EXPECT_EQ(read_trimmed(cgroup_file("memory", cg, "", "memory.swap.max")), "0");
  else
    EXPECT_EQ(read_trimmed(cgroup_file("memory", cg, "memory.memsw.limit_in_bytes", "")),
              std::to_string(256ull << 20));
  EXPECT_EQ(read_trimmed(cgroup_file("pids", cg, "pids.max", "pids.max")), "256");
  if (cgroup_v2_only())
    EXPECT_EQ(read_trimmed(cgroup_file("cpu", cg, "", "cpu.max")), "50000 100000");
  else
    EXPECT_EQ(read_trimmed(cgroup_file("cpu", cg, "cpu.cfs_quota_us", "")), "50000");

  t0 = Clock::now();
  auto killed = runtime_.kill(id, SIGKILL);
  double kill_ms = ms_since(t0);
  ASSERT_TRUE(killed) << killed.error().message;
  st = wait_for_status(runtime_, id, "stopped");
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(st->status, "stopped");

  t0 = Clock::now();
  auto removed = runtime_.remove(id, false);
  double delete_ms = ms_since(t0);
  ASSERT_TRUE(removed) << removed.error().message;
  auto gone = runtime_.state(id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, ErrorKind::NotFound) << gone.error().message;
  EXPECT_FALSE(any_cgroup_dir_left(cg)) << "cgroup " << cg << " left behind";
  ids = runtime_.list();
  ASSERT_TRUE(ids) << ids.error().message;
  EXPECT_FALSE(ids->contains(id));

  std::cout << fmt::format("[timing] {}: create {:.1f} ms, start {:.1f} ms, state {:.1f} ms, kill {:.1f} ms, "
                           "delete {:.1f} ms\n",
                           runtime_name(GetParam()), create_ms, start_ms, state_ms, kill_ms, delete_ms);
}

// Runs a script as the container's PID 1 and returns its "key=value" lines from /out/result.
std::map<std::string, std::string> run_probe_script(const OciRuntime& rt, TestBundle& b) {
  std::map<std::string, std::string> results;
  b.write_config();
  ContainerGuard guard{rt, b.spec.id, b.spec.cgroup_path};
  auto created = rt.create(b.spec.id, b.bundle);
  EXPECT_TRUE(created) << created.error().message;
  if (!created) return results;
  auto started = rt.start(b.spec.id);
  EXPECT_TRUE(started) << started.error().message;
  if (!started) return results;
  auto st = wait_for_status(rt, b.spec.id, "stopped");
  EXPECT_TRUE(st && st->status == "stopped") << (st ? st->status : st.error().message);
  auto text = read_file(b.out / "result");
  EXPECT_TRUE(text) << text.error().message;
  if (!text) return results;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) results[line.substr(0, eq)] = line.substr(eq + 1);
  }
  if (results.size() < 3) ADD_FAILURE() << "probe output:\n" << *text;
  return results;
}

constexpr std::string_view kContainmentScript = R"SH(
exec > /out/result 2>/out/stderr
try() { k=$1; shift; if "$@" >/dev/null 2>&1; then echo "$k=allowed"; else echo "$k=denied"; fi; }
try mount mount -t tmpfs x /mnt
try unshare_user unshare -r true
try unshare_net unshare -n true
try unshare_mnt unshare -m true
try proc_sys sh -c 'echo evil > /proc/sys/kernel/hostname'
try sys_write sh -c 'echo 1 > /sys/kernel/mm/ksm/run'
try raw_socket ping -c 1 -W 1 127.0.0.1
try chroot chroot / true
try mknod mknod /sda b 8 0
echo "netdevs=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,)"
echo "links=$(ip -o link show | awk -F': ' '{print $2}' | sort | tr '\n' ,)"
echo "pid1=$(cat /proc/1/comm)"
echo "nprocs=$(ls -d /proc/[0-9]* | wc -l)"
echo "uid=$(id -u)"
echo "hostname=$(hostname)"
echo "kcore=$(wc -c < /proc/kcore)"
echo "nnp=$(grep NoNewPrivs /proc/self/status | awk '{print $2}')"
echo "done=yes"
)SH";

TEST_P(OciRuntimeTest, ContainmentSeenFromInside) {
  TestBundle b(unique_id("jail"), {"/bin/sh", "-c", std::string(kContainmentScript)});
  auto r = run_probe_script(runtime_, b);
  ASSERT_EQ(r["done"], "yes");
  EXPECT_EQ(r["mount"], "denied");
  EXPECT_EQ(r["unshare_user"], "denied");
  EXPECT_EQ(r["unshare_net"], "denied");
  EXPECT_EQ(r["unshare_mnt"], "denied");
  EXPECT_EQ(r["proc_sys"], "denied");
  EXPECT_EQ(r["sys_write"], "denied");
  EXPECT_EQ(r["raw_socket"], "denied");
  // On the root file system. (runsc mounts a Sentry-internal tmpfs on an empty /tmp, where gVisor lets
  // root make device nodes that lead nowhere on the host; that is why the probe avoids /tmp.)
  EXPECT_EQ(r["mknod"], "denied");
  EXPECT_EQ(r["chroot"], "allowed") << "CAP_SYS_CHROOT is kept, like Docker";
  EXPECT_EQ(r["netdevs"], "lo,");
  EXPECT_EQ(r["links"], "lo,");
  EXPECT_EQ(r["pid1"], "sh");
  EXPECT_LE(std::stoi(r["nprocs"].empty() ? "99" : r["nprocs"]), 4) << "host processes must be invisible";
  EXPECT_EQ(r["uid"], "0");
  EXPECT_EQ(r["hostname"], b.spec.id);
  EXPECT_TRUE(r["kcore"].empty() || r["kcore"] == "0") << "/proc/kcore is masked: " << r["kcore"];
  // gVisor's /proc/<pid>/status has no NoNewPrivs line; runsc applies no_new_privileges to the Sentry.
  if (is_gvisor())
    EXPECT_TRUE(r["nnp"].empty() || r["nnp"] == "1") << r["nnp"];
  else
    EXPECT_EQ(r["nnp"], "1");
}

TEST_P(OciRuntimeTest, FailedCreateQuotesTheRuntimeAndLeavesNothing) {
  TestBundle b(unique_id("bad"), {"/bin/true"});
  b.spec.rootfs = b.dir.path() / "no-such-root";
  b.write_config();
  ContainerGuard guard{runtime_, b.spec.id, b.spec.cgroup_path};
  auto r = runtime_.create(b.spec.id, b.bundle);
  ASSERT_FALSE(r);
  const auto& msg = r.error().message;
  EXPECT_NE(msg.find(runtime_name(GetParam())), std::string::npos) << msg;
  EXPECT_NE(msg.find("create"), std::string::npos) << msg;
  EXPECT_NE(msg.find(b.spec.id), std::string::npos) << msg;
  EXPECT_GT(msg.size(), 40u) << "the runtime's own explanation is quoted: " << msg;
  std::cout << "[error] " << msg << "\n";
  auto ids = runtime_.list();
  ASSERT_TRUE(ids) << ids.error().message;
  EXPECT_FALSE(ids->contains(b.spec.id));
  EXPECT_FALSE(any_cgroup_dir_left(b.spec.cgroup_path));
}

TEST_P(OciRuntimeTest, ContainerStdioGoesToTheGivenFds) {
  TestBundle b(unique_id("stdio"), {"/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2"});
  b.write_config();
  ContainerGuard guard{runtime_, b.spec.id, b.spec.cgroup_path};
  UniqueFd out(::open((b.dir / "stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  UniqueFd err(::open((b.dir / "stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(out && err);
  auto c = runtime_.create(b.spec.id, b.bundle, ContainerStdio{.out = out.get(), .err = err.get()});
  ASSERT_TRUE(c) << c.error().message;
  auto s = runtime_.start(b.spec.id);
  ASSERT_TRUE(s) << s.error().message;
  auto st = wait_for_status(runtime_, b.spec.id, "stopped");
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(read_trimmed(b.dir / "stdout"), "to-stdout");
  EXPECT_EQ(read_trimmed(b.dir / "stderr"), "to-stderr");
}

TEST_P(OciRuntimeTest, UnknownContainerIsNotFound) {
  auto id = unique_id("ghost");
  auto st = runtime_.state(id);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::NotFound) << st.error().message;
  EXPECT_NE(st.error().message.find(id), std::string::npos);
  auto k = runtime_.kill(id, SIGTERM);
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().kind, ErrorKind::NotFound) << k.error().message;
  auto ids = runtime_.list();
  ASSERT_TRUE(ids) << ids.error().message;
  EXPECT_TRUE(ids->empty());
}

INSTANTIATE_TEST_SUITE_P(Runtimes, OciRuntimeTest,
                         ::testing::Values(RuntimeKind::Runc, RuntimeKind::Runsc, RuntimeKind::Crun),
                         [](const auto& info) { return std::string(runtime_name(info.param)); });

TEST(OciRuntimeNames, ParseAndName) {
  for (auto k : {RuntimeKind::Runc, RuntimeKind::Crun, RuntimeKind::Runsc}) {
    auto parsed = parse_runtime(runtime_name(k));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(*parsed, k);
  }
  auto bad = parse_runtime("docker");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(bad.error().message.find("docker"), std::string::npos);
  EXPECT_NE(bad.error().message.find("runc, crun, runsc"), std::string::npos);
}

TEST(OciRuntimeProbe, MissingBinaryIsUnavailableAndSaysWhatToDo) {
  TempDir empty("moat-empty-path");
  std::string old_path = getenv("PATH") ? getenv("PATH") : "";
  setenv("PATH", empty.path().c_str(), 1);
  OciRuntime crun(RuntimeKind::Crun, empty / "state");
  setenv("PATH", old_path.c_str(), 1);
  auto p = crun.probe();
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().kind, ErrorKind::Unavailable);
  EXPECT_EQ(p.error().message, "runtime 'crun' is not installed; run scripts/install-deps or choose --runtime runc");
  auto c = crun.create("x", empty.path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().kind, ErrorKind::Unavailable);
}

TEST(OciRuntimeProbe, CrunOnAHybridCgroupHostIsUnavailableWithTheReason) {
  struct statfs root {}, unified {};
  bool hybrid = statfs("/sys/fs/cgroup", &root) == 0 && root.f_type != kCgroup2Magic &&
                statfs("/sys/fs/cgroup/unified", &unified) == 0 && unified.f_type == kCgroup2Magic &&
                !read_trimmed("/sys/fs/cgroup/unified/cgroup.controllers").empty();
  if (!hybrid) GTEST_SKIP() << "this host is not in hybrid cgroup mode";
  OciRuntime crun(RuntimeKind::Crun, "/nonexistent");
  auto p = crun.probe();
  if (p) FAIL() << "crun probe passed on a hybrid host";
  if (p.error().message.find("not installed") != std::string::npos) GTEST_SKIP() << p.error().message;
  EXPECT_EQ(p.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(p.error().message.find("hybrid"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("--runtime runc"), std::string::npos) << p.error().message;
}

}  // namespace
}  // namespace moat::oci
