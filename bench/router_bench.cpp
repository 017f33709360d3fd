// make bench, router part: durable accept() throughput and latency with 10,000 agents registered,
// against baselines measured in the same run on the same disk, written to the "Router" section of
// docs/benchmarks.md (argv[1]).
//
//   raw SQLite   one INSERT of the same row shape per transaction (synchronous=FULL, WAL): what a
//                durable write costs without group commit — the figure group commit exists to beat
//   1 caller     accept() from one thread: every envelope waits for its own fsync
//   N callers    accept() from N threads at once: concurrent envelopes share one transaction (one
//                fsync) per group commit; matched against 10,000 rules and queued per agent
//   bursts       accept_many() of 64 envelopes from 16 threads: what a channel that receives messages
//                in bursts (webhook batches, long-poll answers) gets; one wake-up per burst
//
// Usage: moat-bench-router docs/benchmarks.md [callers=256] [envelopes=200000] [burst_callers=16] [burst=64]
#include <sqlite3.h>
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
  size_t n = 0;
};

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
  go = true;
  for (auto& t : ts) t.join();
  double wall = ms_since(t0);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  Figures f = figures(std::move(all), wall);
  f.per_s = static_cast<double>(total) / (wall / 1000);  // envelopes, not calls
  return f;
}

}  // namespace

int run(int argc, char** argv) {
  if (argc < 2) die("usage: moat-bench-router <benchmarks.md> [callers=256] [envelopes=200000] [burst_callers=16] [burst=64]");
  std::filesystem::path out_path = argv[1];
  int callers = argc > 2 ? std::atoi(argv[2]) : 256;
  int64_t total = argc > 3 ? std::atoll(argv[3]) : 200'000;
  const int kBurstCallers = argc > 4 ? std::atoi(argv[4]) : 16;
  const int kBurst = argc > 5 ? std::atoi(argv[5]) : 64;
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

  Figures one = concurrent_accept(router, 1, kBaselineRows, 0);
  std::fprintf(stderr, "accept, 1 caller: %.0f envelopes/s, p50 %.2f ms, p99 %.2f ms\n", one.per_s, one.p50, one.p99);
  Figures many = concurrent_accept(router, callers, total, kBaselineRows);
  std::fprintf(stderr, "accept, %d callers: %.0f envelopes/s, p50 %.2f ms, p99 %.2f ms\n", callers, many.per_s,
               many.p50, many.p99);
  Figures bursts = concurrent_accept(router, kBurstCallers, total, kBaselineRows + total, kBurst);
  std::fprintf(stderr, "accept_many, %d callers x %d: %.0f envelopes/s, p50 %.2f ms, p99 %.2f ms per call\n",
               kBurstCallers, kBurst, bursts.per_s, bursts.p50, bursts.p99);
  auto stats = router.stats();
  router.stop();
  if (stats.queued != static_cast<size_t>(kBaselineRows + 2 * total))
    die(fmt::format("expected {} envelopes queued, the scheduler holds {}", kBaselineRows + 2 * total, stats.queued));
  std::string load = read_file("/proc/loadavg").value_or("?");
  load = load.substr(0, load.find(' ', load.find(' ', load.find(' ') + 1) + 1));
  std::string section = fmt::format(
      "## Router\n\n"
      "Measured by `make bench` (`{}`), {}: a real store (SQLite, WAL, synchronous=FULL) in a temp\n"
      "directory, 10,000 agents registered (one route rule each, exact chat plus a trigger regex), envelopes\n"
      "spread over all 10,000 agents' chats. Durable means the envelope's transaction committed (fsync) before\n"
      "accept() returned. Baselines run first, in the same process, on the same disk.\n\n"
      "| figure | envelopes/s | p50 | p99 | target | |\n"
      "| --- | --- | --- | --- | --- | --- |\n"
      "| baseline: raw SQLite INSERT, one transaction per row ({} rows) | {:.0f} | {:.2f} ms | {:.2f} ms | | |\n"
      "| accept(), 1 caller ({} envelopes) | {:.0f} | {:.2f} ms | {:.2f} ms | | |\n"
      "| accept(), {} concurrent callers, group commit ({} envelopes) | {:.0f} ({:.0f}× raw) | {:.2f} ms | {:.2f} ms | ≥ 50,000/s, p99 ≤ 5 ms | {} / {} |\n"
      "| accept_many(), {} callers × bursts of {} ({} envelopes; latency per burst) | {:.0f} ({:.0f}× raw) | {:.2f} ms | {:.2f} ms | ≥ 50,000/s, p99 ≤ 5 ms | {} / {} |\n\n"
      "Notes:\n"
      "- Load average when the run ended: {} (other work on the machine shares its cores).\n"
      "- Setting 10,000 rules took {:.0f} ms and {:.1f} MiB of RSS (indexes by exact chat and channel; rules\n"
      "  sharing a trigger share one compiled regex).\n"
      "- One fsync on this disk costs about what the raw baseline's p50 shows; a durable accept cannot return\n"
      "  faster than one fsync, so the p99 target presumes a disk whose fsync is well under 5 ms.\n"
      "- Each accepted envelope also gets a `message.in` audit record, appended in batches by the router's\n"
      "  audit writer behind the envelope commits (included in the run, not in the latency).\n"
      "- With one envelope per call, every caller costs a thread wake-up per envelope; on a small VM those\n"
      "  context switches, not SQLite, bound the rate (see the accept_many row for the same writes without them;\n"
      "  `perf` puts a quarter of all cycles in the hypervisor's interrupt-enable path of wake-ups).\n"
      "- Each caller waits for its own durable commit, so the mean latency is at least callers / throughput\n"
      "  (Little's law): 256 callers at 50,000/s wait 5.1 ms on average, so both targets at once need fewer\n"
      "  envelopes in flight (or bigger bursts per call, which raises the per-call latency instead).\n",
      cmdline, machine_line(),
      kBaselineRows, raw.per_s, raw.p50, raw.p99, kBaselineRows, one.per_s, one.p50, one.p99, callers, total,
      many.per_s, many.per_s / raw.per_s, many.p50, many.p99, verdict(many.per_s >= 50'000), verdict(many.p99 <= 5),
      kBurstCallers, kBurst, total, bursts.per_s, bursts.per_s / raw.per_s, bursts.p50, bursts.p99,
      verdict(bursts.per_s >= 50'000), verdict(bursts.p99 <= 5), load, rules_ms, static_cast<double>(rules_kib) / 1024);

  write_section(out_path, "## Router", section);
  std::printf("%s", section.c_str());
  return 0;
}

int main(int argc, char** argv) {
  return run_reporting_failure(run, argc, argv);
}
