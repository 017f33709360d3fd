// Issue 5, faults: each fault the outside world can throw at moatd, against the real thing (moatd, the
// moat CLI, runc, SQLite, a loop-mounted ext4) with the provider double the only stand-in. Each must
// give one clear error that names what went wrong, recover, and lose nothing that was accepted:
//   1. the state directory's disk fills up;
//   2. the runtime binary is missing, or fails;
//   3. a sandbox dies in the middle of an exec;
//   4. the model provider answers garbage, closes mid-stream, or hangs;
//   5. a channel floods one agent with thousands of messages.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "base/fs.h"
#include "base/json.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "support/moat_env.h"
#include "support/provider_double.h"
#include "support/scoped_env.h"
#include "unit/channels_test_client.h"

namespace moat::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ------------------------------------------------------------------------------------------------
// Helpers

bool contains(std::string_view haystack, std::string_view needle) { return haystack.find(needle) != std::string_view::npos; }

std::string trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return std::string(s);
}

size_t occurrences(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(needle, at)) != std::string_view::npos; at += needle.size()) ++n;
  return n;
}

double seconds_since(SteadyClock::time_point t0) { return std::chrono::duration<double>(SteadyClock::now() - t0).count(); }

// `model = {...}` for an agent thinking with `model` over the Anthropic wire.
std::string model_line(const ProviderDouble& model) {
  return fmt::format("model = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", base_url = \"{}\" }}\n",
                     model.anthropic_base_url());
}

// Stores `key` in the vault for the double's host:port, as an operator would.
void give_key(const MoatEnv& env, const ProviderDouble& model, const std::string& key) {
  env.ok({"secret", "set", fmt::format("key-{}", model.port()), "--host", fmt::format("127.0.0.1:{}", model.port()),
          "--header", "x-api-key: {}"},
         key);
}

ScriptedReply echo(const ProviderRequest& r) { return ScriptedReply::say("echo: " + r.last_user_text()); }

// One agent's webhook, spoken to over raw sockets (thousands of posts cannot each fork a curl).
struct Webhook {
  uint16_t port = 0;
  std::string path, token;

  static Webhook of(const MoatEnv& env, const std::string& agent) {
    auto j = Json::parse(env.ok({"--json", "agent", "webhook", agent}));
    std::string url = j["url"];  // http://127.0.0.1:PORT/hooks/AGENT
    auto host_end = url.find('/', 7);
    Webhook w;
    w.port = static_cast<uint16_t>(std::stoi(url.substr(url.rfind(':', host_end) + 1)));
    w.path = url.substr(host_end);
    w.token = j["token"];
    return w;
  }

  Reply post(const std::string& chat, const std::string& message_id, const std::string& text) const {
    Json body{{"chat", chat}, {"sender", "owner"}, {"message_id", message_id}, {"text", text}};
    return http_call(port, "POST", path, {{"Authorization", "Bearer " + token}, {"Content-Type", "application/json"}},
                     body.dump());
  }

  Json replies(const std::string& chat) const {
    auto r = http_call(port, "GET", fmt::format("{}/replies?chat={}", path, chat), {{"Authorization", "Bearer " + token}});
    auto j = r.json();
    return j.is_object() ? j.value("replies", Json::array()) : Json::array();
  }

  // The first reply in `chat` that contains `needle`, waiting up to `timeout`; empty when none came.
  std::string wait_reply(const std::string& chat, std::string_view needle, std::chrono::seconds timeout = 30s) const {
    for (auto deadline = SteadyClock::now() + timeout; SteadyClock::now() < deadline; std::this_thread::sleep_for(100ms)) {
      for (const auto& r : replies(chat)) {
        std::string text = r.value("text", std::string());
        if (contains(text, needle)) return text;
      }
    }
    return {};
  }
};

// The "error" field of a JSON error body; empty when the body is not one.
std::string error_of(const Reply& r) {
  auto j = r.json();
  return j.is_object() ? j.value("error", std::string()) : std::string();
}

Json messages(const MoatEnv& env, const std::vector<std::string>& filters) {
  std::vector<std::string> args{"--json", "messages", "--limit", "100000"};
  args.insert(args.end(), filters.begin(), filters.end());
  return Json::parse(env.ok(args), nullptr, false);
}

