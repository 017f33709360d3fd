// make bench, router part: durable accept() throughput and latency with 10,000 agents registered,
// against baselines measured in the same run on the same disk, written to the "Router" section of
// docs/benchmarks.md (argv[1]).
//
//   raw SQLite   one INSERT of the same row shape per transaction (synchronous=FULL, WAL): what a
//                durable write costs without group commit — the figure group commit exists to beat
//   1 caller     accept() from one thread: every envelope waits for its own fsync
//   N callers    accept() from N threads at once (16, 64, 256): concurrent envelopes share one
//                transaction (one fsync) per group commit; matched against 10,000 rules, queued per agent
//   bursts       accept_many() from a few threads: what a channel that receives messages in bursts
//                (webhook batches, long-poll answers) gets; one wake-up per burst
//
// Usage: moat-bench-router docs/benchmarks.md [envelopes per load=100000]
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "audit/audit_log.h"
#include "bench_support.h"
#include "base/fs.h"
#include "router/router.h"
#include "store/database.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::router;
using namespace moat::bench;
using namespace std::chrono;

namespace {

constexpr int kAgents = 10'000;

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return 0;
}

Envelope envelope(int64_t n) {
  Envelope e;
  e.channel = "bench";
  e.chat = fmt::format("chat-{}", n % kAgents);
  e.sender = fmt::format("user-{}", n % 977);
  e.message_id = fmt::format("m{}", n);
  e.text = "hello, this is a typical short chat message of about sixty bytes";
  e.direct = true;
  return e;
}

struct Figures {
  double per_s = 0, p50 = 0, p99 = 0;
  double cpu_us = 0;  // CPU time of the whole process (every thread, user and kernel) per envelope
  size_t n = 0;
};

// CPU time this process has used so far, in microseconds: per envelope, how much work a row cost
// rather than how long its callers waited.
double process_cpu_us() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) die("getrusage failed");
  auto us = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
  return us(ru.ru_utime) + us(ru.ru_stime);
}

Figures figures(std::vector<double> lat, double wall_ms) {
  Figures f;
  f.n = lat.size();
  f.per_s = static_cast<double>(lat.size()) / (wall_ms / 1000);
  f.p50 = percentile(lat, 0.5);
  f.p99 = percentile(std::move(lat), 0.99);
  return f;
}

