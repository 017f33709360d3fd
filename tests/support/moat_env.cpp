#include "support/moat_env.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "support/wait.h"

#include "base/fs.h"
#include "base/json.h"

namespace moat::testing {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {
const fs::path kBuild = MOAT_BUILD_DIR;
}  // namespace

const fs::path& busybox_tarball() {
  static TempDir dir("moat-tiny-image");
  static fs::path tar = [] {
    auto p = dir.path() / "tiny.tar.gz";
    make_busybox_tarball(p);
    return p;
  }();
  return tar;
}

MoatEnv::MoatEnv(std::string config_toml) : state_("moat-state") {
  fs::permissions(state_.path(), fs::perms(0711));
  if (config_toml.find("[sandbox]") == std::string::npos) {
    config_toml += "\n[sandbox]\nimage = \"tiny\"\ndisk = \"256MiB\"\nmemory = \"256MiB\"\n";
  }
  // Tests run side by side (and beside a `make up` moatd): the web listener takes any free port
  // unless the test says otherwise; web_url() reads the one it got.
  if (config_toml.find("[web]") == std::string::npos) config_toml += "\n[web]\nlisten = \"127.0.0.1:0\"\n";
  std::ofstream(state_.path() / "moat.toml") << config_toml;
  start_daemon();
  ok({"image", "import", "tiny", busybox_tarball().string()});
}

MoatEnv::~MoatEnv() {
  // A failed test shows what moatd and the sandboxes' moat-init said, since the state dir goes away.
  if (::testing::Test::HasFailure()) {
    if (auto log = read_file(state_.path() / "moatd.log")) std::fprintf(stderr, "--- moatd.log ---\n%s", log->c_str());
    std::error_code ec;
    for (auto& e : fs::directory_iterator(state_.path() / "sandboxes", ec)) {
      if (auto log = read_file(e.path() / "volume/run/init.log"))
        std::fprintf(stderr, "--- %s moat-init log ---\n%s", e.path().filename().c_str(), log->c_str());
    }
  }
  remove_all_sandboxes();
  stop_daemon();
}

std::string MoatEnv::web_url() const {
  auto st = moat({"--json", "daemon", "status"});
  if (st.code != 0) return {};
  auto j = Json::parse(st.out, nullptr, false);
  if (j.is_discarded() || !j.contains("web_url")) return {};
  return j["web_url"].get<std::string>();
}

void MoatEnv::remove_all_sandboxes() {
  if (daemon_pid_ <= 0) return;
  auto ls = moat({"--json", "sandbox", "ls"});
  if (ls.code != 0) return;
  auto j = Json::parse(ls.out, nullptr, false);
  if (!j.is_array()) return;
  for (auto& s : j) moat({"sandbox", "rm", "-f", s["name"].get<std::string>()});
}

std::vector<Json> MoatEnv::audit_records() const {
  std::vector<Json> out;
  std::string all = ok({"audit", "export"});
  for (size_t start = 0, end; start < all.size(); start = end + 1) {
    end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    if (end > start) out.push_back(Json::parse(all.substr(start, end - start)));
  }
  return out;
}

void MoatEnv::start_daemon() {
  auto log = state_.path() / "moatd.log";
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    execl((kBuild / "moatd").c_str(), "moatd", "--state-dir", state_.path().c_str(), "--init-binary",
          (kBuild / "moat-init").c_str(), nullptr);
    _exit(127);
  }
  daemon_pid_ = pid;
  // Generous: a moatd adopting a hundred running sandboxes answers only once it has looked at each.
  for (int i = 0; i < 3000; ++i) {
    if (moat({"daemon", "status"}).code == 0) return;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      daemon_pid_ = -1;
      auto text = read_file(log);
      FAIL() << "moatd exited during start: " << (text ? *text : "");
    }
    std::this_thread::sleep_for(20ms);
  }
  FAIL() << "moatd did not answer within 60 s";
}

void MoatEnv::kill_daemon(int sig) {
  if (daemon_pid_ <= 0) return;
  kill(daemon_pid_, sig);
  waitpid(daemon_pid_, nullptr, 0);
  daemon_pid_ = -1;
}

void MoatEnv::stop_daemon() { kill_daemon(SIGTERM); }

bool MoatEnv::wait_daemon_exit(std::chrono::milliseconds timeout) {
  if (daemon_pid_ <= 0) return true;
  // A child's exit can only be polled (waitpid WNOHANG): the tests' one polling loop does it.
  if (!wait_until([&] { return waitpid(daemon_pid_, nullptr, WNOHANG) == daemon_pid_; }, timeout)) return false;
  daemon_pid_ = -1;
  return true;
}

CliResult MoatEnv::moat(std::vector<std::string> args, std::string stdin_data, int timeout_s) const {
  std::vector<std::string> argv{(kBuild / "moat").string(), "--state-dir", state_.path().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  RunOptions o;
  if (!stdin_data.empty()) o.stdin_data = std::move(stdin_data);
  else o.stdin_data = std::string();
  o.timeout = std::chrono::seconds(timeout_s);
  auto r = run_process(argv, o);
  if (!r) return {-1, "", r.error().message};
  return {r->signal ? 128 + r->signal : r->exit_code, std::move(r->out), std::move(r->err)};
}

std::string MoatEnv::ok(std::vector<std::string> args, std::string stdin_data) const {
  auto r = moat(args, std::move(stdin_data));
  std::string cmd;
  for (auto& a : args) cmd += a + " ";
  EXPECT_EQ(r.code, 0) << "moat " << cmd << "\nstdout: " << r.out << "\nstderr: " << r.err;
  return r.out;
}

std::vector<std::string> mounts_containing(const std::string& needle) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) out.push_back(line);
  }
  return out;
}

std::vector<std::string> loops_containing(const std::string& needle) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/sys/block", ec)) {
    auto backing = e.path() / "loop/backing_file";
    if (!fs::exists(backing)) continue;
    auto text = read_file(backing);
    if (text && text->find(needle) != std::string::npos) out.push_back(e.path().filename().string());
  }
  return out;
}

std::vector<std::string> loops_left(const std::string& needle) {
  auto left = loops_containing(needle);
  for (int i = 0; i < 40 && !left.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = loops_containing(needle);
  }
  return left;
}

std::vector<std::string> cgroups_containing(const std::string& needle) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& ctrl : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    auto moat_dir = ctrl.path() / "moat";
    if (!fs::is_directory(moat_dir)) continue;
    for (auto& e : fs::directory_iterator(moat_dir, ec)) {
      if (e.path().filename().string().find(needle) != std::string::npos) out.push_back(e.path().string());
    }
  }
  return out;
}

std::vector<int> sandbox_processes(const std::string& prefix) {
  std::vector<int> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/proc", ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    auto cg = read_file(e.path() / "cgroup");
    if (cg && cg->find(":/moat/moat-" + prefix) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

bool runtime_usable(const std::string& runtime, std::string* why) {
  auto r = run_process({runtime, "--version"});
  if (!r || !r->ok()) {
    *why = runtime + " is not installed";
    return false;
  }
  if (runtime == "crun") {
    // crun 1.8 refuses hybrid cgroup v1/v2 hosts such as this one.
    bool hybrid = fs::exists("/sys/fs/cgroup/unified") && fs::exists("/sys/fs/cgroup/memory");
    if (hybrid) {
      *why = "crun cannot run on this host's hybrid cgroup v1/v2 layout (crun 1.8 refuses it); runc is the default";
      return false;
    }
  }
  return true;
}

}  // namespace moat::testing
