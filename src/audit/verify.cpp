#include "audit/verify.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "audit/event.h"

namespace moat {

namespace {

// Each record's hash covers its own stored prev_hash, so ranges of the chain can be checked
// independently: a range starting at `first` links to the stored hash of record first - 1.
struct RangeResult {
  Status status;  // the scan itself failed
  int64_t records = 0;
  int64_t first_bad_seq = 0;
  std::string problem;
  std::string last_hash;
};

// Scans records with seq in [first, last] (records below 1 are included when first == 1, so stray
// ones are reported), expecting record `first` to carry prev_hash `prev_hash`.
RangeResult scan_range(Database& reader, int64_t first, int64_t last, std::string prev_hash) {
  RangeResult res;
  auto st = reader.prepare(
      "SELECT seq, time_ns, kind, actor, subject, data, prev_hash, hash FROM audit WHERE seq >= ?1 AND seq <= ?2 "
      "ORDER BY seq");
  if (!st) {
    res.status = std::unexpected(st.error());
    return res;
  }
  st->bind(1, first == 1 ? std::numeric_limits<int64_t>::min() : first).bind(2, last);
  RecordHasher hasher;
  int64_t prev_seq = first - 1;
  auto bad = [&](int64_t seq, std::string problem) {
    res.first_bad_seq = seq;
    res.problem = std::move(problem);
    return std::move(res);
  };
  for (;;) {
    auto row = st->step();
    if (!row) {
      res.status = wrap(row.error(), "reading the audit log");
      return res;
    }
    if (!*row) break;
    ++res.records;
    int64_t seq = st->column_int64(0);
    int64_t time_ns = st->column_int64(1);
    std::string_view kind = st->column_text(2), stored_prev = st->column_text(6), stored_hash = st->column_text(7);

    int64_t expected = prev_seq + 1;
    if (seq != expected) {
      if (seq == expected + 1) return bad(expected, fmt::format("record {} is missing", expected));
      if (seq > expected) return bad(expected, fmt::format("records {} to {} are missing", expected, seq - 1));
      return bad(seq, fmt::format("record {} has an invalid sequence number", seq));
    }
    std::string_view computed = hasher.hash(seq, time_ns, kind, st->column_text(3), st->column_text(4),
                                            st->column_text(5), stored_prev);
    if (computed != stored_hash)
      return bad(seq, fmt::format("record {} ({} at {}) was altered: its hash does not match its contents", seq,
                                  kind, format_time_rfc3339(time_ns, false)));
    if (stored_prev != prev_hash) {
      if (seq == 1)
        return bad(seq, "record 1 does not start the chain: its prev_hash is not the genesis value (64 zeros)");
      return bad(seq, fmt::format("record {} does not follow record {}: prev_hash mismatch", seq, prev_seq));
    }
    prev_hash.assign(stored_hash);
    prev_seq = seq;
  }
  if (prev_seq != last) {
    int64_t missing = prev_seq + 1;
    return bad(missing, missing == last ? fmt::format("record {} is missing", missing)
                                        : fmt::format("records {} to {} are missing", missing, last));
  }
  res.last_hash = std::move(prev_hash);
  return res;
}

// One read transaction per connection: records appended meanwhile are simply not seen.
struct ReadSnapshot {
  Database& db;
  Status begun;
  explicit ReadSnapshot(Database& d) : db(d), begun(d.exec("BEGIN")) {}
  ~ReadSnapshot() {
    if (begun) (void)db.exec("COMMIT");
  }
};

// Below this many records one thread is fast enough; above it, ranges are hashed in parallel.
constexpr int64_t kParallelThreshold = 100'000;

}  // namespace

Result<VerifyReport> verify_chain(Database& db) {
  auto reader = db.open_reader();
  if (!reader) return wrap(reader.error(), "verifying the audit log");
  ReadSnapshot snap(*reader);
  if (!snap.begun) return std::unexpected(snap.begun.error());
  // The chain to check is records 1..last as of this snapshot. Records are only ever appended, so
  // every other snapshot taken later contains them too.
  auto last = reader->query_int64("SELECT coalesce(max(seq), 0) FROM audit");
  if (!last) return wrap(last.error(), "verifying the audit log");

  unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  int64_t parts = *last < kParallelThreshold ? 1 : std::min<int64_t>(hw, 4);
  std::vector<RangeResult> results(parts);
  std::vector<int64_t> firsts(parts);
  for (int64_t i = 0; i < parts; ++i) firsts[i] = 1 + (*last / parts) * i;

  auto run_part = [&](int64_t i, Database& conn) {
    int64_t first = firsts[i], end = i + 1 < parts ? firsts[i + 1] - 1 : *last;
    std::string prev(kGenesisHash);
    if (first > 1) {
      auto st = conn.prepare("SELECT hash FROM audit WHERE seq = ?1");
      if (!st) {
        results[i].status = std::unexpected(st.error());
        return;
      }
      st->bind(1, first - 1);
      auto row = st->step();
      // A missing record first - 1 is reported by the range before this one.
      prev = row && *row ? std::string(st->column_text(0)) : std::string();
    }
    results[i] = scan_range(conn, first, end, std::move(prev));
  };

  if (parts == 1) {
    run_part(0, *reader);
  } else {
    std::vector<std::jthread> threads;
    for (int64_t i = 1; i < parts; ++i) {
      threads.emplace_back([&, i] {
        auto conn = Database::open_reader(reader->path());
        if (!conn) {
          results[i].status = std::unexpected(conn.error());
          return;
        }
        ReadSnapshot s(*conn);
        if (!s.begun) {
          results[i].status = std::unexpected(s.begun.error());
          return;
        }
        run_part(i, *conn);
      });
    }
    run_part(0, *reader);
  }  // threads join here

  VerifyReport rep;
  for (auto& r : results) {
    if (!r.status) return wrap(r.status.error(), "verifying the audit log");
  }
  for (auto& r : results) {
    rep.records += r.records;
    if (r.first_bad_seq) {
      rep.ok = false;
      rep.first_bad_seq = r.first_bad_seq;
      rep.problem = std::move(r.problem);
      return rep;
    }
  }
  rep.ok = true;
  rep.last_seq = *last;
  rep.last_hash = *last ? results.back().last_hash : std::string();
  return rep;
}

}  // namespace moat
