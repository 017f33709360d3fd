// Issue 5, point 2: moatd killed with SIGKILL at seeded random moments while scratch sandboxes are
// created, started, exec'd into, copied into and out of, stopped and removed through the CLI, and while
// chat turns run (which create and start the agents' own sandboxes). After the restarts nothing may be
// leaked (mounts, loop devices, cgroups, processes), lost or duplicated (messages) or half-created
// (sandboxes), and the audit chain must verify.
//
//   MOAT_CRASH_ITERATIONS=N  iterations (default 3; `make test-long` runs 50)
//   MOAT_CRASH_SEED=S        the run's seed (default: random); printed first, and with any failure
//   MOAT_CRASH_ONLY=I        run only iteration I of that seed (to replay one failure)
//
// Every random choice of an iteration comes from (seed, iteration), each actor's from (seed, iteration,
// actor), so an iteration's plan replays exactly; only thread timing varies between runs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <fmt/ranges.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/subprocess.h"
#include "support/moat_env.h"
#include "support/provider_double.h"

namespace moat::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Rng = std::mt19937_64;
using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

constexpr int kAgents = 2, kWorkers = 2, kSandboxesPerWorker = 2;
constexpr auto kPatience = 120s;  // for anything that must happen eventually (restart, answers, delivery)

// ---- seeds ----

struct RunSettings {
  uint64_t seed = 0;
  int iterations = 3;
  std::optional<int> only;
};

RunSettings settings_from_environment() {
  RunSettings s;
  if (auto* n = std::getenv("MOAT_CRASH_ITERATIONS")) s.iterations = std::stoi(n);
  if (auto* seed = std::getenv("MOAT_CRASH_SEED")) {
    s.seed = std::stoull(seed);
  } else {
    std::random_device dev;
    s.seed = (uint64_t(dev()) << 32) | dev();
  }
  if (auto* only = std::getenv("MOAT_CRASH_ONLY")) s.only = std::stoi(only);
  return s;
}

Rng rng_for(uint64_t seed, int iteration, int actor) {
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(iteration), uint32_t(actor)};
  return Rng(seq);
}

