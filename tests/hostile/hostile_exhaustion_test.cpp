// The hostile agent tries to exhaust the host: processes, memory, disk space, inodes, open files,
// proxy connections, exec output. Each attempt must stop at its limit inside the sandbox while moatd
// and another sandbox keep answering within kAnswerBound, on every runtime tier.
#include <sys/stat.h>

#include <future>
#include <regex>
#include <thread>

#include "base/fs.h"
#include "base/json.h"
#include "base/subprocess.h"
#include "support/hostile_sandbox.h"
#include "support/upstream_server.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

constexpr auto kAnswerBound = 5s;

class HostileExhaustion : public HostileSandbox {
 protected:
  void SetUp() override {
    HostileSandbox::SetUp();
    if (IsSkipped()) return;
    env_->ok({"sandbox", "create", "other", "--start"});
  }

  // While an attack runs: how long the other sandbox and moatd take to answer.
  struct Answer {
    std::chrono::milliseconds took;
    bool ok;
  };
  Answer others_answer() {
    auto t0 = std::chrono::steady_clock::now();
    auto r = env_->moat({"exec", "--timeout", "20s", "other", "--", "echo", "alive"});
    auto ls = env_->moat({"sandbox", "ls"});
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    return {took, r.out == "alive\n" && ls.code == 0};
  }
  static std::string describe(const Answer& a) {
    return a.ok ? fmt::format("the other sandbox and moatd answered in {} ms", a.took.count())
                : "the other sandbox or moatd DID NOT ANSWER";
  }
  static bool within_bound(const Answer& a) { return a.ok && a.took < kAnswerBound; }

  std::string container_of(const std::string& sandbox) const {
    return Json::parse(env_->ok({"--json", "sandbox", "inspect", sandbox}))["container_id"];
  }
  int64_t moatd_rss_kib() const {
    auto status = read_file(fmt::format("/proc/{}/status", env_->daemon_pid())).value_or("");
    auto at = status.find("VmRSS:");
    return at == std::string::npos ? -1 : std::stoll(status.substr(at + 6));
  }
  static std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
};

TEST_P(HostileExhaustion, ForkBombStopsAtThePidsLimit) {
  auto pids_dir = [&] {
    for (auto& dir : cgroups_containing(container_of("box")))
      if (dir.find("/pids/") != std::string::npos) return dir;
    return std::string();
  }();
  ASSERT_FALSE(pids_dir.empty()) << "the sandbox's pids cgroup was not found";
  auto max = std::stoll(read_file(pids_dir + "/pids.max").value_or("-1"));
  auto bomb = std::async(std::launch::async, [&] {
    return sh("box", "i=0; while [ $i -lt 400 ]; do sleep 20 & i=$((i+1)); done 2>/dev/null", "8s");
  });
  // Counted from the host, in the sandbox's pids cgroup, while the bomb's processes are alive.
  int64_t peak = 0;
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(100ms);
    if (auto current = read_file(pids_dir + "/pids.current")) peak = std::max<int64_t>(peak, std::stoll(*current));
  }
  auto answer = others_answer();
  auto r = bomb.get();
  // gVisor's ptrace platform needs a host process per address space: when the limit stops it from
  // making one, runsc stops the whole sandbox, and moat says so.
  bool sandbox_stopped = r.err.find("stopped while the command was running") != std::string::npos;
  sh("box", "kill -9 -1");
  bool back = env_->moat({"exec", "box", "--", "echo", "back"}).out == "back\n";
  report_.add("exhaustion", "fork bomb (400 processes)",
              fmt::format("at most {} tasks in the sandbox's pids cgroup (pids.max {}){}; the sandbox {} afterwards; {}", peak, max,
                          sandbox_stopped ? "; the runtime stopped the sandbox" : "", back ? "answers" : "DOES NOT ANSWER",
                          describe(answer)),
              peak <= max && back && within_bound(answer));
}

TEST_P(HostileExhaustion, MemoryBombIsKilledInsideTheSandbox) {
  copy_probe();
  auto bomb = std::async(std::launch::async, [&] {
    return env_->moat({"exec", "--timeout", "60s", "box", "--", "/usr/local/bin/moat-probe", "membomb"});
  });
  std::this_thread::sleep_for(500ms);
  auto answer = others_answer();
  auto r = bomb.get();
  bool killed = r.code != 0 && r.code != 124 && r.out.find("ALLOWED") == std::string::npos;
  bool box_alive = env_->moat({"exec", "box", "--", "echo", "still-here"}).out == "still-here\n";
  report_.add("exhaustion", "memory bomb (touch 2 GiB in a 96 MiB sandbox)",
              fmt::format("{} (exit {}); the sandbox itself {}; {}", killed ? "killed" : "NOT STOPPED", r.code,
                          box_alive ? "still answers" : "DIED", describe(answer)),
              killed && box_alive && within_bound(answer));
}

TEST_P(HostileExhaustion, DiskFillStopsAtTheCap) {
  // What the host pays is the sandbox's disk file's allocated blocks (the host disk's free space is no
  // measure: other tests write there at the same time).
  auto disk = env_->state_dir() / "sandboxes" / "box" / "disk.img";
  auto r = sh("box", "dd if=/dev/zero of=/workspace/fill bs=1M count=300 2>&1; sync");
  auto answer = others_answer();
  struct stat st {};
  int64_t allocated = ::stat(disk.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_blocks) * 512 : -1;
  report_.add("exhaustion", "disk fill (write 300 MiB on a 64 MiB disk)",
              fmt::format("{}; the host holds {} MiB for it; {}",
                          r.out.find("No space left") != std::string::npos ? "No space left on device" : trimmed(r.out),
                          allocated >> 20, describe(answer)),
              r.out.find("No space left") != std::string::npos && allocated > 0 && allocated <= kDiskBytes &&
                  within_bound(answer));
  sh("box", "rm -f /workspace/fill");
  EXPECT_EQ(env_->ok({"exec", "box", "--", "echo", "ok"}), "ok\n");
}