// Baseline: the same row shape, one INSERT per transaction, straight through the SQLite C API.
Figures raw_sqlite(const std::filesystem::path& path, int rows) {
  auto db = must(Database::open(path), "opening the baseline store");  // same pragmas and schema
  sqlite3_stmt* st = nullptr;
  const char* sql =
      "INSERT INTO envelopes (channel, message_id, chat, sender, agent, state, body_json, received_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7)";
  if (sqlite3_prepare_v2(db.handle(), sql, -1, &st, nullptr) != SQLITE_OK) die("prepare");
  std::vector<double> lat;
  auto t0 = steady_clock::now();
  for (int i = 0; i < rows; ++i) {
    auto e = envelope(i);
    std::string body = R"({"direct":true,"text":")" + e.text + "\"}";
    auto t = steady_clock::now();
    sqlite3_exec(db.handle(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    sqlite3_bind_text(st, 1, e.channel.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, e.message_id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, e.chat.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, e.sender.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, "agent", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, body.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, 1);
    if (sqlite3_step(st) != SQLITE_DONE) die("raw insert");
    sqlite3_reset(st);
    if (sqlite3_exec(db.handle(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) die("commit");
    lat.push_back(ms_since(t));
  }
  double wall = ms_since(t0);
  sqlite3_finalize(st);
  return figures(std::move(lat), wall);
}

std::vector<RouteRule> rules() {
  std::vector<RouteRule> out;
  out.reserve(kAgents);
  for (int i = 0; i < kAgents; ++i) {
    RouteRule r;
    r.agent = fmt::format("agent-{}", i);
    r.channels = {"bench"};
    r.chats = {fmt::format("chat-{}", i)};
    // Realistic variety without defeating the regex cache: a handful of distinct triggers.
    r.trigger = fmt::format("^@?agent-{}\\b", i % 8);
    out.push_back(std::move(r));
  }
  return out;
}

// accept() (burst 1) or accept_many() from `callers` threads until `total` envelopes are in;
// numbering starts at `base`. Latency is per call.
Figures concurrent_accept(Router& router, int callers, int64_t total, int64_t base, int burst = 1) {
  std::atomic<int64_t> next{0};
  std::vector<std::vector<double>> lat(static_cast<size_t>(callers));
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int c = 0; c < callers; ++c)
    ts.emplace_back([&, c] {
      while (!go) std::this_thread::yield();
      auto& mine = lat[static_cast<size_t>(c)];
      auto check = [](const Result<Acceptance>& a) {
        if (!a) die("accept: " + a.error().message);
        if (a->outcome != Acceptance::Outcome::Queued) die(fmt::format("unexpected outcome {}", outcome_name(a->outcome)));
      };
      for (;;) {
        int64_t n = next.fetch_add(burst);
        if (n >= total) return;
        if (burst == 1) {
          auto e = envelope(base + n);
          auto t = steady_clock::now();
          auto a = router.accept(std::move(e));
          mine.push_back(ms_since(t));
          check(a);
          continue;
        }
        std::vector<Envelope> es;
        for (int64_t k = n; k < std::min(total, n + burst); ++k) es.push_back(envelope(base + k));
        auto t = steady_clock::now();
        auto rs = router.accept_many(std::move(es));
        mine.push_back(ms_since(t));
        for (auto& a : rs) check(a);
      }
    });
  auto t0 = steady_clock::now();
  double cpu0 = process_cpu_us();
  go = true;
  for (auto& t : ts) t.join();
  double wall = ms_since(t0);
  double cpu = process_cpu_us() - cpu0;
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  Figures f = figures(std::move(all), wall);
  f.per_s = static_cast<double>(total) / (wall / 1000);  // envelopes, not calls
  f.cpu_us = cpu / static_cast<double>(total);
  return f;
}

struct Load {
  int callers, burst;
};
// Per-call rows show the trade Little's law sets (more callers in flight: more per commit, longer
// waits); burst rows are channels that hand over what one poll or request brought.
// The last row, one caller with bursts of 1,024, is the serial capacity: one thread, nothing to wait on
// but its own flush.
constexpr Load kLoads[] = {{16, 1}, {64, 1}, {256, 1}, {4, 16}, {4, 32}, {8, 32}, {16, 64}, {1, 1024}};

std::string load_name(const Load& l) {
  if (l.burst == 1) return fmt::format("accept(), {} concurrent callers", l.callers);
  return fmt::format("accept_many(), {} caller{} × bursts of {} (latency per burst)", l.callers,
                     l.callers == 1 ? "" : "s", l.burst);
}

}  // namespace

int run(int argc, char** argv) {
  if (argc < 2) die("usage: moat-bench-router <benchmarks.md> [envelopes per load=100000]");
  std::filesystem::path out_path = argv[1];
  int64_t per_load = argc > 2 ? std::atoll(argv[2]) : 100'000;
  constexpr int kBaselineRows = 400;
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);

  moat::testing::TempDir dir("moat-bench-router");
  Figures raw = raw_sqlite(dir / "raw.db", kBaselineRows);
  std::fprintf(stderr, "raw SQLite, 1 transaction per row: %.0f rows/s, p50 %.2f ms, p99 %.2f ms\n", raw.per_s, raw.p50,
               raw.p99);

  auto db = must(Database::open(dir / "moat.db"), "opening the store");
  AuditLog audit(db);
  Router router(db, audit);
  long rss0 = rss_kib();
  auto t_rules = steady_clock::now();
  router.set_rules(rules());
  double rules_ms = ms_since(t_rules);
  long rules_kib = rss_kib() - rss0;
  if (auto s = router.start(); !s) die(s.error().message);  // no turn runner: envelopes stay queued per agent

  int64_t next = 0;
  Figures one = concurrent_accept(router, 1, kBaselineRows, next);
  next += kBaselineRows;
  std::fprintf(stderr, "accept, 1 caller: %.0f envelopes/s, p50 %.2f ms, p99 %.2f ms\n", one.per_s, one.p50, one.p99);
  // Untimed: a new store's log file grows to its working size once (fresh blocks cost an allocation
  // and zeroing per write); a running moatd has paid that long before.
  auto t_warm = steady_clock::now();
  concurrent_accept(router, 8, per_load, next, 32);
  next += per_load;
  double warm_ms = ms_since(t_warm);
  auto wal_mib = static_cast<double>(std::filesystem::file_size(dir / "moat.db-wal")) / (1 << 20);

  std::string rows;
  std::string best;
  double serial_us = 0;
  for (const Load& l : kLoads) {
    Figures f = concurrent_accept(router, l.callers, per_load, next, l.burst);
    next += per_load;
    bool both = f.per_s >= 50'000 && f.p99 <= 5;
    std::fprintf(stderr, "%s: %.0f envelopes/s, p50 %.2f ms, p99 %.2f ms, %.1f µs CPU each%s\n", load_name(l).c_str(),
                 f.per_s, f.p50, f.p99, f.cpu_us, both ? " (both targets)" : "");
    rows += fmt::format("| {} | {:.0f} ({:.0f}× raw) | {:.2f} ms | {:.2f} ms | {:.1f} µs | {} / {} |\n", load_name(l),
                        f.per_s, f.per_s / raw.per_s, f.p50, f.p99, f.cpu_us, verdict(f.per_s >= 50'000),
                        verdict(f.p99 <= 5));
    if (both && best.empty()) best = fmt::format("{} at {:.0f} envelopes/s, p99 {:.2f} ms", load_name(l), f.per_s, f.p99);
    serial_us = 1e6 / f.per_s;  // ends as the last row's
  }
  auto stats = router.stats();
  router.stop();
  if (stats.queued != static_cast<size_t>(next))
    die(fmt::format("expected {} envelopes queued, the scheduler holds {}", next, stats.queued));
  std::string load = read_file("/proc/loadavg").value_or("?");
  load = load.substr(0, load.find(' ', load.find(' ', load.find(' ') + 1) + 1));
  std::string section = fmt::format(
      "## Router\n\n"
      "Measured by `make bench` (`{}`), {}: a real store (SQLite, WAL, synchronous=FULL) in a temp\n"
      "directory, 10,000 agents registered (one route rule each, exact chat plus a trigger regex), envelopes\n"
      "spread over all 10,000 agents' chats, {} per row. Durable means the envelope and its `message.in`\n"
      "audit record were committed and the log flushed (fdatasync) before accept() returned. Baselines run\n"
      "first, in the same process, on the same disk.\n\n"
      "| figure | envelopes/s | p50 | p99 | CPU per envelope | ≥ 50,000/s / p99 ≤ 5 ms |\n"
      "| --- | --- | --- | --- | --- | --- |\n"
      "| baseline: raw SQLite INSERT, one transaction per row ({} rows) | {:.0f} | {:.2f} ms | {:.2f} ms | | |\n"
      "| accept(), 1 caller ({} envelopes) | {:.0f} | {:.2f} ms | {:.2f} ms | {:.1f} µs | |\n"
      "{}\n"
      "**Target** (≥ 50,000 durable envelopes/s with p99 ≤ 5 ms, in one row): {}.\n\n"
      "Notes:\n"
      "- Load average when the run ended: {} (other work on the machine shares its cores).\n"
      "- Setting 10,000 rules took {:.0f} ms and {:.1f} MiB of RSS (indexes by exact chat and channel; rules\n"
      "  sharing a trigger share one compiled regex).\n"
      "- Before the rows, an untimed warm-up of {} envelopes ({:.1f} s) grew the new store's log to its\n"
      "  working size ({:.0f} MiB): writing fresh blocks costs an allocation and zeroing each, which a running\n"
      "  moatd has already paid.\n"
      "- One flush on this disk costs about the raw baseline's p50, which moves with the VM's neighbours from\n"
      "  run to run (compare that row across runs). One thread doing all of an envelope's work (building\n"
      "  it, matching, the insert, the audit record with its hash, queueing, its share of a flush) spends\n"
      "  {:.1f} µs on it, by the last row. Both targets at once need about 120 envelopes in flight, written\n"
      "  and flushed every 2.4 ms, with the callers' own work sharing the two cores.\n"
      "- CPU per envelope is the whole process's CPU time (user and kernel, every thread: the callers\n"
      "  building envelopes, matching, the group commit, flushes, checkpoints) over the row, per envelope;\n"
      "  two cores give 40 µs per envelope at 50,000/s. It moves with the host too: the hypervisor's work\n"
      "  in each syscall and wake-up counts as the process's CPU time.\n"
      "- Group commit: one caller at a time writes everything queued in one transaction, hands the lead on,\n"
      "  and flushes the log while the next batch is written. Checkpoints run on their own thread and\n"
      "  connection (`src/store/wal_checkpointer.h`), never inside a commit.\n"
      "- Each caller waits for its own durable commit, so the mean latency is at least envelopes in flight /\n"
      "  throughput (Little's law): 256 single-envelope callers at 50,000/s would wait 5.1 ms on average;\n"
      "  every envelope of a per-call row also costs its caller a sleep and a wake-up, which on this VM's\n"
      "  hypervisor is the most expensive thing a caller does.\n",
      cmdline, machine_line(), per_load, kBaselineRows, raw.per_s, raw.p50, raw.p99, kBaselineRows, one.per_s,
      one.p50, one.p99, one.cpu_us, rows, best.empty() ? "**not met** by any row" : "met by " + best, load, rules_ms,
      static_cast<double>(rules_kib) / 1024, per_load, warm_ms / 1000, wal_mib, serial_us);

  write_section(out_path, "## Router", section);
  std::printf("%s", section.c_str());
  return 0;
}

int main(int argc, char** argv) {
  return run_reporting_failure(run, argc, argv);
}