int pick(Rng& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// What one iteration does, all drawn from its own generator before anything runs.
struct IterationPlan {
  std::vector<std::chrono::milliseconds> kill_after;  // the first from the start of the work, then from each restart
  std::vector<int> ops_per_worker;
  int chats = 0, messages_per_chat = 0;

  static IterationPlan draw(Rng& rng) {
    IterationPlan p;
    // Within the span the sandbox workers' 4-8 operations usually take on a loaded 2-core machine, so
    // most kills land in the middle of one; the chat turns run longer.
    p.kill_after.push_back(std::chrono::milliseconds(pick(rng, 50, 1500)));
    if (pick(rng, 0, 1)) p.kill_after.push_back(std::chrono::milliseconds(pick(rng, 50, 1000)));
    for (int w = 0; w < kWorkers; ++w) p.ops_per_worker.push_back(pick(rng, 4, 8));
    p.chats = pick(rng, 2, 4);
    p.messages_per_chat = pick(rng, 2, 4);
    return p;
  }
  std::string describe() const {
    std::vector<long> ms;
    for (auto d : kill_after) ms.push_back(d.count());
    int ops = 0;
    for (int n : ops_per_worker) ops += n;
    return fmt::format("kills after {} ms, {} sandbox ops, {} messages", fmt::join(ms, " + "), ops,
                       chats * messages_per_chat);
  }
};

// ---- moatd and its outages ----

// The windows in which moatd was down: from just before each SIGKILL until its successor answered. A
// CLI call that overlaps one may fail, and then its effect is unknown; any other call must succeed.
class Outages {
 public:
  void begin() {
    std::lock_guard l(mu_);
    windows_.push_back({SteadyClock::now(), std::nullopt});
  }
  void end() {
    {
      std::lock_guard l(mu_);
      windows_.back().second = SteadyClock::now();
    }
    up_.notify_all();
  }
  bool overlaps(TimePoint from, TimePoint to) const {
    std::lock_guard l(mu_);
    for (auto& [down, up] : windows_)
      if (from <= up.value_or(TimePoint::max()) && to >= down) return true;
    return false;
  }
  bool wait_until_up() const {
    std::unique_lock l(mu_);
    return up_.wait_for(l, kPatience, [&] { return windows_.empty() || windows_.back().second.has_value(); });
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable up_;
  std::vector<std::pair<TimePoint, std::optional<TimePoint>>> windows_;
};

// The MoatEnv under attack: killed and restarted by the test's main thread while workers use it.
class CrashedDaemon {
 public:
  explicit CrashedDaemon(MoatEnv& env) : env_(env), web_url_(env.web_url()) {}

  // False when the successor did not come up (the test has failed then).
  bool kill_and_restart() {
    outages_.begin();
    env_.kill_daemon(SIGKILL);
    env_.start_daemon();
    {
      std::lock_guard l(mu_);
      web_url_ = env_.web_url();  // port 0: the web listener's port changes with each start
    }
    outages_.end();
    return env_.daemon_pid() > 0;
  }
  std::string web_url() const {
    std::lock_guard l(mu_);
    return web_url_;
  }
  const MoatEnv& env() const { return env_; }
  const Outages& outages() const { return outages_; }

 private:
  MoatEnv& env_;
  Outages outages_;
  mutable std::mutex mu_;
  std::string web_url_;
};

// ---- host leftovers ----

// Processes other than `except` whose command line names `needle` (a runtime or helper moatd left behind).
std::vector<std::string> processes_naming(const std::string& needle, pid_t except) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/proc", ec)) {
    auto pid = e.path().filename().string();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0])) || std::stoi(pid) == except) continue;
    auto cmd = read_file(e.path() / "cmdline");
    if (!cmd || cmd->find(needle) == std::string::npos) continue;
    std::replace(cmd->begin(), cmd->end(), '\0', ' ');
    out.push_back(fmt::format("pid {}: {}", pid, *cmd));
  }
  return out;
}

// What is left on the host of this state directory's sandboxes: mounts and loop devices whose path
// contains `path`, cgroups and processes named "moat-<name_prefix>...". Processes of a just-killed
// sandbox take a moment to be reaped, so they are given a few seconds.
std::vector<std::string> host_leftovers(const std::string& path, const std::string& name_prefix) {
  std::vector<int> procs = sandbox_processes(name_prefix);
  for (int i = 0; i < 50 && !procs.empty(); ++i) {
    std::this_thread::sleep_for(100ms);
    procs = sandbox_processes(name_prefix);
  }
  std::vector<std::string> out;
  for (auto& m : mounts_containing(path)) out.push_back("mount: " + m);
  for (auto& l : loops_left(path)) out.push_back("loop device: " + l);
  for (auto& c : cgroups_containing("moat-" + name_prefix)) out.push_back("cgroup: " + c);
  for (int p : procs) {
    auto cmd = read_file(fmt::format("/proc/{}/cmdline", p));
    out.push_back(fmt::format("sandbox process {}: {}", p, cmd ? *cmd : "?"));
  }
  return out;
}

// What is left of one sandbox that should be gone, its directory included. The trailing '/' and '-'
// keep "s1" from matching "s10".
std::vector<std::string> leftovers_of_sandbox(const MoatEnv& env, const std::string& name) {
  auto dir = env.state_dir() / "sandboxes" / name;
  auto out = host_leftovers(dir.string() + "/", name + "-");
  if (fs::exists(dir)) out.push_back("its directory " + dir.string());
  return out;
}

std::map<std::string, std::string> listed_sandboxes(const MoatEnv& env) {
  std::map<std::string, std::string> out;  // name -> state
  auto r = env.moat({"--json", "sandbox", "ls"});
  EXPECT_EQ(r.code, 0) << r.err;
  auto j = Json::parse(r.out, nullptr, false);
  if (!j.is_array()) return out;
  for (auto& s : j) out[s["name"].get<std::string>()] = s.value("state", "");
  return out;
}