// Everything on the host that names the sandbox: rows, directories, mounts, loop devices, cgroups.
void expect_nothing_left_of(const MoatEnv& env, const std::string& name) {
  auto ls = Json::parse(env.ok({"--json", "sandbox", "ls"}));
  for (const auto& s : ls) EXPECT_NE(s["name"], name) << "a row of '" << name << "' was left: " << ls.dump();
  EXPECT_FALSE(fs::exists(env.state_dir() / "sandboxes" / name)) << "its directory was left";
  auto dir = (env.state_dir() / "sandboxes" / name).string();
  EXPECT_TRUE(mounts_containing(dir).empty()) << "a mount was left";
  EXPECT_TRUE(loops_left(dir).empty()) << "a loop device was left";
  auto cgroups = cgroups_containing("moat-" + name + "-");
  EXPECT_TRUE(cgroups.empty()) << "a cgroup was left: " << cgroups.front();
}

// The state directory moved onto a small file system of its own so a test can fill it: moatd is
// stopped, a fresh ext4 (no reserved blocks: moatd is root and would use them) is loop-mounted over
// the directory with its contents copied in, and moatd started again. Undone in reverse order, with
// moatd stopped first so nothing holds the mount.
class StateOnSmallDisk {
 public:
  StateOnSmallDisk(MoatEnv& env, uint64_t mib) : env_(env) {
    env_.stop_daemon();
    const fs::path image = backing_ / "disk.img", copy = backing_ / "copy";
    fs::remove(env_.state_dir() / "moatd.sock");
    run_ok({"truncate", "-s", fmt::format("{}M", mib), image.string()});
    run_ok({"mkfs.ext4", "-q", "-F", "-m", "0", image.string()});
    run_ok({"cp", "-a", env_.state_dir().string(), copy.string()});
    run_ok({"mount", "-o", "loop", image.string(), env_.state_dir().string()});
    mounted_ = true;
    run_ok({"cp", "-a", (copy / ".").string(), env_.state_dir().string()});
    fs::remove(env_.state_dir() / "lost+found");
    fs::permissions(env_.state_dir(), fs::perms(0711));
    env_.start_daemon();
  }

  ~StateOnSmallDisk() {
    free_space();
    env_.remove_all_sandboxes();
    // moatd.log lives on this file system: show it now, MoatEnv would find the one underneath.
    if (::testing::Test::HasFailure())
      if (auto log = read_file(env_.state_dir() / "moatd.log")) std::fprintf(stderr, "--- moatd.log ---\n%s", log->c_str());
    env_.stop_daemon();
    if (mounted_ && umount(env_.state_dir().c_str()) != 0) umount2(env_.state_dir().c_str(), MNT_DETACH);
  }
  StateOnSmallDisk(const StateOnSmallDisk&) = delete;
  StateOnSmallDisk& operator=(const StateOnSmallDisk&) = delete;