TEST_P(HostileExhaustion, InodeExhaustionStopsAtTheCap) {
  copy_probe();
  auto bomb = std::async(std::launch::async, [&] {
    return env_->moat({"exec", "--timeout", "120s", "box", "--", "/usr/local/bin/moat-probe", "inodebomb", "/workspace"});
  });
  std::this_thread::sleep_for(1s);
  auto answer = others_answer();
  auto r = bomb.get();
  report_.add("exhaustion", "inode exhaustion (empty files until refused)", fmt::format("{}; {}", trimmed(r.out), describe(answer)),
              r.code == 0 && within_bound(answer));
}

TEST_P(HostileExhaustion, OpenFilesStopAtTheLimit) {
  copy_probe();
  auto r = env_->moat({"exec", "--timeout", "60s", "box", "--", "/usr/local/bin/moat-probe", "fdbomb"});
  auto answer = others_answer();
  report_.add("exhaustion", "open files until refused", fmt::format("{}; {}", trimmed(r.out), describe(answer)),
              r.code == 0 && within_bound(answer));
}

TEST_P(HostileExhaustion, ProxyConnectionFloodIsCapped) {
  // Tunnels to a destination policy allows, each held open: the gateway's per-agent cap
  // ([egress] max_connections, 256) must hold, and moatd's own file descriptors with it.
  UpstreamServer sink;
  auto target = fmt::format("127.0.0.1:{}", sink.port());
  env_->ok({"policy", "allow", "box", target});
  copy_probe();
  auto fd_count = [&] {
    std::error_code ec;
    return std::distance(std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", env_->daemon_pid()), ec), {});
  };
  int64_t fds_before = fd_count(), fds_peak = fds_before;
  auto flood = std::async(std::launch::async, [&] {
    return env_->moat({"exec", "--timeout", "120s", "box", "--", "/usr/local/bin/moat-probe", "proxyflood", "3000", target});
  });
  for (int i = 0; i < 20 && flood.wait_for(200ms) != std::future_status::ready; ++i) fds_peak = std::max(fds_peak, fd_count());
  auto answer = others_answer();
  // The other sandbox's own door out still answers (its default-deny 403 is an answer).
  auto other_proxy = sh("other", "printf 'CONNECT example.com:443 HTTP/1.1\\r\\n\\r\\n' | nc -w 5 127.0.0.1 3128 | head -1", "20s");
  auto r = flood.get();
  bool other_door = other_proxy.out.find("HTTP/1.1") != std::string::npos;
  std::smatch opened;
  auto out = trimmed(r.out);
  bool capped = std::regex_search(out, opened, std::regex("(\\d+) tunnels opened")) && std::stoi(opened[1]) <= 256;
  report_.add("exhaustion", "3,000 tunnels through the proxy to an allowed destination, held open",
              fmt::format("{}; moatd held {} fds before, {} at most during; the other sandbox's proxy {}; {}", out, fds_before,
                          fds_peak, other_door ? "answered" : "DID NOT ANSWER", describe(answer)),
              r.code == 0 && capped && other_door && fds_peak - fds_before <= 2 * 256 + 128 && within_bound(answer));
}

TEST_P(HostileExhaustion, ExecOutputFloodIsBoundedOnTheHost) {
  // A flood read as fast as it comes (for 8 s), and a flood into a reader that stops reading: moatd
  // must pass bytes on or push back, never buffer them.
  int64_t rss_before = moatd_rss_kib();
  int64_t rss_peak = rss_before;
  auto cli = (std::filesystem::path(MOAT_BUILD_DIR) / "moat").string();
  auto exec = fmt::format("{} --state-dir {} exec --timeout 60s box -- ", cli, env_->state_dir().string());
  auto fast = std::async(std::launch::async, [&] {
    return run_process({"sh", "-c", exec + "sh -c 'timeout 8 yes flood; true' | wc -c"});
  });
  auto stuck = std::async(std::launch::async, [&] {
    auto t0 = std::chrono::steady_clock::now();
    run_process({"sh", "-c", exec + "yes stuck | sleep 6"});
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0);
  });
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(200ms);
    rss_peak = std::max(rss_peak, moatd_rss_kib());
  }
  auto answer = others_answer();
  auto f = fast.get();
  auto stuck_took = stuck.get();
  std::this_thread::sleep_for(1s);
  auto leftover = sh("box", "pidof yes || echo none");
  int64_t grew_mib = (rss_peak - rss_before) >> 10;
  int64_t bytes = f ? std::stoll("0" + trimmed(f->out)) : 0;
  report_.add("exhaustion", "exec output flood: `yes` for 8 s read as it comes, and `yes` into a reader that stops",
              fmt::format("{} MB passed on; moatd RSS grew {} MiB at most; the stopped reader's exec ended after {} s; `yes` "
                          "left running: {}; {}",
                          bytes / 1000000, grew_mib, stuck_took.count(), trimmed(leftover.out), describe(answer)),
              bytes > (1 << 20) && grew_mib < 64 && stuck_took < 20s && trimmed(leftover.out) == "none" && within_bound(answer));
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileExhaustion);

}  // namespace