// ---- sandbox work ----

enum class Presence {
  Absent,
  Present,
  Removing,  // an rm was cut short by a kill and the store still lists it: rm again is what a user does
};

struct ScratchSandbox {
  std::string name;
  Presence presence = Presence::Absent;
  std::optional<std::string> file;  // what /workspace/f holds, when a copy-in is known to have finished
};

// One CLI user doing a seeded sequence of operations on sandboxes of its own. It keeps a model of what
// exists; an operation cut short by a kill makes it ask moatd (once up again) what became of it.
class SandboxWorker {
 public:
  SandboxWorker(const CrashedDaemon& daemon, Rng rng, const std::string& prefix, int ops)
      : daemon_(daemon), rng_(rng), ops_(ops) {
    for (int k = 0; k < kSandboxesPerWorker; ++k) sandboxes_.push_back({fmt::format("{}-s{}", prefix, k)});
  }

  void run() {
    for (int op = 0; op < ops_; ++op) {
      auto& s = sandboxes_[pick(rng_, 0, kSandboxesPerWorker - 1)];
      perform(s, op);
    }
  }
  const std::vector<ScratchSandbox>& sandboxes() const { return sandboxes_; }
  const std::vector<std::string>& failures() const { return failures_; }
  int performed() const { return performed_; }
  int cut_short() const { return cut_short_; }

 private:
  enum class Op { Create, CreateStarted, Start, Exec, CopyIn, CopyOut, Stop, Remove };

  Op choose(const ScratchSandbox& s) {
    switch (s.presence) {
      case Presence::Absent:
        return pick(rng_, 0, 1) ? Op::CreateStarted : Op::Create;
      case Presence::Removing:
        return Op::Remove;
      case Presence::Present:
        break;
    }
    static constexpr Op kWeighted[] = {Op::Exec, Op::Exec, Op::Exec, Op::CopyIn, Op::CopyIn, Op::CopyOut,
                                       Op::Start, Op::Stop, Op::Stop, Op::Remove};
    Op op = kWeighted[pick(rng_, 0, int(std::size(kWeighted)) - 1)];
    return op == Op::CopyOut && !s.file ? Op::CopyIn : op;
  }

  void perform(ScratchSandbox& s, int n) {
    Op op = choose(s);
    std::string content = fmt::format("{} op {}\n", s.name, n);
    std::vector<std::string> args;
    std::string input;
    switch (op) {
      case Op::Create: args = {"sandbox", "create", s.name}; break;
      case Op::CreateStarted: args = {"sandbox", "create", s.name, "--start"}; break;
      case Op::Start: args = {"sandbox", "start", s.name}; break;
      case Op::Exec: args = {"exec", s.name, "--", "sh", "-c", fmt::format("echo {} >> /workspace/log", n)}; break;
      case Op::CopyIn:
        args = {"cp", "-", s.name + ":/workspace/f"};
        input = content;
        break;
      case Op::CopyOut: args = {"cp", s.name + ":/workspace/f", "-"}; break;
      case Op::Stop: args = {"sandbox", "stop", s.name}; break;
      case Op::Remove: args = {"sandbox", "rm", "-f", s.name}; break;
    }
    auto t0 = SteadyClock::now();
    auto r = daemon_.env().moat(args, input, 120);
    auto t1 = SteadyClock::now();
    ++performed_;
    if (r.code == 0) {
      succeeded(s, op, content, r.out);
      return;
    }
    if (daemon_.outages().overlaps(t0, t1))
      ++cut_short_;
    else
      failures_.push_back(fmt::format("`moat {}` exited {} while moatd was up: {}", fmt::join(args, " "), r.code, r.err));
    learn_state(s, op == Op::Remove);
  }

  void succeeded(ScratchSandbox& s, Op op, const std::string& content, const std::string& out) {
    switch (op) {
      case Op::Create:
      case Op::CreateStarted:
        s.presence = Presence::Present;
        s.file.reset();
        break;
      case Op::CopyIn: s.file = content; break;
      case Op::CopyOut:
        if (out != *s.file)
          failures_.push_back(fmt::format("{}:/workspace/f holds '{}', not '{}' as copied in", s.name, out, *s.file));
        break;
      case Op::Remove: s.presence = Presence::Absent; break;
      default: break;
    }
  }