  // Writes filler until the file system refuses with ENOSPC: big writes first, then single blocks.
  void fill() {
    int n = 0;
    for (size_t chunk : {size_t{1} << 20, size_t{4096}, size_t{512}}) {
      UniqueFd fd(::open(filler(n++).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      ASSERT_TRUE(fd) << strerror(errno);
      std::string zeros(chunk, '\0');
      while (::write(fd.get(), zeros.data(), zeros.size()) >= 0) {
      }
      ASSERT_EQ(errno, ENOSPC) << "filling the state disk stopped for another reason: " << strerror(errno);
      ::fsync(fd.get());
    }
    fillers_ = n;
  }

  void free_space() {
    for (int i = 0; i < fillers_; ++i) fs::remove(filler(i));
    fillers_ = 0;
    ::sync();
  }

 private:
  fs::path filler(int i) const { return env_.state_dir() / fmt::format("filler-{}", i); }
  static void run_ok(const std::vector<std::string>& argv) {
    auto r = run_process(argv);
    ASSERT_TRUE(r && r->ok()) << argv[0] << ": " << (r ? r->err : r.error().message);
  }

  MoatEnv& env_;
  TempDir backing_{"moat-fault-disk"};
  bool mounted_ = false;
  int fillers_ = 0;
};

// ------------------------------------------------------------------------------------------------
// 1. The state directory's disk fills up.

// Holds the provider's answer to "wait" messages until open(): a turn is in flight while the disk fills.
class Gate {
 public:
  void open() {
    std::lock_guard l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock l(mu_);
    cv_.wait_for(l, 60s, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Opens the gate when the scope ends, before the double's destructor joins a thread waiting on it
// (a test that stops early would otherwise wait out the gate's timeout).
struct OpenAtExit {
  Gate& gate;
  ~OpenAtExit() { gate.open(); }
};

TEST(Faults, AFullStateDiskRefusesCreatesAndMessagesByNameAndLosesNothingAccepted) {
  MOAT_REQUIRE_ROOT();
  const auto t0 = SteadyClock::now();
  const std::string key = "sk-ant-fault-disk";
  Gate gate;
  ProviderDouble model({.api_key = key});
  OpenAtExit open_at_exit{gate};
  model.set_reply_function([&](const ProviderRequest& r) {
    if (contains(r.last_user_text(), "wait")) gate.wait();
    return echo(r);
  });
  // Retries every 200 ms at first: a turn whose commit met the full disk runs again soon after it is freed.
  MoatEnv env("[router]\nmax_attempts = 30\nretry_base = \"200ms\"\n[agents.keeper]\n" + model_line(model));
  StateOnSmallDisk disk(env, 160);
  give_key(env, model, key);
  auto hook = Webhook::of(env, "keeper");

  // The agent's sandbox exists and a first message is answered before the disk fills.
  ASSERT_EQ(hook.post("c", "m0", "hello <m0>").status, 202);
  ASSERT_NE(hook.wait_reply("c", "<m0>"), "");
  // One turn in flight, its reply not yet written, when the disk fills.
  ASSERT_EQ(hook.post("c", "m1", "wait <m1>").status, 202);
  ASSERT_TRUE(model.wait_for_requests(2, 30s));

  disk.fill();

  auto create = env.moat({"sandbox", "create", "fault-late"});
  EXPECT_NE(create.code, 0);
  EXPECT_TRUE(contains(create.err, "disk is full")) << create.err;
  expect_nothing_left_of(env, "fault-late");

  // Messages: SQLite may still have room in its write-ahead log for a few; once it has none, the
  // webhook refuses with 503 and a body naming the full disk. Every one it accepted is kept.
  std::vector<std::string> accepted{"m1"};
  std::string refused;
  for (int i = 2; i < 400 && refused.empty(); ++i) {
    std::string id = fmt::format("m{}", i);
    auto r = hook.post("c", id, fmt::format("<{}>", id));
    if (r.status == 202) {
      accepted.push_back(id);
      continue;
    }
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_TRUE(contains(r.body, "disk is full")) << r.body;
    refused = id;
  }
  EXPECT_FALSE(refused.empty()) << "400 messages were accepted on a full disk";
  std::printf("disk full: %zu more message(s) accepted (room left in the WAL), then %s refused\n", accepted.size() - 1,
              refused.c_str());
  EXPECT_EQ(env.moat({"daemon", "status"}).code, 0) << "moatd stopped serving on a full disk";
  for (const auto& m : messages(env, {}))
    EXPECT_NE(m.value("message_id", std::string()), "keeper/" + refused) << "the refused message was half-stored";

  gate.open();  // the turn in flight now commits its reply on the full disk (or fails to, and retries)
  std::this_thread::sleep_for(1s);
  disk.free_space();

  // Everything works again: the create, and the refused message when its sender retries it.
  env.ok({"sandbox", "create", "fault-late", "--start"});
  EXPECT_EQ(env.ok({"exec", "fault-late", "--", "echo", "ok"}), "ok\n");
  if (!refused.empty()) {
    auto again = hook.post("c", refused, fmt::format("<{}>", refused));
    EXPECT_EQ(again.status, 202) << again.body;
    accepted.push_back(refused);
  }
  // Nothing accepted was lost: each is answered (a reply echoes every message of its turn).
  for (const auto& id : accepted)
    EXPECT_NE(hook.wait_reply("c", fmt::format("<{}>", id), 60s), "") << "message " << id << " was never answered";
  EXPECT_EQ(messages(env, {"--failed"}).size(), 0u);
  env.ok({"audit", "verify"});  // the audit chain came through whole
  auto log = read_file(env.state_dir() / "moatd.log");
  ASSERT_TRUE(log);
  std::printf("moatd.log: %zu line(s) name the full disk\n", occurrences(*log, "the state directory's disk is full"));
  std::printf("case 1 took %.1f s\n", seconds_since(t0));
}

// ------------------------------------------------------------------------------------------------
// 2. The runtime binary is missing, or fails.

// PATHs for moatd: one where runc is not installed (a directory of links to everything in /usr/bin
// and /usr/sbin but runc, which both hold), and one whose runc fails every create and run while
// `broken` exists, as a runc that cannot make containers on this host would, passing every other
// verb to the real one.
class FakeRuntimes {
 public:
  FakeRuntimes() {
    fs::create_directories(without_runc());
    for (const char* dir : {"/usr/sbin", "/usr/bin"})
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename() != "runc" && !fs::exists(without_runc() / e.path().filename()))
          fs::create_symlink(e.path(), without_runc() / e.path().filename());
    fs::create_directories(failing());
    const fs::path script = failing() / "runc";
    std::ofstream(script) << fmt::format(R"SH(#!/bin/sh
if [ -e {flag} ]; then
  log=""; prev=""; verb=""
  for a in "$@"; do
    [ "$prev" = "--log" ] && log="$a"
    case "$a" in run|create) [ -z "$verb" ] && verb="$a";; esac
    prev="$a"
  done
  if [ -n "$verb" ]; then
    msg="container_linux.go:380: starting container process caused: broken-runc-{pid}: cannot make containers on this host"
    [ -n "$log" ] && printf '{{"level":"error","msg":"%s","time":"2026-11-27T00:00:00Z"}}\n' "$msg" >> "$log"
    echo "$msg" >&2
    exit 1
  fi
fi
exec /usr/sbin/runc "$@"
)SH",
                                         fmt::arg("flag", broken().string()), fmt::arg("pid", ::getpid()));
    fs::permissions(script, fs::perms(0755));
  }
  fs::path without_runc() const { return dir_ / "bin"; }
  fs::path failing() const { return dir_ / "failing"; }
  fs::path broken() const { return dir_ / "broken"; }
  std::string marker() const { return fmt::format("broken-runc-{}", ::getpid()); }
  std::string missing_path() const { return without_runc().string(); }
  std::string failing_path() const { return fmt::format("{}:{}", failing().string(), without_runc().string()); }

 private:
  TempDir dir_{"moat-fault-runtime"};
};

TEST(Faults, AMissingOrFailingRuntimeGivesOneClearErrorLeavesNothingAndMoatdKeepsServing) {
  MOAT_REQUIRE_ROOT();
  const auto t0 = SteadyClock::now();
  FakeRuntimes runtimes;
  // Missing: moatd finds no runc on its PATH.
  std::optional<ScopedEnv> path(std::in_place, "PATH", runtimes.missing_path());
  MoatEnv env;
  auto missing = env.moat({"sandbox", "create", "fault-rt", "--start"});
  EXPECT_NE(missing.code, 0);
  EXPECT_TRUE(contains(missing.err, "runtime 'runc' is not installed")) << missing.err;
  EXPECT_TRUE(contains(missing.err, "install-deps")) << missing.err;
  EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1) << "one error, one line: " << missing.err;
  expect_nothing_left_of(env, "fault-rt");
  EXPECT_EQ(env.moat({"daemon", "status"}).code, 0);

  // Failing: the runc moatd finds exits 1 with its reason for every create and run.
  env.stop_daemon();
  path.emplace("PATH", runtimes.failing_path());
  std::ofstream(runtimes.broken()) << "";
  env.start_daemon();
  env.ok({"sandbox", "create", "fault-rt"});
  auto start = env.moat({"sandbox", "start", "fault-rt"});
  EXPECT_NE(start.code, 0);
  EXPECT_TRUE(contains(start.err, "runc run of 'moat-fault-rt-")) << start.err;
  EXPECT_TRUE(contains(start.err, runtimes.marker())) << "the runtime's own reason is not quoted: " << start.err;
  EXPECT_EQ(std::count(start.err.begin(), start.err.end(), '\n'), 1) << "one error, one line: " << start.err;
  auto box = Json::parse(env.ok({"--json", "sandbox", "inspect", "fault-rt"}));
  EXPECT_EQ(box["state"], "stopped") << box.dump();
  auto dir = (env.state_dir() / "sandboxes/fault-rt").string();
  EXPECT_TRUE(mounts_containing(dir).empty()) << "a failed start left a mount";
  EXPECT_TRUE(loops_left(dir).empty()) << "a failed start left a loop device";
  EXPECT_TRUE(cgroups_containing("moat-fault-rt-").empty()) << "a failed start left a cgroup";
  // An exec (which starts a stopped sandbox) fails the same way, and so does create --start, which
  // then leaves no sandbox behind.
  auto exec = env.moat({"exec", "fault-rt", "--", "true"});
  EXPECT_NE(exec.code, 0);
  EXPECT_TRUE(contains(exec.err, runtimes.marker())) << exec.err;
  auto create_start = env.moat({"sandbox", "create", "fault-rt2", "--start"});
  EXPECT_NE(create_start.code, 0);
  EXPECT_TRUE(contains(create_start.err, runtimes.marker())) << create_start.err;
  expect_nothing_left_of(env, "fault-rt2");
  EXPECT_EQ(env.moat({"daemon", "status"}).code, 0);
  EXPECT_EQ(env.moat({"sandbox", "ls"}).code, 0);

  // Once the runtime works again, the same sandbox starts, without a restart of moatd.
  fs::remove(runtimes.broken());
  env.ok({"sandbox", "start", "fault-rt"});
  EXPECT_EQ(env.ok({"exec", "fault-rt", "--", "echo", "ok"}), "ok\n");
  env.remove_all_sandboxes();
  env.stop_daemon();
  std::printf("case 2 took %.1f s\n", seconds_since(t0));
}

// ------------------------------------------------------------------------------------------------
// 3. A sandbox dies in the middle of an exec.

// The host pid of the sandbox's PID 1 (moat-init): the process of its cgroup whose innermost pid is 1.
pid_t sandbox_init_pid(const std::string& name) {
  for (int pid : sandbox_processes(name + "-")) {
    auto status = read_file(fmt::format("/proc/{}/status", pid));
    if (!status) continue;
    auto at = status->find("NSpid:");
    if (at == std::string::npos) continue;
    std::string line = status->substr(at, status->find('\n', at) - at);
    if (line.ends_with("\t1")) return pid;
  }
  return -1;
}

TEST(Faults, ASandboxKilledMidExecEndsTheExecPromptlyAndStartsAgainWithItsFiles) {
  MOAT_REQUIRE_ROOT();
  const auto t0 = SteadyClock::now();
  MoatEnv env;
  env.ok({"sandbox", "create", "fault-exec", "--start"});
  env.ok({"exec", "fault-exec", "--", "sh", "-c", "echo precious > /workspace/keep.txt && sync"});

  auto exec = std::async(std::launch::async, [&] { return env.moat({"exec", "fault-exec", "--", "sleep", "30"}, {}, 60); });
  // Wait for the sleep to run, then kill the sandbox from the host as the OOM killer or an operator would.
  pid_t init = -1;
  for (int i = 0; i < 100 && init < 0; ++i) {
    for (int pid : sandbox_processes("fault-exec-"))
      if (auto comm = read_file(fmt::format("/proc/{}/comm", pid)); comm && trimmed(*comm) == "sleep") init = sandbox_init_pid("fault-exec");
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_GT(init, 0) << "the exec's sleep never appeared in the sandbox";
  const auto killed_at = SteadyClock::now();
  ASSERT_EQ(::kill(init, SIGKILL), 0);

  ASSERT_EQ(exec.wait_for(15s), std::future_status::ready) << "the exec did not return within 15 s of the kill";
  auto r = exec.get();
  double took = seconds_since(killed_at);
  std::printf("exec after the kill: exit %d in %.2f s, stderr: %s", r.code, took, r.err.c_str());
  EXPECT_NE(r.code, 0);
  EXPECT_LT(took, 5.0) << "the exec lingered after its sandbox died";
  EXPECT_TRUE(contains(r.err, "sandbox 'fault-exec' stopped while the command was running")) << r.err;
  EXPECT_TRUE(contains(r.err, "moat sandbox start fault-exec")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one error, one line: " << r.err;

  // The state is reported as it is, and nothing of the dead container is left mounted.
  auto box = Json::parse(env.ok({"--json", "sandbox", "inspect", "fault-exec"}));
  EXPECT_EQ(box["state"], "stopped") << box.dump();
  EXPECT_TRUE(mounts_containing((env.state_dir() / "sandboxes/fault-exec").string()).empty());
  // It starts again, with its files.
  auto start = env.moat({"sandbox", "start", "fault-exec"});
  EXPECT_EQ(start.code, 0) << start.err;
  EXPECT_EQ(env.ok({"exec", "fault-exec", "--", "cat", "/workspace/keep.txt"}), "precious\n");
  EXPECT_EQ(Json::parse(env.ok({"--json", "sandbox", "inspect", "fault-exec"}))["state"], "running");
  std::printf("case 3 took %.1f s\n", seconds_since(t0));
}

// ------------------------------------------------------------------------------------------------
// 4. The provider answers garbage, closes mid-stream, or hangs.

TEST(Faults, ProviderGarbageCutStreamsAndHangsGetRetriesThenAnHonestReplyAndTheKeyNeverShows) {
  MOAT_REQUIRE_ROOT();
  const auto t0 = SteadyClock::now();
  const std::string key = fmt::format("sk-ant-fault-{}-secret", ::getpid());
  ProviderDouble flaky_model({.api_key = key}), stuck_model({.api_key = key});
  MoatEnv env("[router]\nmax_attempts = 2\nretry_base = \"200ms\"\n[agents.flaky]\n" + model_line(flaky_model) +
              "[agents.stuck]\n" + model_line(stuck_model) + "[agents.stuck.limits]\nmax_wall_ms = 3000\n");
  give_key(env, flaky_model, key);
  give_key(env, stuck_model, key);
  auto flaky = Webhook::of(env, "flaky"), stuck = Webhook::of(env, "stuck");

  // Garbage: an HTML page (echoing the request's headers, key included) where the wire format belongs.
  flaky_model.set_reply_function([](const ProviderRequest&) { return ScriptedReply::garbage(); });
  auto t = SteadyClock::now();
  ASSERT_EQ(flaky.post("garbage", "g1", "are you there?").status, 202);
  std::string garbage_reply = flaky.wait_reply("garbage", "Sorry", 60s);
  std::printf("garbage: %zu provider requests, reply after %.1f s: %s\n", flaky_model.requests().size(), seconds_since(t),
              garbage_reply.c_str());
  EXPECT_TRUE(contains(garbage_reply, "2 attempts failed")) << garbage_reply;
  EXPECT_TRUE(contains(garbage_reply, "neither an event stream nor a Message")) << garbage_reply;
  EXPECT_GT(flaky_model.requests().size(), 2u) << "the provider call was not retried";

  // Closed mid-stream after some text.
  flaky_model.clear_requests();
  flaky_model.set_reply_function([](const ProviderRequest&) { return ScriptedReply::cut_stream(); });
  ASSERT_EQ(flaky.post("cut", "c1", "tell me a story").status, 202);
  std::string cut_reply = flaky.wait_reply("cut", "Sorry", 60s);
  std::printf("cut: %zu provider requests, reply: %s\n", flaky_model.requests().size(), cut_reply.c_str());
  EXPECT_TRUE(contains(cut_reply, "2 attempts failed")) << cut_reply;
  EXPECT_TRUE(contains(cut_reply, "connection lost") || contains(cut_reply, "ended before")) << cut_reply;

  // Hangs: nothing after the request. The agent's turn wall-time limit (3 s) cuts the call.
  stuck_model.set_reply_function([](const ProviderRequest&) { return ScriptedReply::hang(); });
  t = SteadyClock::now();
  ASSERT_EQ(stuck.post("hang", "h1", "hello?").status, 202);
  std::string hang_reply = stuck.wait_reply("hang", "", 30s);
  double hang_took = seconds_since(t);
  std::printf("hang: reply after %.1f s: %s\n", hang_took, hang_reply.c_str());
  EXPECT_FALSE(hang_reply.empty()) << "a hanging provider left the sender without an answer";
  EXPECT_LT(hang_took, 15.0) << "the hang was not cut by the 3 s wall-time limit";
  EXPECT_TRUE(contains(hang_reply, "the model had not answered when this turn reached its time limit of 3 s"))
      << hang_reply;
  EXPECT_EQ(stuck_model.requests().size(), 1u) << "a call cut by the time limit was retried";

  // The failed messages are kept, marked failed, with their error.
  auto failed = messages(env, {"--failed"});
  std::set<std::string> failed_ids;
  for (const auto& m : failed) failed_ids.insert(m.value("message_id", std::string()));
  EXPECT_TRUE(failed_ids.contains("flaky/g1")) << failed.dump();
  EXPECT_TRUE(failed_ids.contains("flaky/c1")) << failed.dump();
  for (const auto& m : failed) EXPECT_FALSE(m.value("error", std::string()).empty()) << m.dump();

  // The provider recovers: the next messages are answered, in the chats that failed too.
  flaky_model.set_reply_function(echo);
  stuck_model.set_reply_function(echo);
  ASSERT_EQ(flaky.post("garbage", "g2", "again").status, 202);
  EXPECT_NE(flaky.wait_reply("garbage", "echo: ", 30s), "");
  ASSERT_EQ(stuck.post("hang", "h2", "still there?").status, 202);
  EXPECT_NE(stuck.wait_reply("hang", "still there?", 30s), "");

  // The key is in no reply, no message, no audit record and no log line.
  const std::vector<std::pair<const Webhook*, std::string>> chats{{&flaky, "garbage"}, {&flaky, "cut"}, {&stuck, "hang"}};
  for (const auto& [hook, chat] : chats) EXPECT_FALSE(contains(hook->replies(chat).dump(), key)) << chat;
  EXPECT_FALSE(contains(messages(env, {}).dump(), key));
  EXPECT_FALSE(contains(env.ok({"audit", "export"}), key));
  auto log = read_file(env.state_dir() / "moatd.log");
  ASSERT_TRUE(log);
  EXPECT_FALSE(contains(*log, key)) << "moatd.log holds the provider key";
  std::printf("case 4 took %.1f s\n", seconds_since(t0));
}

// ------------------------------------------------------------------------------------------------
// 5. A channel floods one agent.

TEST(Faults, AFloodedAgentLeavesMoatdResponsiveLosesNothingAndRefusesOnlyExplicitly) {
  MOAT_REQUIRE_ROOT();
  const auto t0 = SteadyClock::now();
  constexpr int kMessages = 2000, kChats = 20, kPosters = 16;
  constexpr double kChatBound = 10.0;  // seconds another agent may take to answer during the flood
  ProviderDouble model({.api_key = "k"});
  model.set_reply_function(echo);
  MoatEnv env("[agents.flooded]\n" + model_line(model) + "[agents.calm]\n" + model_line(model));
  give_key(env, model, "k");
  auto hook = Webhook::of(env, "flooded");
  env.ok({"chat", "calm", "-m", "warm up"});  // the calm agent's sandbox exists before the flood

  // Posters: each message until moatd takes it (a real sender retries, here up to 50 times); every
  // refusal recorded.
  std::atomic<int> next{0}, accepted{0};
  std::mutex mu;
  std::map<int, Reply> refusals;  // status -> the first refusal with it
  int refusal_count = 0;
  auto poster = [&] {
    for (int i; (i = next++) < kMessages;) {
      for (int attempt = 0; attempt < 50; ++attempt) {
        auto r = hook.post(fmt::format("c{}", i % kChats), fmt::format("f{}", i), fmt::format("<f{}>", i));
        if (r.status == 202) {
          ++accepted;
          break;
        }
        {
          std::lock_guard l(mu);
          ++refusal_count;
          refusals.emplace(r.status, r);
        }
        std::this_thread::sleep_for(20ms);
      }
    }
  };
  std::vector<std::thread> posters;
  for (int p = 0; p < kPosters; ++p) posters.emplace_back(poster);

  // Meanwhile another agent's chat answers within the bound.
  std::vector<double> chat_times;
  for (int i = 0; i < 3 && accepted < kMessages; ++i) {
    auto t = SteadyClock::now();
    auto r = env.moat({"chat", "calm", "-m", fmt::format("ping {}", i)}, {}, 60);
    chat_times.push_back(seconds_since(t));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(contains(r.out, fmt::format("ping {}", i))) << r.out;
  }
  for (auto& p : posters) p.join();
  const double flood_took = seconds_since(t0);
  for (double s : chat_times) EXPECT_LT(s, kChatBound) << "the calm agent answered too slowly during the flood";
  ASSERT_EQ(accepted.load(), kMessages);

  // Refusals, if any, were explicit: a status and a body that says what to do.
  for (const auto& [status, r] : refusals) {
    EXPECT_TRUE(status == 429 || status == 503) << status << ": " << r.body;
    EXPECT_FALSE(error_of(r).empty()) << status << ": " << r.body;
  }

  // More connections at once than moatd serves (256): the one beyond is refused with 503 and a body
  // saying to retry, and is not stored: its retry, once the burst is gone, is new, not a duplicate.
  {
    std::vector<UniqueFd> burst;
    for (int i = 0; i < 300; ++i) burst.emplace_back(connect_loopback(hook.port));
    auto busy = hook.post("c0", "burst", "<burst>");
    EXPECT_EQ(busy.status, 503) << busy.body;
    EXPECT_TRUE(contains(error_of(busy), "try again")) << busy.body;
  }
  Reply burst_retry;
  for (auto deadline = SteadyClock::now() + 10s; burst_retry.status != 202 && SteadyClock::now() < deadline;
       std::this_thread::sleep_for(100ms))
    burst_retry = hook.post("c0", "burst", "<burst>");
  EXPECT_EQ(burst_retry.status, 202) << burst_retry.body;
  auto retried = burst_retry.json();
  EXPECT_TRUE(retried.is_object() && retried.value("outcome", std::string()) == "queued") << burst_retry.body;

  // Nothing accepted is lost: every message is stored once and answered.
  constexpr size_t kStored = kMessages + 1;  // and the burst's
  Json answered = messages(env, {"--agent", "flooded", "--state", "answered"});
  for (auto deadline = SteadyClock::now() + 60s; answered.size() < kStored && SteadyClock::now() < deadline;) {
    std::this_thread::sleep_for(500ms);
    answered = messages(env, {"--agent", "flooded", "--state", "answered"});
  }
  EXPECT_EQ(answered.size(), kStored);
  EXPECT_EQ(messages(env, {"--agent", "flooded"}).size(), kStored);
  std::set<std::string> ids;
  for (const auto& m : answered) ids.insert(m.value("message_id", std::string()));
  EXPECT_EQ(ids.size(), kStored);
  std::printf("flood: %d messages posted in %.1f s, %d refusal(s) during it, calm agent answered in", kMessages, flood_took,
              refusal_count);
  for (double s : chat_times) std::printf(" %.2f s", s);
  std::printf("; all answered after %.1f s\n", seconds_since(t0));
}

// A state directory under a parent the sandboxes' unprivileged host uids cannot pass through (a 0700
// `mktemp -d`) used to fail every sandbox start with runc's bare "mount ... permission denied". moatd
// now refuses to start, naming the directory and the mode it needs, and creates nothing there.
TEST(Faults, AStateDirectoryBelowAClosedParentIsRefusedNamingIt) {
  MOAT_REQUIRE_ROOT();
  TempDir closed("moat-closed-parent");  // mkdtemp: 0700
  std::filesystem::permissions(closed.path(), std::filesystem::perms(0700));
  auto state = closed.path() / "state";
  auto r = run_process({MOAT_BUILD_DIR "/moatd", "--state-dir", state.string(), "--init-binary", MOAT_BUILD_DIR "/moat-init"});
  ASSERT_TRUE(r);
  EXPECT_NE(r->exit_code, 0);
  auto said = r->out + r->err;
  EXPECT_NE(said.find(closed.path().string() + " (mode 0700)"), std::string::npos) << said;
  EXPECT_NE(said.find("chmod o+x " + closed.path().string()), std::string::npos) << said;
  EXPECT_FALSE(std::filesystem::exists(state / "moat.db"));
  EXPECT_FALSE(std::filesystem::exists(state / "sandboxes"));
}

}  // namespace
}  // namespace moat::testing
