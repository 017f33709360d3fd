// Containment, asserted from inside real sandboxes on every runtime tier: the same attempts on runc
// and runsc (crun where the host allows it). Each attempt must fail safely.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <future>
#include <thread>

#include "base/fs.h"
#include "base/json.h"
#include "support/moat_env.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

class Containment : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    std::string why;
    if (!runtime_usable(GetParam(), &why)) GTEST_SKIP() << why;
    env_ = std::make_unique<MoatEnv>(fmt::format(
        "[sandbox]\nimage = \"tiny\"\nruntime = \"{}\"\ndisk = \"64MiB\"\nmemory = \"96MiB\"\npids = {}\n",
        GetParam(), kPids));
    env_->ok({"sandbox", "create", "box", "--start"});
  }
  void copy_probe() { env_->ok({"cp", MOAT_BUILD_DIR "/moat-probe", "box:/usr/local/bin/moat-probe"}); }
  static constexpr int kPids = 64;
  std::unique_ptr<MoatEnv> env_;
};

TEST_P(Containment, ForbiddenOperationsAllFail) {
  copy_probe();
  auto r = env_->moat({"exec", "box", "--", "/usr/local/bin/moat-probe", std::to_string(env_->daemon_pid())});
  EXPECT_EQ(r.code, 0) << "some forbidden operation succeeded:\n" << r.out << r.err;
  EXPECT_EQ(r.out.find("ALLOWED"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("REACHABLE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 allowed"), std::string::npos) << r.out;
  ::testing::Test::RecordProperty("probe_report", r.out);
  std::printf("%s", r.out.c_str());
}

TEST_P(Containment, HostProcessesAreInvisible) {
  auto ps = env_->ok({"exec", "box", "--", "ps", "-o", "pid,args"});
  EXPECT_EQ(ps.find("moatd"), std::string::npos) << ps;
  EXPECT_EQ(ps.find("systemd"), std::string::npos) << ps;
  auto count = env_->ok({"exec", "box", "--", "sh", "-c", "ls -d /proc/[0-9]* | wc -l"});
  EXPECT_LT(std::stoi(count), 10) << count;
}

TEST_P(Containment, RootInsideIsAnUnprivilegedHostUser) {
  auto inspect = Json::parse(env_->ok({"--json", "sandbox", "inspect", "box"}));
  int64_t uid_base = inspect["uid_base"];
  ASSERT_GE(uid_base, 100000);
  EXPECT_EQ(env_->ok({"exec", "box", "--", "id", "-u"}), "0\n");
  env_->ok({"exec", "box", "--", "sh", "-c", "echo x > /root/owned-by-root"});
  // What root writes inside lands on the host owned by the sandbox's own unprivileged uid.
  struct stat st {};
  auto upper = env_->state_dir() / "sandboxes/box/volume/upper/root/owned-by-root";
  ASSERT_EQ(::stat(upper.c_str(), &st), 0) << upper;
  EXPECT_EQ(static_cast<int64_t>(st.st_uid), uid_base);
  if (GetParam() == "runc") {
    auto map = env_->ok({"exec", "box", "--", "cat", "/proc/self/uid_map"});
    EXPECT_NE(map.find(std::to_string(uid_base)), std::string::npos) << map;
    int pid = inspect["container"]["pid"];
    auto status = read_file(fmt::format("/proc/{}/status", pid));
    ASSERT_TRUE(status);
    EXPECT_NE(status->find(fmt::format("Uid:\t{}", uid_base)), std::string::npos) << *status;
  }
}

TEST_P(Containment, NoNetworkButLoopback) {
  auto dev = env_->ok({"exec", "box", "--", "cat", "/proc/net/dev"});
  int interfaces = 0;
  size_t pos = 0;
  while ((pos = dev.find(':', pos)) != std::string::npos) {
    ++interfaces;
    ++pos;
  }
  EXPECT_EQ(interfaces, 1) << dev;
  EXPECT_NE(dev.find("lo:"), std::string::npos) << dev;
  auto wget = env_->moat({"exec", "--timeout", "10s", "box", "--", "wget", "-T", "3", "-q", "-O-", "http://1.1.1.1/"});
  EXPECT_NE(wget.code, 0);
  EXPECT_NE(wget.code, 124) << "a network attempt should fail fast, not hang";
}

TEST_P(Containment, ForkBombHitsThePidsLimitWhileOthersKeepAnswering) {
  env_->ok({"sandbox", "create", "other", "--start"});
  auto bomb = std::async(std::launch::async, [&] {
    return env_->moat({"exec", "--timeout", "8s", "box", "--", "sh", "-c",
                       "i=0; while [ $i -lt 400 ]; do sleep 20 & i=$((i+1)); done 2>/dev/null; "
                       "ls -d /proc/[0-9]* | wc -l"});
  });
  std::this_thread::sleep_for(1s);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(env_->ok({"exec", "other", "--", "echo", "alive"}), "alive\n");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  auto r = bomb.get();
  if (!r.out.empty()) {
    EXPECT_LE(std::stoi(r.out), kPids) << r.out;
  }
  env_->moat({"exec", "box", "--", "sh", "-c", "kill -9 -1"});
}

TEST_P(Containment, MemoryBombIsKilledInsideTheSandbox) {
  env_->ok({"sandbox", "create", "other", "--start"});
  copy_probe();
  auto r = env_->moat({"exec", "--timeout", "60s", "box", "--", "/usr/local/bin/moat-probe", "membomb"});
  EXPECT_NE(r.code, 0) << "touching 2 GiB in a 96 MiB sandbox must fail";
  EXPECT_EQ(r.out.find("ALLOWED"), std::string::npos) << r.out;
  EXPECT_NE(r.code, 124) << "the memory bomb should be killed, not time out";
  EXPECT_EQ(env_->ok({"exec", "box", "--", "echo", "still-here"}), "still-here\n");
  EXPECT_EQ(env_->ok({"exec", "other", "--", "echo", "alive"}), "alive\n");
}

TEST_P(Containment, FillingTheDiskStopsAtTheCap) {
  // What the host pays is the sandbox's disk file's allocated blocks (free space on the host's disk
  // is not a measure: other tests and builds write there at the same time).
  auto disk = env_->state_dir() / "sandboxes" / "box" / "disk.img";
  auto allocated = [&disk] {
    struct stat st {};
    return ::stat(disk.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_blocks) * 512 : -1;
  };
  auto r = env_->moat({"exec", "box", "--", "sh", "-c", "dd if=/dev/zero of=/workspace/fill bs=1M count=300 2>&1; sync"});
  EXPECT_NE(r.out.find("No space left"), std::string::npos) << r.out << r.err;
  EXPECT_GT(allocated(), 0);
  EXPECT_LE(allocated(), 64ll << 20) << "the host gave the sandbox more than its 64 MiB cap";
  auto size = env_->ok({"exec", "box", "--", "sh", "-c", "ls -l /workspace/fill | awk '{print $5}'"});
  EXPECT_LT(std::stoll(size), 64ll << 20);
  env_->ok({"exec", "box", "--", "rm", "/workspace/fill"});
  EXPECT_EQ(env_->ok({"exec", "box", "--", "echo", "ok"}), "ok\n");
}

INSTANTIATE_TEST_SUITE_P(Runtimes, Containment, ::testing::Values("runc", "runsc", "crun"),
                         [](const auto& info) { return info.param; });