  // After a call cut short: whatever it did or did not do, the store now says whether the sandbox exists.
  void learn_state(ScratchSandbox& s, bool was_remove) {
    s.file.reset();  // a copy-in cut short may or may not have landed
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (!daemon_.outages().wait_until_up()) break;
      auto t0 = SteadyClock::now();
      auto r = daemon_.env().moat({"--json", "sandbox", "inspect", s.name});
      if (r.code == 0) {
        if (was_remove) s.presence = Presence::Removing;
        else if (s.presence == Presence::Absent) s.presence = Presence::Present;
        return;
      }
      if (r.code == 3) {
        s.presence = Presence::Absent;
        return;
      }
      if (!daemon_.outages().overlaps(t0, SteadyClock::now())) {
        failures_.push_back(
            fmt::format("`moat sandbox inspect {}` exited {} while moatd was up: {}", s.name, r.code, r.err));
        return;
      }
    }
    failures_.push_back(fmt::format("could not learn what became of sandbox {}: moatd did not come back", s.name));
  }

  const CrashedDaemon& daemon_;
  Rng rng_;
  int ops_;
  int performed_ = 0, cut_short_ = 0;
  std::vector<ScratchSandbox> sandboxes_;
  std::vector<std::string> failures_;
};

// ---- chat work ----

struct Delivery {
  std::string key, text;
};

// Messages posted to the agents' webhooks (each chat's in order, each retried until moatd answers 202,
// as a real integration does across restarts), and the replies the callback server received.
class ChatTraffic {
 public:
  ChatTraffic(const CrashedDaemon& daemon, std::vector<std::string> agents, std::map<std::string, std::string> tokens,
              int chats, int per_chat)
      : daemon_(daemon), agents_(std::move(agents)), tokens_(std::move(tokens)), chats_(chats), per_chat_(per_chat) {}

  std::string callback_url() const { return callback_.origin() + "/cb"; }
  int messages() const { return chats_ * per_chat_; }

  // Runs one poster per chat; returns when each has had every message accepted (or gave up).
  void post_all() {
    std::vector<std::jthread> posters;
    for (int c = 0; c < chats_; ++c) posters.emplace_back([this, c] { post_chat(c); });
  }

  // Every message's token has come back in some reply.
  bool wait_all_answered() const {
    auto deadline = SteadyClock::now() + kPatience;
    while (answered().size() < size_t(messages()) && SteadyClock::now() < deadline) std::this_thread::sleep_for(200ms);
    return answered().size() == size_t(messages());
  }

  // No reply under two keys, one text per key, and each chat's messages answered in order.
  void check_exactly_once_in_order(int* distinct_keys, int* repeats) const {
    std::map<std::string, std::string> text_by_key;
    *repeats = 0;
    for (auto& d : deliveries()) {
      EXPECT_FALSE(d.key.empty()) << "a callback without Idempotency-Key: " << d.text;
      auto [it, fresh] = text_by_key.emplace(d.key, d.text);
      if (fresh) continue;
      ++*repeats;
      EXPECT_EQ(it->second, d.text) << "key " << d.key << " carried two different texts";
    }
    *distinct_keys = int(text_by_key.size());
    std::map<int, std::vector<std::pair<int64_t, std::string>>> by_chat;  // chat -> (outbox id, text)
    for (auto& [key, text] : text_by_key) {
      std::smatch m;
      if (!std::regex_search(text, m, token_re_)) {
        ADD_FAILURE() << "a reply naming no message: " << text;
        continue;
      }
      by_chat[std::stoi(m[1])].push_back({std::stoll(key.substr(1)), text});
    }
    for (int c = 0; c < chats_; ++c) {
      auto& replies = by_chat[c];
      std::sort(replies.begin(), replies.end());
      std::vector<int> order, want;
      for (auto& [id, text] : replies)
        for (std::sregex_iterator it(text.begin(), text.end(), token_re_), end; it != end; ++it) {
          EXPECT_EQ(std::stoi((*it)[1]), c) << "a reply in chat " << c << " answered another chat: " << text;
          order.push_back(std::stoi((*it)[2]));
        }
      for (int s = 0; s < per_chat_; ++s) want.push_back(s);
      EXPECT_EQ(order, want) << "chat " << c << ": messages answered out of order, twice or not at all";
    }
  }

