// Exec through the real CLI, moatd and moat-init: binary-safe streams, stdin, exit status, signals,
// timeouts that kill whole trees, concurrency, and many sandboxes at once.
#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "base/json.h"
#include "base/sha256.h"
#include "support/moat_env.h"

using namespace moat;
using namespace moat::testing;

class SandboxExec : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    env_ = new MoatEnv();  // shared by the suite: one moatd, one running sandbox
    env_->ok({"sandbox", "create", "ex", "--start"});
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  void SetUp() override { MOAT_REQUIRE_ROOT(); }
  static MoatEnv* env_;
};
MoatEnv* SandboxExec::env_ = nullptr;

TEST_F(SandboxExec, HundredMegabytesOfBinaryStdoutArriveByteExact) {
  auto r = env_->moat({"exec", "ex", "--", "sh", "-c",
                       "head -c 100000000 /dev/urandom | tee /workspace/blob; sha256sum /workspace/blob >&2"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(r.out.size(), 100000000u);
  EXPECT_EQ(r.err.substr(0, 64), sha256_hex(r.out));
  env_->ok({"exec", "ex", "--", "rm", "/workspace/blob"});
}

TEST_F(SandboxExec, StdoutAndStderrStayApartAndStdinWorks) {
  auto r = env_->moat({"exec", "ex", "--", "sh", "-c", "echo to-out; echo to-err >&2"});
  EXPECT_EQ(r.out, "to-out\n");
  EXPECT_EQ(r.err, "to-err\n");
  std::string input(1 << 20, '\0');
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<char>(i * 7);
  auto cat = env_->moat({"exec", "ex", "--", "cat"}, input);
  EXPECT_EQ(cat.code, 0);
  EXPECT_TRUE(cat.out == input) << "stdin round trip differs (" << cat.out.size() << " bytes back)";
}

TEST_F(SandboxExec, ExitCodesAndSignalsAreReported) {
  EXPECT_EQ(env_->moat({"exec", "ex", "--", "sh", "-c", "exit 42"}).code, 42);
  EXPECT_EQ(env_->moat({"exec", "ex", "--", "sh", "-c", "kill -KILL $$"}).code, 128 + 9);
  EXPECT_EQ(env_->moat({"exec", "ex", "--", "sh", "-c", "kill -TERM $$"}).code, 128 + 15);
  auto missing = env_->moat({"exec", "ex", "--", "/no/such/program"});
  EXPECT_EQ(missing.code, 127);
  EXPECT_NE(missing.err.find("/no/such/program"), std::string::npos) << missing.err;
}

TEST_F(SandboxExec, TimeoutKillsTheWholeProcessTree) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = env_->moat({"exec", "--timeout", "1s", "ex", "--", "sh", "-c",
                       "sleep 1001 & (sleep 1002 &) ; setsid sleep 1003 & sleep 1004"});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.code, 124) << r.err;
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
  EXPECT_LT(took, std::chrono::seconds(10));
  auto ps = env_->ok({"exec", "ex", "--", "ps", "-o", "args"});
  EXPECT_EQ(ps.find("sleep 100"), std::string::npos) << ps;
}

TEST_F(SandboxExec, ThirtyTwoConcurrentExecsInOneSandbox) {
  std::vector<std::future<CliResult>> futs;
  for (int i = 0; i < 32; ++i) {
    futs.push_back(std::async(std::launch::async, [i] {
      return env_->moat({"exec", "ex", "--", "sh", "-c", fmt::format("sleep 0.5; echo {}", i)});
    }));
  }
  for (int i = 0; i < 32; ++i) {
    auto r = futs[i].get();
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, fmt::format("{}\n", i));
  }
}

TEST_F(SandboxExec, PtyModeGivesATerminal) {
  auto r = env_->moat({"exec", "-t", "ex", "--", "sh", "-c", "tty; stty size"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("/dev/pts/"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("24 80"), std::string::npos) << r.out;
}

TEST(ManySandboxes, FiftyRunAtOnce) {
  MOAT_REQUIRE_ROOT();
  MoatEnv env("[sandbox]\nimage = \"tiny\"\ndisk = \"64MiB\"\nmemory = \"64MiB\"\n");
  constexpr int kCount = 50;
  std::vector<std::future<CliResult>> futs;
  for (int i = 0; i < kCount; ++i) {
    futs.push_back(std::async(std::launch::async, [&env, i] {
      return env.moat({"sandbox", "create", fmt::format("m{}", i), "--start"});
    }));
  }
  for (auto& f : futs) {
    auto r = f.get();
    EXPECT_EQ(r.code, 0) << r.err;
  }
  auto ls = Json::parse(env.ok({"--json", "sandbox", "ls"}));
  int running = 0;
  for (auto& s : ls) running += s["state"] == "running";
  EXPECT_EQ(running, kCount);
  for (int i = 0; i < kCount; i += 7) {
    EXPECT_EQ(env.ok({"exec", fmt::format("m{}", i), "--", "hostname"}), fmt::format("m{}\n", i));
  }
  // Each sandbox's root is a different host user.
  std::set<std::string> uids;
  for (auto& s : ls) uids.insert(std::to_string(s["uid_base"].get<int64_t>()));
  EXPECT_EQ(uids.size(), static_cast<size_t>(kCount));
}
