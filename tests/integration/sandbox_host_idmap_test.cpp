// moat-init as runsc's newuidmap/newgidmap (src/guest/host_idmap.h): called under those names it maps
// a real user namespace, and only inside the range moatd names; anything else is refused and nothing
// is written.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "base/fs.h"
#include "base/subprocess.h"
#include "support/moat_env.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::testing;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kBase = 1073741824ull + 65536ull * 9000;  // in moat's region; only written into a map

// A child in a user namespace of its own, waiting (unmapped) until it is killed.
class UnmappedChild {
 public:
  UnmappedChild() {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      close(fds[0]);
      char ok = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
      (void)!write(fds[1], &ok, 1);
      pause();
      _exit(0);
    }
    close(fds[1]);
    char ok = 'n';
    (void)!read(fds[0], &ok, 1);
    close(fds[0]);
    if (ok != 'y') throw std::runtime_error("unshare(CLONE_NEWUSER) failed");
  }
  ~UnmappedChild() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  std::string map(const char* which) const {
    auto m = read_file(fs::path("/proc") / std::to_string(pid_) / which);
    return m ? *m : "unreadable";
  }

 private:
  pid_t pid_ = -1;
};

class HostIdmap : public ::testing::Test {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    for (auto name : {"newuidmap", "newgidmap"}) fs::create_symlink(MOAT_BUILD_DIR "/moat-init", dir_.path() / name);
  }
  Result<RunResult> call(const char* name, pid_t pid, std::vector<std::string> triple, bool with_range = true) {
    std::vector<std::string> argv{(dir_.path() / name).string(), std::to_string(pid)};
    argv.insert(argv.end(), triple.begin(), triple.end());
    RunOptions opts;
    if (with_range) {
      opts.env_extra["MOAT_IDMAP_UID_RANGE"] = fmt::format("{}:65536", kBase);
      opts.env_extra["MOAT_IDMAP_GID_RANGE"] = fmt::format("{}:65536", kBase);
    }
    return run_process(argv, opts);
  }
  TempDir dir_{"moat-idmap"};
};

}  // namespace

TEST_F(HostIdmap, MapsTheSandboxsOwnRangeIntoARealUserNamespace) {
  UnmappedChild child;
  auto u = call("newuidmap", child.pid(), {"0", std::to_string(kBase), "65536"});
  ASSERT_TRUE(u);
  EXPECT_EQ(u->exit_code, 0) << u->err;
  auto g = call("newgidmap", child.pid(), {"0", std::to_string(kBase), "65536"});
  ASSERT_TRUE(g);
  EXPECT_EQ(g->exit_code, 0) << g->err;
  auto squash = [](std::string s) {
    std::string out;
    for (char c : s)
      if (c != ' ' || (!out.empty() && out.back() != ' ')) out += c;
    return out;
  };
  EXPECT_EQ(squash(child.map("uid_map")), fmt::format("0 {} 65536\n", kBase));
  EXPECT_EQ(squash(child.map("gid_map")), fmt::format("0 {} 65536\n", kBase));
}

TEST_F(HostIdmap, RefusesAnyHostIdOutsideTheSandboxsRangeAndWritesNothing) {
  UnmappedChild child;
  struct Case {
    std::vector<std::string> triple;
    bool with_range;
    std::string says;
  };
  std::vector<Case> cases = {
      {{"0", "0", "1"}, true, "outside the sandbox's"},                                   // the host's root
      {{"0", std::to_string(kBase - 1), "2"}, true, "outside the sandbox's"},            // one below
      {{"0", std::to_string(kBase + 1), "65536"}, true, "outside the sandbox's"},        // one past the end
      {{"0", "65534", "1"}, true, "outside the sandbox's"},                              // the host's nobody
      {{"0", std::to_string(kBase), "65536"}, false, "MOAT_IDMAP_UID_RANGE is not set"},  // not started by moatd
      {{"0", "x", "1"}, true, "not a mapping"},
  };
  for (const auto& c : cases) {
    auto r = call("newuidmap", child.pid(), c.triple, c.with_range);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->exit_code, 1) << c.triple[1];
    EXPECT_NE(r->err.find(c.says), std::string::npos) << r->err;
  }
  EXPECT_EQ(child.map("uid_map"), "");
  auto g = call("newgidmap", child.pid(), {"0", "0", "1"});
  ASSERT_TRUE(g);
  EXPECT_EQ(g->exit_code, 1);
  EXPECT_EQ(child.map("gid_map"), "");
}
