#include "bench_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>

#include "api/client.h"
#include "base/fs.h"
#include "base/subprocess.h"
#include "wire/frame.h"
#include "wire/messages.h"

namespace moat::bench {

namespace {
std::filesystem::path g_daemon_log;  // shown when the bench dies, since the state directory goes away
}

void die(const std::string& what) {
  std::string msg = "bench: " + what;
  if (!g_daemon_log.empty()) {
    if (auto log = read_file(g_daemon_log)) {
      std::string tail = log->size() > 4000 ? log->substr(log->size() - 4000) : *log;
      msg += "\n--- moatd.log (end) ---\n" + tail;
    }
  }
  throw BenchFailure(msg);
}

int run_reporting_failure(int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const BenchFailure& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

Daemon::Daemon(const std::filesystem::path& state, const std::string& config) : state_(state) {
  std::ofstream(state / "moat.toml") << config;
  g_daemon_log = state / "moatd.log";
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open((state / "moatd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    execl((kBuild / "moatd").c_str(), "moatd", "--state-dir", state.c_str(), "--init-binary",
          (kBuild / "moat-init").c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 1500; ++i) {
    if (api::Client::connect(socket())) return;
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  die("moatd did not start; see " + (state / "moatd.log").string());
}

Daemon::~Daemon() {
  if (!api::call(socket(), "daemon.stop", Json{{"all", true}})) kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
}

ExecResult exec_over_api(const Daemon& d, const std::string& name, std::vector<std::string> argv) {
  auto c = must(api::Client::connect(d.socket()), "connect");
  must(c.call("exec", Json{{"name", name}, {"argv", argv}}), "exec");
  (void)wire::write_frame(c.fd(), wire::FrameType::StdinEof);
  ExecResult r;
  for (;;) {
    auto f = must(wire::read_frame(c.fd()), "exec stream");
    if (f.type == wire::FrameType::Stdout || f.type == wire::FrameType::Stderr) r.out += f.payload;
    if (f.type == wire::FrameType::Exit) {
      r.exit_code = must(wire::decode<wire::ExecExit>(f.payload), "exec exit").exit_code;
      return r;
    }
  }
}

Json Daemon::call(std::string_view verb, Json args) const { return must(api::call(socket(), verb, std::move(args)), verb); }

uint64_t Daemon::rss_kib() const {
  std::ifstream in(fmt::format("/proc/{}/status", pid_));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6));
  }
  die("cannot read moatd's VmRSS");
}

void write_section(const std::string& path, const std::string& heading, const std::string& section) {
  std::string md = read_file(path).value_or("# Benchmarks\n");
  auto start = md.find("\n" + heading + "\n");
  if (start != std::string::npos) {
    auto next = md.find("\n## ", start + 1);
    md = md.substr(0, start + 1) + section + (next == std::string::npos ? "" : md.substr(next));
  } else {
    if (!md.ends_with("\n")) md += "\n";
    md += "\n" + section;
  }
  if (auto st = write_file_atomic(path, md); !st) die(st.error().message);
}

std::string machine_line() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  auto date = run_checked({"date", "-u", "+%Y-%m-%d %H:%M UTC"});
  return fmt::format("{} cores, host {}, {}", std::thread::hardware_concurrency(), host,
                     date ? date->substr(0, date->find('\n')) : std::string("?"));
}

}  // namespace moat::bench
