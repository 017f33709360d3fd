// make bench: sandbox figures measured against a baseline run on the same machine in the same run,
// written to docs/benchmarks.md with the command that produced them.
//
//   cold start   moat: create + start + first exec of `true`   vs   bare `runc run` of the same root
//   exec         moat: one exec of `true` on a running sandbox vs   `runc exec` on a running container
//   memory       host memory per idle running sandbox, with N running (MemAvailable before/after)
//   density      how many idle sandboxes run at once (stops at the target)
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "api/client.h"
#include "bench_support.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/subprocess.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::bench;
using namespace std::chrono;
namespace fs = std::filesystem;

namespace {

int64_t mem_available_kib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t value;
  std::string unit;
  while (in >> key >> value >> unit) {
    if (key == "MemAvailable:") return value;
  }
  return 0;
}

// What the memory cgroups of the bench's idle sandboxes account for, in KiB per sandbox (cgroup v2 or
// v1): their processes' memory and the kernel memory charged to them. A cross-check on the figure from
// MemAvailable, which other work on a shared host moves too.
double cgroup_kib_per_idle_sandbox() {
  int64_t total = 0;
  int n = 0;
  for (auto [dir, file] : {std::pair{"/sys/fs/cgroup/moat", "memory.current"},
                           {"/sys/fs/cgroup/memory/moat", "memory.usage_in_bytes"}}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (!e.path().filename().string().starts_with("moat-idle")) continue;
      if (auto v = read_file(e.path() / file)) {
        total += std::atoll(v->c_str());
        ++n;
      }
    }
    if (n > 0) break;
  }
  return n > 0 ? static_cast<double>(total) / 1024 / n : 0;
}

void drop_caches() {
  sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

constexpr const char* kConfig =
    "[daemon]\nidle_timeout = \"0\"\n[sandbox]\nimage = \"tiny\"\ndisk = \"64MiB\"\nmemory = \"64MiB\"\n";

// A plain runc bundle of the same busybox root, with runc's own default spec: the baseline.
struct BareRunc {
  testing::TempDir dir{"moat-bench-runc"};
  fs::path bundle = dir.path() / "bundle";
  fs::path root = dir.path() / "root";
  BareRunc() {
    fs::create_directories(bundle / "rootfs");
    testing::make_busybox_rootfs(bundle / "rootfs");
    must(run_checked({"runc", "spec", "--bundle", bundle.string()}), "runc spec");
    auto cfg = Json::parse(must(read_file(bundle / "config.json"), "read spec"));
    cfg["process"]["terminal"] = false;
    cfg["process"]["args"] = {"true"};
    (void)write_file_atomic(bundle / "config.json", cfg.dump());
  }
  std::vector<std::string> runc(std::vector<std::string> args) const {
    std::vector<std::string> v{"runc", "--root", root.string()};
    v.insert(v.end(), args.begin(), args.end());
    return v;
  }
  void set_args(std::vector<std::string> args) {
    auto cfg = Json::parse(must(read_file(bundle / "config.json"), "read spec"));
    cfg["process"]["args"] = args;
    (void)write_file_atomic(bundle / "config.json", cfg.dump());
  }
};

}  // namespace

int run_bench(int argc, char** argv);

int main(int argc, char** argv) {
  return run_reporting_failure(run_bench, argc, argv);
}