  void record(const RecordedRequest& req) {
    auto j = Json::parse(req.body, nullptr, false);
    std::lock_guard l(mu_);
    deliveries_.push_back({req.header("idempotency-key").value_or(""), j.is_discarded() ? "" : j.value("text", "")});
  }

 private:
  std::string agent_of(int chat) const { return agents_[chat % agents_.size()]; }

  void post_chat(int c) {
    auto agent = agent_of(c);
    for (int s = 0; s < per_chat_; ++s) {
      Json body{{"chat", fmt::format("c{}", c)}, {"sender", "crash"}, {"message_id", fmt::format("m{}-{}", c, s)},
                {"text", fmt::format("<m{}-{}>", c, s)}, {"callback_url", callback_url()}};
      if (!post_until_accepted(agent, body)) {
        ADD_FAILURE() << "message m" << c << "-" << s << " was never accepted";
        return;
      }
    }
  }

  // A retry after a lost response is a duplicate for moatd, which answers it 202 "duplicate".
  bool post_until_accepted(const std::string& agent, const Json& body) const {
    auto deadline = SteadyClock::now() + kPatience;
    while (SteadyClock::now() < deadline) {
      auto r = run_process({"curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                            "Authorization: Bearer " + tokens_.at(agent), "-H", "Content-Type: application/json",
                            "--data-binary", body.dump(), fmt::format("{}/hooks/{}", daemon_.web_url(), agent)});
      if (r && r->out == "202") return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::vector<Delivery> deliveries() const {
    std::lock_guard l(mu_);
    return deliveries_;
  }

  std::set<std::string> answered() const {
    std::set<std::string> seen;
    for (auto& d : deliveries())
      for (std::sregex_iterator it(d.text.begin(), d.text.end(), token_re_), end; it != end; ++it) seen.insert(it->str());
    return seen;
  }

  const CrashedDaemon& daemon_;
  std::vector<std::string> agents_;
  std::map<std::string, std::string> tokens_;
  int chats_, per_chat_;
  const std::regex token_re_{"<m(\\d+)-(\\d+)>"};
  mutable std::mutex mu_;
  std::vector<Delivery> deliveries_;
  UpstreamServer callback_{{.handler = [this](const RecordedRequest& req, ResponseWriter& w) {
    record(req);
    w.send(HttpResponse::json(200, "{}"));
  }}};
};

// ---- the store's view ----

// One number from moat.db, read beside the running moatd (WAL lets a reader in at any time).
int64_t store_count(const fs::path& db_path, const char* sql) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

// The store agrees with what the callback server saw: every envelope answered once, every reply
// delivered (marking a delivery may trail the callback's 200 by a moment).
void check_store_agrees(const MoatEnv& env, int messages, int distinct_keys) {
  auto db = env.db_path();
  auto undelivered = [&] {
    return store_count(db, "SELECT count(*) FROM outbox WHERE channel = 'webhook' AND delivered_at_ms = 0");
  };
  auto deadline = SteadyClock::now() + kPatience;
  while (undelivered() != 0 && SteadyClock::now() < deadline) std::this_thread::sleep_for(200ms);
  EXPECT_EQ(undelivered(), 0) << "outbox rows never marked delivered";
  EXPECT_EQ(store_count(db, "SELECT count(*) FROM envelopes WHERE channel = 'webhook'"), messages);
  EXPECT_EQ(store_count(db, "SELECT count(*) FROM envelopes WHERE channel = 'webhook' AND state = 'answered'"), messages);
  EXPECT_EQ(store_count(db, "SELECT count(*) FROM outbox WHERE channel = 'webhook'"), distinct_keys);
}

// ---- one iteration ----

std::string agents_toml(const std::vector<std::string>& agents, const ProviderDouble& model) {
  std::string toml = "[router]\nmax_concurrent_turns = 4\nretry_base = \"200ms\"\nmax_attempts = 10\n";
  toml += "[sandbox]\nimage = \"tiny\"\ndisk = \"64MiB\"\nmemory = \"64MiB\"\n";
  for (auto& a : agents)
    toml += fmt::format(
        "[agents.{}]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", base_url = \"{}\" }}\n", a,
        model.anthropic_base_url());
  return toml;
}

// Each sandbox the workers know of is where their model says; every sandbox the store lists starts
// and runs `true` (nothing half-created) or, if a kill cut its rm short, is removed cleanly; every
// sandbox that is gone left nothing on the host.
void check_sandboxes(const MoatEnv& env, const std::vector<SandboxWorker>& workers) {
  auto listed = listed_sandboxes(env);
  std::set<std::string> finish_removing;
  for (auto& w : workers) {
    for (auto& f : w.failures()) ADD_FAILURE() << f;
    for (auto& s : w.sandboxes()) {
      bool is_listed = listed.contains(s.name);
      switch (s.presence) {
        case Presence::Present: EXPECT_TRUE(is_listed) << "sandbox " << s.name << " was created but is gone"; break;
        case Presence::Absent:
          EXPECT_FALSE(is_listed) << "sandbox " << s.name << " was removed but is listed";
          if (!is_listed)
            for (auto& l : leftovers_of_sandbox(env, s.name)) ADD_FAILURE() << "removed sandbox " << s.name << " left " << l;
          break;
        case Presence::Removing:
          if (is_listed) finish_removing.insert(s.name);
          break;
      }
    }
  }
  for (auto& [name, state] : listed) {
    if (finish_removing.contains(name)) continue;
    auto r = env.moat({"exec", name, "--", "true"}, {}, 120);
    EXPECT_EQ(r.code, 0) << "sandbox " << name << " (" << state << ") cannot start and run true: " << r.err;
  }
  for (auto& name : finish_removing) {
    auto r = env.moat({"sandbox", "rm", "-f", name}, {}, 120);
    EXPECT_EQ(r.code, 0) << "sandbox " << name << " whose rm was cut short cannot be removed: " << r.err;
    for (auto& l : leftovers_of_sandbox(env, name)) ADD_FAILURE() << "removed sandbox " << name << " left " << l;
  }
}

// Everything removed, then moatd stopped: nothing at all is left under the state directory's name.
void check_nothing_remains(MoatEnv& env, const std::string& tag) {
  for (auto& [name, state] : listed_sandboxes(env)) {
    auto r = env.moat({"sandbox", "rm", "-f", name}, {}, 120);
    EXPECT_EQ(r.code, 0) << "sandbox " << name << " (" << state << ") cannot be removed: " << r.err;
  }
  EXPECT_TRUE(listed_sandboxes(env).empty());
  auto audit = env.moat({"audit", "verify"});
  EXPECT_EQ(audit.code, 0) << "audit chain: " << audit.out << audit.err;
  env.stop_daemon();
  auto state = env.state_dir().string();
  auto left = host_leftovers(state, tag + "-");
  for (auto& p : processes_naming(state, getpid())) left.push_back("process " + p);
  for (auto dir : {"sandboxes", "runtime/runc"}) {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(env.state_dir() / dir, ec)) left.push_back("file " + e.path().string());
  }
  for (auto& l : left) ADD_FAILURE() << "left behind: " << l;
}

struct IterationReport {
  int sandbox_ops = 0, cut_short = 0, replies = 0, repeats = 0;
};

// Runs the planned work while killing moatd, then checks every invariant.
void run_iteration(uint64_t seed, int iteration, const IterationPlan& plan, IterationReport& report) {
  // Names unique host-wide: cgroups are shared with every other test running on this machine.
  std::string tag = fmt::format("cx{}i{}", getpid(), iteration);
  std::vector<std::string> agents;
  for (int a = 0; a < kAgents; ++a) agents.push_back(fmt::format("{}-a{}", tag, a));

  ProviderDouble model({.api_key = "crash-key"});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("echo " + r.last_user_text()); });
  MoatEnv env(agents_toml(agents, model));
  env.ok({"secret", "set", "crash-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "crash-key");
  std::map<std::string, std::string> tokens;
  for (auto& a : agents) tokens[a] = Json::parse(env.ok({"--json", "agent", "webhook", a}))["token"];

  CrashedDaemon daemon(env);
  ChatTraffic chat(daemon, agents, tokens, plan.chats, plan.messages_per_chat);
  std::vector<SandboxWorker> workers;
  for (int w = 0; w < kWorkers; ++w)
    workers.emplace_back(daemon, rng_for(seed, iteration, 1 + w), fmt::format("{}-w{}", tag, w), plan.ops_per_worker[w]);
  bool restarted = true;
  {
    std::vector<std::jthread> work;
    for (auto& w : workers) work.emplace_back([&w] { w.run(); });
    work.emplace_back([&chat] { chat.post_all(); });
    for (auto delay : plan.kill_after) {
      std::this_thread::sleep_for(delay);
      if (!(restarted = daemon.kill_and_restart())) break;
    }
  }
  ASSERT_TRUE(restarted) << "moatd did not come back after SIGKILL";

  EXPECT_TRUE(chat.wait_all_answered()) << "not every accepted message was answered";
  chat.check_exactly_once_in_order(&report.replies, &report.repeats);
  check_store_agrees(env, chat.messages(), report.replies);
  check_sandboxes(env, workers);
  check_nothing_remains(env, tag);
  for (auto& w : workers) {
    report.sandbox_ops += w.performed();
    report.cut_short += w.cut_short();
  }
}

int failed_parts() {
  auto* result = ::testing::UnitTest::GetInstance()->current_test_info()->result();
  int n = 0;
  for (int i = 0; i < result->total_part_count(); ++i) n += result->GetTestPartResult(i).failed();
  return n;
}

TEST(CrashIterations, SeededKillsLeaveNothingLeakedLostOrDuplicated) {
  MOAT_REQUIRE_ROOT();
  std::string why;
  if (!runtime_usable("runc", &why)) GTEST_SKIP() << why;
  auto run = settings_from_environment();
  fmt::print("crash iterations: seed {}, {} iterations{}\n", run.seed, run.iterations,
             run.only ? fmt::format(" (only iteration {})", *run.only) : "");
  std::fflush(stdout);
  int passed = 0, failed = 0;
  for (int i = 1; i <= run.iterations; ++i) {
    if (run.only && *run.only != i) continue;
    Rng rng = rng_for(run.seed, i, 0);
    auto plan = IterationPlan::draw(rng);
    int failures_before = failed_parts();
    auto t0 = SteadyClock::now();
    IterationReport report;
    run_iteration(run.seed, i, plan, report);
    double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    bool ok = failed_parts() == failures_before;
    (ok ? passed : failed)++;
    fmt::print("crash iteration {}/{} {} in {:.1f} s: {}; {} ops cut short, {} replies ({} repeated deliveries dropped "
               "by key)\n",
               i, run.iterations, ok ? "passed" : "FAILED", secs, plan.describe(), report.cut_short, report.replies,
               report.repeats);
    if (!ok)
      fmt::print("crash iterations: FAILED at iteration {}, seed {} (rerun: MOAT_CRASH_SEED={} MOAT_CRASH_ITERATIONS={} "
                 "MOAT_CRASH_ONLY={} ./crash_iterations_test)\n",
                 i, run.seed, run.seed, run.iterations, i);
    std::fflush(stdout);
  }
  fmt::print("crash iterations: {} passed, {} failed (seed {})\n", passed, failed, run.seed);
}

}  // namespace
}  // namespace moat::testing
