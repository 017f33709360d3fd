// make bench, disk part: what a disk storm in one sandbox does to a neighbour, with and without the
// storming sandbox's I/O limit, and what the limit holds on a cgroup v1 host.
//
//   neighbour    p50 of an exec of `true` in a quiet sandbox: unloaded; while another sandbox storms
//                its disk with limits at their maximum (in effect none); while the same storm runs in a
//                sandbox with the default limits; and with tight ones (32 MiB/s, 512 IOPS). The storm: two direct-I/O readers, two direct-I/O
//                writers and a buffered writer that fsyncs, looping for kStormSeconds.
//   writeback    the same 32 MiB written in a sandbox limited to 8 MiB/s of writes: with direct I/O,
//                buffered then fsync'd, and buffered then left to the kernel's flusher threads, timed by
//                what reaches its loop device.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/fs.h"
#include "bench_support.h"
#include "config/limits.h"
#include "support/moat_env.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::bench;
using namespace std::chrono;
namespace fs = std::filesystem;

namespace {

constexpr int kStormSeconds = 30;
constexpr auto kQuietSampling = 10s;  // the neighbour's execs, back to back, unloaded
constexpr int kWritebackMiB = 32;
constexpr int kWritebackLimitMiB = 8;

constexpr const char* kConfig =
    "[daemon]\nidle_timeout = \"0\"\n[sandbox]\nimage = \"tiny\"\ndisk = \"1GiB\"\nmemory = \"512MiB\"\n";

// Sectors (512 bytes) read and written on a block device so far (/sys/block/<dev>/stat fields 3 and 7).
struct DeviceBytes {
  uint64_t read = 0, written = 0;
};
DeviceBytes device_bytes(const std::string& dev) {
  std::istringstream in(read_file(fs::path("/sys/block") / dev / "stat").value_or(""));
  uint64_t f[8] = {};
  for (auto& v : f) in >> v;
  return {f[2] * 512, f[6] * 512};
}

std::string loop_of(const Daemon& d, const std::string& sandbox) {
  auto loops = testing::loops_containing((d.state() / "sandboxes" / sandbox / "disk.img").string());
  if (loops.size() != 1) die(fmt::format("sandbox {} has {} loop devices, not 1", sandbox, loops.size()));
  return loops.front();
}

void sh(const Daemon& d, const std::string& sandbox, const std::string& script) {
  auto r = exec_over_api(d, sandbox, {"sh", "-c", script});
  if (r.exit_code != 0) die(fmt::format("in {}: {} exited {}: {}", sandbox, script, r.exit_code, r.out));
}

double exec_ms(const Daemon& d, const std::string& sandbox) {
  auto t0 = steady_clock::now();
  exec_over_api(d, sandbox, {"true"});
  return ms_since(t0);
}

// Two direct readers of a 128 MiB file, two direct writers of 64 MiB files and a buffered writer
// that fsyncs its 64 MiB, each looping until `seconds` have passed.
std::string storm_script(int seconds) {
  return fmt::format(
      "cd /workspace; end=$(( $(date +%s) + {} ));"
      "reader() {{ while [ $(date +%s) -lt $end ]; do dd if=r of=/dev/null bs=1M iflag=direct 2>/dev/null; done; }};"
      "writer() {{ while [ $(date +%s) -lt $end ]; do dd if=/dev/zero of=w$1 bs=1M count=64 oflag=direct 2>/dev/null; done; }};"
      "buffered() {{ while [ $(date +%s) -lt $end ]; do dd if=/dev/zero of=b bs=1M count=64 conv=fsync 2>/dev/null; done; }};"
      "reader & reader & writer 1 & writer 2 & buffered & wait",
      seconds);
}

struct StormFigure {
  double p50 = 0, p99 = 0;
  size_t samples = 0;
  double read_mib_s = 0, write_mib_s = 0;  // what the storming sandbox's disk moved
};

// The neighbour's exec latency while `storming` storms; its disk's traffic over the storm.
StormFigure under_storm(const Daemon& d, const std::string& storming) {
  sh(d, storming, "dd if=/dev/zero of=/workspace/r bs=1M count=128 2>/dev/null && sync");
  auto dev = loop_of(d, storming);
  auto before = device_bytes(dev);
  auto t0 = steady_clock::now();
  std::thread storm([&] { sh(d, storming, storm_script(kStormSeconds)); });
  std::this_thread::sleep_for(3s);  // under way
  // Back to back until the storm's last seconds: hundreds of samples, across all of its phases.
  std::vector<double> ms;
  while (steady_clock::now() - t0 < seconds(kStormSeconds - 2)) ms.push_back(exec_ms(d, "neighbour"));
  storm.join();
  double took = duration<double>(steady_clock::now() - t0).count();
  auto after = device_bytes(dev);
  StormFigure f{median(ms), percentile(ms, 0.99), ms.size(), (after.read - before.read) / took / (1 << 20),
                (after.written - before.written) / took / (1 << 20)};
  std::fprintf(stderr, "storm in %s: neighbour exec p50 %.2f ms (p99 %.2f, %zu samples); its disk read %.1f MiB/s, wrote %.1f MiB/s\n",
               storming.c_str(), f.p50, f.p99, f.samples, f.read_mib_s, f.write_mib_s);
  return f;
}

// How fast `bytes` more than `base` reached `dev`: sampled every 20 ms until all were written (or
// `deadline`), the rate between the samples that first showed 10% and 90% of them written, so that the
// few KiB a journal commit writes before the data do not count. 0 after `deadline`.
struct WrittenRate {
  double began_s = 0;     // when 10% had been written
  double mib_s = 0;       // from 10% to 90%
  bool at_once = false;   // 10% to 90% within one sample: mib_s is a lower bound
};
WrittenRate written_rate(const std::string& dev, uint64_t base, uint64_t bytes, seconds deadline) {
  auto t0 = steady_clock::now();
  double t10 = -1;
  while (steady_clock::now() - t0 < deadline) {
    auto w = device_bytes(dev).written - base;
    double now = duration<double>(steady_clock::now() - t0).count();
    if (t10 < 0 && w >= bytes / 10) t10 = now;
    if (w >= bytes * 9 / 10) {
      bool at_once = now - t10 <= 0.025;
      return {t10, 0.8 * bytes / (1 << 20) / (at_once ? 0.02 : now - t10), at_once};
    }
    std::this_thread::sleep_for(20ms);
  }
  return {};
}

struct WritebackFigures {
  double direct_s = 0, fsync_s = 0;
  WrittenRate flusher;
};

WritebackFigures writeback(const Daemon& d) {
  const std::string box = "wb";
  auto limit = fmt::format("{}MiB", kWritebackLimitMiB);
  d.call("sandbox.create", Json{{"name", box}, {"start", true}, {"io_write_bps", limit}});
  auto dev = loop_of(d, box);
  WritebackFigures f;
  auto t0 = steady_clock::now();
  sh(d, box, fmt::format("dd if=/dev/zero of=/workspace/a bs=1M count={} oflag=direct 2>/dev/null", kWritebackMiB));
  f.direct_s = duration<double>(steady_clock::now() - t0).count();
  t0 = steady_clock::now();
  sh(d, box, fmt::format("dd if=/dev/zero of=/workspace/b bs=1M count={} conv=fsync 2>/dev/null", kWritebackMiB));
  f.fsync_s = duration<double>(steady_clock::now() - t0).count();
  // Left dirty: nothing in the sandbox writes it back; the kernel's flusher does, after
  // dirty_expire_centisecs, from its own threads.
  auto base = device_bytes(dev).written;
  sh(d, box, fmt::format("dd if=/dev/zero of=/workspace/c bs=1M count={} 2>/dev/null", kWritebackMiB));
  f.flusher = written_rate(dev, base, uint64_t(kWritebackMiB) << 20, 90s);
  if (f.flusher.mib_s == 0) die("the buffered write never reached the disk within 90 s");
  std::fprintf(stderr, "writeback of %d MiB at a %d MiB/s write limit: direct %.2f s, fsync %.2f s, flusher began after %.1f s at %.1f MiB/s\n",
               kWritebackMiB, kWritebackLimitMiB, f.direct_s, f.fsync_s, f.flusher.began_s, f.flusher.mib_s);
  return f;
}

std::string rate(double seconds) { return fmt::format("{:.1f} MiB/s", kWritebackMiB / seconds); }
const char* held_or_escapes(double mib_s) { return mib_s > 1.5 * kWritebackLimitMiB ? "**escapes**" : "held"; }

int run(int argc, char** argv) {
  if (geteuid() != 0) die("run as root (make bench)");
  std::string out_path = argc > 1 ? argv[1] : "docs/benchmarks.md";
  testing::TempDir state("moat-bench-disk");
  fs::permissions(state.path(), fs::perms(0711));
  auto tarball = state.path() / "tiny.tar.gz";
  testing::make_busybox_tarball(tarball);
  Daemon d(state.path(), kConfig);
  d.call("image.import", Json{{"name", "tiny"}, {"path", tarball.string()}});

  d.call("sandbox.create", Json{{"name", "neighbour"}, {"start", true}});
  // Every limit at the top of its range: a throttle no device reaches, so in effect none.
  Json unlimited{{"name", "free"}, {"start", true}};
  for (auto l : {Limit::IoReadBps, Limit::IoWriteBps, Limit::IoReadIops, Limit::IoWriteIops})
    unlimited[std::string(limit_range(l).name)] = limit_range(l).max;
  d.call("sandbox.create", unlimited);
  d.call("sandbox.create", Json{{"name", "held"}, {"start", true}});  // the defaults
  d.call("sandbox.create", Json{{"name", "tight"}, {"start", true}, {"io_read_bps", "32MiB"}, {"io_write_bps", "32MiB"},
                                {"io_read_iops", 512}, {"io_write_iops", 512}});

  for (int i = 0; i < 10; ++i) exec_ms(d, "neighbour");  // warm
  auto sample_quiet = [&] {
    std::vector<double> ms;
    for (auto t0 = steady_clock::now(); steady_clock::now() - t0 < kQuietSampling;) ms.push_back(exec_ms(d, "neighbour"));
    return ms;
  };
  auto quiet = sample_quiet();
  std::fprintf(stderr, "neighbour exec p50 unloaded %.2f ms\n", median(quiet));
  auto free_storm = under_storm(d, "free");
  auto held_storm = under_storm(d, "held");
  auto tight_storm = under_storm(d, "tight");
  auto quiet_after = sample_quiet();
  auto wb = writeback(d);

  auto expire = read_file("/proc/sys/vm/dirty_expire_centisecs").value_or("?");
  while (!expire.empty() && expire.back() == '\n') expire.pop_back();
  const double base = median(quiet);
  std::string section = fmt::format(
      "## Disk storm\n\n"
      "`make bench` (`moat-bench-disk docs/benchmarks.md`), {}: runc, the busybox test image, cgroup v1 blkio "
      "throttles on each sandbox's loop device.\n\n"
      "| neighbour's exec of `true` | p50 | p99 | ratio to unloaded | storming sandbox's disk moved |\n"
      "| --- | --- | --- | --- | --- |\n"
      "| unloaded ({} samples over {} s; p50 {:.2f} ms again after the storms) | {:.2f} ms | {:.2f} ms | 1.00× | |\n"
      "| storm from a sandbox without the limit (limits at their maximum; {} samples) | {:.2f} ms | {:.2f} ms | {:.2f}× | "
      "read {:.0f} MiB/s, wrote {:.0f} MiB/s |\n"
      "| the same storm from a sandbox with the default limits ({} samples) | {:.2f} ms | {:.2f} ms | {:.2f}× | "
      "read {:.0f} MiB/s, wrote {:.0f} MiB/s |\n"
      "| the same storm from a sandbox limited to 32 MiB/s and 512 IOPS each way ({} samples) | {:.2f} ms | {:.2f} ms | "
      "{:.2f}× | read {:.0f} MiB/s, wrote {:.0f} MiB/s |\n\n"
      "The storm: two direct-I/O readers of a 128 MiB file, two direct-I/O writers of 64 MiB files and a buffered "
      "writer that fsyncs each 64 MiB, looping for {} s in the storming sandbox; the neighbour's execs start once it "
      "is under way and run back to back until it ends. Traffic is what the storming sandbox's loop device moved (/sys/block/loopN/stat) over the storm.\n\n"
      "| {} MiB written in a sandbox limited to {} MiB/s of writes | time | rate | |\n"
      "| --- | --- | --- | --- |\n"
      "| direct I/O (`dd oflag=direct`) | {:.2f} s | {} | {} |\n"
      "| buffered, then fsync (`dd conv=fsync`) | {:.2f} s | {} | {} |\n"
      "| buffered, left to the kernel's flusher (it began {:.1f} s after the write; dirty_expire_centisecs {}) | | {}{:.0f} MiB/s | {} |\n\n"
      "On cgroup v1 the throttle applies to the I/O a sandbox's own tasks issue: reads, direct writes and the writes "
      "its fsync issues. Dirty pages the kernel's flusher threads write back (after dirty_expire_centisecs, under "
      "memory pressure, or for a `sync`) are issued from the root cgroup and escape it; the rate above is the "
      "10%-90% slope of what reached the loop device. (cgroup v2 with the io and memory controllers charges "
      "writeback to the cgroup that dirtied the pages; this host has no controllers on v2.)\n",
      machine_line(), quiet.size(), duration_cast<seconds>(kQuietSampling).count(), median(quiet_after), base, percentile(quiet, 0.99), free_storm.samples, free_storm.p50,
      free_storm.p99, free_storm.p50 / base, free_storm.read_mib_s, free_storm.write_mib_s, held_storm.samples,
      held_storm.p50, held_storm.p99, held_storm.p50 / base, held_storm.read_mib_s, held_storm.write_mib_s,
      tight_storm.samples, tight_storm.p50, tight_storm.p99, tight_storm.p50 / base, tight_storm.read_mib_s,
      tight_storm.write_mib_s, kStormSeconds, kWritebackMiB, kWritebackLimitMiB, wb.direct_s, rate(wb.direct_s),
      held_or_escapes(kWritebackMiB / wb.direct_s), wb.fsync_s, rate(wb.fsync_s), held_or_escapes(kWritebackMiB / wb.fsync_s),
      wb.flusher.began_s, expire, wb.flusher.at_once ? "all within one 20 ms sample: ≥ " : "", wb.flusher.mib_s,
      held_or_escapes(wb.flusher.mib_s));
  write_section(out_path, "## Disk storm", section);
  std::printf("%s", section.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_reporting_failure(run, argc, argv);
}