int run_bench(int argc, char** argv) {
  if (geteuid() != 0) die("run as root (make bench)");
  int density_target = argc > 1 ? std::atoi(argv[1]) : 500;
  int memory_count = std::min(200, density_target);
  const int kColdRuns = 20, kExecRuns = 300;
  std::string out_path = argc > 2 ? argv[2] : "docs/benchmarks.md";

  testing::TempDir state("moat-bench-state");
  fs::permissions(state.path(), fs::perms(0711));
  auto tarball = state.path() / "tiny.tar.gz";
  testing::make_busybox_tarball(tarball);

  // Each figure and its baseline take turns, run for run, so a change in the machine's load (other
  // work on a shared host) falls on both alike.
  BareRunc bare;
  Daemon d(state.path(), kConfig);
  d.call("image.import", Json{{"name", "tiny"}, {"path", tarball.string()}});

  // Cold start: moat's create + start + first exec of `true`, and a bare `runc run` of `true`.
  std::vector<double> runc_run, cold;
  for (int i = 0; i < kColdRuns; ++i) {
    auto t0 = steady_clock::now();
    must(run_checked(bare.runc({"run", "--bundle", bare.bundle.string(), fmt::format("bench-run-{}", i)})), "runc run");
    runc_run.push_back(ms_since(t0));

    auto name = fmt::format("cold{}", i);
    t0 = steady_clock::now();
    d.call("sandbox.create", Json{{"name", name}, {"start", true}});
    exec_over_api(d, name, {"true"});
    cold.push_back(ms_since(t0));
    d.call("sandbox.rm", Json{{"name", name}, {"force", true}});
  }
  std::fprintf(stderr, "cold start p50: moat %.1f ms, runc run %.1f ms\n", percentile(cold, 0.5),
               percentile(runc_run, 0.5));

  // Exec round trip on a running sandbox, `runc exec` on a running container (one for every six of
  // moat's: it is slow), and the floor under any exec of `true`: creating, running and reaping the
  // process at all, with posix_spawn + waitpid of the same busybox `true` from this process, on the
  // host: no moat, no runtime, no sandbox.
  bare.set_args({"sleep", "100000"});
  {
    // Detached: the container keeps whatever stdio it is given, so give it /dev/null, not our pipes.
    auto child = must(spawn_process(bare.runc({"run", "-d", "--bundle", bare.bundle.string(), "bench-exec"})), "runc run -d");
    if (int st = child.wait(); st != 0) die("runc run -d failed: " + describe_wait_status(st));
  }
  struct DeleteOnExit {
    const BareRunc& bare;
    ~DeleteOnExit() { (void)run_process(bare.runc({"delete", "-f", "bench-exec"})); }
  } delete_bench_exec{bare};
  d.call("sandbox.create", Json{{"name", "hot"}, {"start", true}});
  for (int i = 0; i < 20; ++i) exec_over_api(d, "hot", {"true"});
  auto true_path = (bare.bundle / "rootfs/bin/busybox").string();
  char arg0[] = "true";
  char* spawn_argv[] = {arg0, nullptr};
  char* no_env[] = {nullptr};
  std::vector<double> execs, runc_exec, bare_spawn;
  for (int i = 0; i < kExecRuns; ++i) {
    auto t0 = steady_clock::now();
    exec_over_api(d, "hot", {"true"});
    execs.push_back(ms_since(t0));

    t0 = steady_clock::now();
    pid_t pid;
    if (posix_spawn(&pid, true_path.c_str(), nullptr, nullptr, spawn_argv, no_env) != 0) die("posix_spawn of true");
    waitpid(pid, nullptr, 0);
    bare_spawn.push_back(ms_since(t0));

    if (i % 6 == 0) {
      t0 = steady_clock::now();
      must(run_checked(bare.runc({"exec", "bench-exec", "true"})), "runc exec");
      runc_exec.push_back(ms_since(t0));
    }
  }
  d.call("sandbox.rm", Json{{"name", "hot"}, {"force", true}});
  std::fprintf(stderr, "exec p50: moat %.2f ms, runc exec %.1f ms, bare spawn of true %.2f ms\n", percentile(execs, 0.5),
               percentile(runc_exec, 0.5), percentile(bare_spawn, 0.5));

  // Memory per idle sandbox, then density. The drop in MemAvailable is read after each quarter of the
  // sandboxes and the median quarter is the figure: a compiler or a test starting or ending elsewhere on
  // a shared host then spoils one quarter, not the result.
  auto settled_mem_available = [] {
    std::this_thread::sleep_for(1s);
    drop_caches();
    std::this_thread::sleep_for(1s);
    return mem_available_kib();
  };
  int64_t avail_mark = settled_mem_available();
  const int quarter = std::max(1, memory_count / 4);
  std::vector<double> quarters;
  int started = 0;
  double memory_per_sandbox_kib = 0;
  double cgroup_kib = 0;
  std::string density_stop = "reached the target";
  auto t_density = steady_clock::now();
  for (int i = 0; i < density_target; ++i) {
    auto r = api::call(d.socket(), "sandbox.create", Json{{"name", fmt::format("idle{}", i)}, {"start", true}});
    if (!r) {
      density_stop = r.error().message;
      break;
    }
    ++started;
    if (started % 50 == 0) std::fprintf(stderr, "density: %d running\n", started);
    if (started <= memory_count && started % quarter == 0) {
      int64_t avail = settled_mem_available();
      quarters.push_back(static_cast<double>(avail_mark - avail) / quarter);
      avail_mark = avail;
    }
    if (started == memory_count) {
      memory_per_sandbox_kib = percentile(quarters, 0.5);
      cgroup_kib = cgroup_kib_per_idle_sandbox();
      std::fprintf(stderr, "memory: %.0f KiB per idle sandbox with %d running (quarters:", memory_per_sandbox_kib, started);
      for (double q : quarters) std::fprintf(stderr, " %.0f", q);
      std::fprintf(stderr, "; their cgroups: %.0f KiB each)\n", cgroup_kib);
    }
  }
  double density_s = ms_since(t_density) / 1000;
  // Everything must still answer at full density.
  int answering = 0;
  for (int i = 0; i < started; i += std::max(1, started / 20)) {
    auto c = api::Client::connect(d.socket());
    if (c && c->call("sandbox.inspect", Json{{"name", fmt::format("idle{}", i)}})) ++answering;
  }
  exec_over_api(d, fmt::format("idle{}", started - 1), {"true"});
  std::fprintf(stderr, "density: %d running (%s) in %.0f s\n", started, density_stop.c_str(), density_s);
  for (int i = 0; i < started; ++i) (void)api::call(d.socket(), "sandbox.rm", Json{{"name", fmt::format("idle{}", i)}, {"force", true}});

  double cold_ratio = percentile(cold, 0.5) / percentile(runc_run, 0.5);
  double exec_ratio = percentile(execs, 0.5) / percentile(runc_exec, 0.5);
  std::string md = fmt::format(
      "## Sandboxes\n\n"
      "Measured by `make bench` (`moat-bench {} docs/benchmarks.md`), {}: runc as the runtime, the busybox\n"
      "test image, every protection on. Baselines run on the same machine in the same run, taking turns with\n"
      "moat run for run.\n\n"
      "| figure | moat | baseline | ratio | target | |\n"
      "| --- | --- | --- | --- | --- | --- |\n"
      "| cold start: create + start + first exec of `true` (p50 of {}) | {:.1f} ms | bare `runc run` {:.1f} ms | {:.2f}× | ≤ 1.5×, p50 ≤ 40 ms | {} / {} |\n"
      "| exec round trip on a running sandbox (p50 of {}) | {:.2f} ms (p99 {:.2f}) | `runc exec` {:.1f} ms | {:.3f}× | p50 ≤ 2 ms and ≤ 0.25× | {} / {} |\n"
      "| host memory per idle running sandbox, {} running | {:.0f} KiB | | | ≤ 2 MiB | {} |\n"
      "| idle sandboxes running at once | {} ({}) | | | 500 | {} |\n\n"
      "Notes:\n"
      "- Cold start includes making the sandbox's own capped ext4 disk (a sparse copy, with a UUID of its own,\n"
      "  of a template that mkfs.ext4 makes once per disk size: the first of the {} runs made it), mounting it\n"
      "  on a loop device, idmapping the image, the overlay, writing the bundle, `runc run --detach`, waiting\n"
      "  for moat-init's health answer, and the first exec; the baseline does none of the storage work and runs\n"
      "  without a user namespace, seccomp or cgroup limits (runc's default spec).\n"
      "- An exec of `true` cannot be faster than creating the process at all: a bare `posix_spawn` + `waitpid`\n"
      "  of the same busybox `true` from the bench process (no moat, no runtime, no sandbox) takes {:.2f} ms\n"
      "  p50 on this host. What an exec adds on top is the API call, moat-init's connection and the audit.\n"
      "- Memory is the drop in MemAvailable (after dropping caches) per sandbox: the median of the four\n"
      "  quarters of the sandboxes started, so work starting or ending elsewhere on the host spoils a quarter\n"
      "  rather than the figure. It counts moat-init's processes (PID 1, its idle connection worker, the egress\n"
      "  relay), kernel memory for namespaces, mounts, loop devices and ext4 journals. As a cross-check, the\n"
      "  sandboxes' own memory cgroups account for {:.0f} KiB each.\n"
      "- Density stops at the target or the first failure; {} of {} sampled sandboxes answered at full density.\n",
      density_target, machine_line(), kColdRuns,
      percentile(cold, 0.5), percentile(runc_run, 0.5), cold_ratio,
      verdict(cold_ratio <= 1.5), verdict(percentile(cold, 0.5) <= 40), kExecRuns, percentile(execs, 0.5),
      percentile(execs, 0.99), percentile(runc_exec, 0.5), exec_ratio,
      verdict(percentile(execs, 0.5) <= 2), verdict(exec_ratio <= 0.25), memory_count, memory_per_sandbox_kib,
      verdict(memory_per_sandbox_kib <= 2048), started, density_stop, verdict(started >= 500), kColdRuns,
      percentile(bare_spawn, 0.5), cgroup_kib, answering,
      (started + std::max(1, started / 20) - 1) / std::max(1, started / 20));
  write_section(out_path, "## Sandboxes", md);
  std::printf("%s", md.c_str());
  return 0;
}
