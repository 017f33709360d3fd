#include "audit/verify.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>
#include <set>
#include <tuple>
#include <unordered_map>
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

// The JSON of a line: the line itself (an export, a sink file), or, for a checkpoint a syslog server
// stored with its own header in front ("<109>1 2026-12-07T20:37:47.123456Z host moat 42 checkpoint -
// {...}", or rsyslog's "Dec  7 20:37:47 host moat[42]: {...}"), the checkpoint object after it.
std::string_view json_part(std::string_view line) {
  auto first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos || line[first] == '{') return line;
  auto cp = line.find(R"({"type":"checkpoint")");  // how moatd writes one; else the first object
  if (cp == std::string_view::npos) cp = line.find('{');
  return cp == std::string_view::npos ? line : line.substr(cp);
}

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

CheckpointReport check_checkpoints(std::vector<Checkpoint> cps, int64_t first_seq, int64_t last_seq,
                                   const std::function<Result<std::optional<std::string>>(int64_t seq)>& hash_at,
                                   std::string_view public_key) {
  std::sort(cps.begin(), cps.end(), [](const Checkpoint& a, const Checkpoint& b) {
    return std::tie(a.seq, a.time_ns, a.signature) < std::tie(b.seq, b.time_ns, b.signature);
  });
  cps.erase(std::unique(cps.begin(), cps.end(),
                        [](const Checkpoint& a, const Checkpoint& b) {
                          return a.seq == b.seq && a.time_ns == b.time_ns && a.signature == b.signature &&
                                 a.head_hash == b.head_hash && a.public_key == b.public_key;
                        }),
            cps.end());
  CheckpointReport rep;
  auto bad = [&](int64_t seq, std::string problem) {
    rep.ok = false;
    rep.first_bad_seq = seq;
    rep.problem = std::move(problem);
    return rep;
  };
  std::string key(public_key);
  int64_t last_good = 0;  // the newest record a checkpoint confirmed so far
  for (const auto& cp : cps) {
    if (cp.seq < first_seq) continue;  // before this export begins: nothing to compare with
    ++rep.checkpoints;
    if (key.empty()) key = cp.public_key;  // without a key given, all must be signed by one key
    rep.public_key = key;
    if (auto st = verify_checkpoint(cp, key); !st) return bad(cp.seq, st.error().message);
    auto when = format_time_rfc3339(cp.time_ns, false);
    if (cp.seq > last_seq) {
      int64_t from = last_seq + 1;
      return bad(from, from == cp.seq
                           ? fmt::format("record {} is missing: the log ends at record {}, but a checkpoint signed at {} "
                                         "covers record {} (the tail was cut)",
                                         from, last_seq, when, cp.seq)
                           : fmt::format("records {} to {} are missing: the log ends at record {}, but a checkpoint "
                                         "signed at {} covers record {} (the tail was cut)",
                                         from, cp.seq, last_seq, when, cp.seq));
    }
    auto h = hash_at(cp.seq);
    if (!h) {
      rep.ok = false;
      rep.problem = h.error().message;
      return rep;
    }
    if (!*h) return bad(cp.seq, fmt::format("record {} is missing, but a checkpoint signed at {} covers it", cp.seq, when));
    if (**h != cp.head_hash)
      return bad(cp.seq, fmt::format("record {} is not the record signed at {}: its hash differs from the signed "
                                     "checkpoint, so the chain was rewritten and its hashes recomputed somewhere in "
                                     "records {} to {}",
                                     cp.seq, when, std::max(last_good + 1, first_seq), cp.seq));
    last_good = std::max(last_good, cp.seq);
  }
  rep.last_checkpoint_seq = last_good;
  return rep;
}

Result<std::vector<Checkpoint>> read_stored_checkpoints(Database& db) {
  auto st = db.prepare("SELECT seq, head_hash, time_ns, public_key, signature FROM audit_checkpoints ORDER BY id");
  if (!st) return wrap(st.error(), "reading the audit checkpoints");
  std::vector<Checkpoint> out;
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "reading the audit checkpoints");
    if (!*row) break;
    out.push_back(Checkpoint{st->column_int64(0), std::string(st->column_text(1)), st->column_int64(2),
                             std::string(st->column_text(3)), std::string(st->column_text(4))});
  }
  return out;
}

Result<std::vector<Checkpoint>> read_checkpoint_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return fail(ErrorKind::NotFound, "{} does not exist", path);
    return fail(ErrorKind::Unavailable, "cannot read {}: {}", path, strerror(errno));
  }
  std::vector<Checkpoint> out;
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find("\"checkpoint\"") == std::string::npos) continue;  // records, blank lines
    auto j = Json::parse(json_part(line), nullptr, false);
    if (j.is_discarded() || !is_checkpoint_json(j)) continue;
    auto cp = checkpoint_from_json(j);
    if (!cp) return fail(ErrorKind::InvalidInput, "{} line {}: {}", path, n, cp.error().message);
    out.push_back(std::move(*cp));
  }
  return out;
}

Result<ExportReport> verify_export_file(const std::string& path, std::string_view public_key,
                                        const std::vector<std::string>& checkpoint_files) {
  ExportReport rep;
  rep.key_given = !public_key.empty();
  // Pass 1: the checkpoints, wherever they are in the file, and those of the extra files.
  auto cps = read_checkpoint_lines(path);
  if (!cps) return std::unexpected(cps.error());
  for (const auto& f : checkpoint_files) {
    auto more = read_checkpoint_lines(f);
    if (!more) return std::unexpected(more.error());
    cps->insert(cps->end(), more->begin(), more->end());
  }
  std::set<int64_t> wanted;
  for (const auto& cp : *cps) wanted.insert(cp.seq);

  // Pass 2: the records, streamed.
  std::ifstream in(path);
  if (!in) return fail(ErrorKind::Unavailable, "cannot read {}: {}", path, strerror(errno));
  std::unordered_map<int64_t, std::string> hash_of;  // for the seqs checkpoints cover
  RecordHasher hasher;
  std::string prev_hash;
  int64_t prev_seq = 0, line_no = 0;
  auto bad = [&](int64_t seq, std::string problem) {
    rep.ok = false;
    rep.first_bad_seq = seq;
    rep.problem = std::move(problem);
    return rep;
  };
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = Json::parse(json_part(line), nullptr, false);
    if (j.is_discarded())
      return bad(prev_seq + 1, fmt::format("line {} of {} is not valid JSON (after record {}): the file was damaged",
                                           line_no, path, prev_seq));
    if (is_checkpoint_json(j)) continue;
    auto ev = audit_event_from_json(j);
    if (!ev)
      return bad(prev_seq + 1, fmt::format("line {} of {} is not an audit record (after record {}): {}", line_no, path,
                                           prev_seq, ev.error().message));
    ++rep.records;
    if (rep.records == 1) {
      rep.first_seq = ev->seq;
      if (ev->seq < 1) return bad(ev->seq, fmt::format("record {} has an invalid sequence number", ev->seq));
      if (ev->seq == 1 && ev->prev_hash != kGenesisHash)
        return bad(1, "record 1 does not start the chain: its prev_hash is not the genesis value (64 zeros)");
      prev_hash = ev->prev_hash;  // a file made --since is anchored where it starts
    } else if (ev->seq != prev_seq + 1) {
      int64_t expected = prev_seq + 1;
      if (ev->seq == expected + 1) return bad(expected, fmt::format("record {} is missing", expected));
      if (ev->seq > expected)
        return bad(expected, fmt::format("records {} to {} are missing", expected, ev->seq - 1));
      return bad(ev->seq, fmt::format("record {} (line {}) is out of order: it follows record {}", ev->seq, line_no,
                                      prev_seq));
    }
    std::string_view computed = hasher.hash(ev->seq, ev->time_ns, ev->kind, ev->actor, ev->subject,
                                            canonical_json(ev->data), ev->prev_hash);
    if (computed != ev->hash)
      return bad(ev->seq, fmt::format("record {} ({} at {}) was altered: its hash does not match its contents",
                                      ev->seq, ev->kind, format_time_rfc3339(ev->time_ns, false)));
    if (ev->prev_hash != prev_hash)
      return bad(ev->seq, fmt::format("record {} does not follow record {}: prev_hash mismatch", ev->seq, prev_seq));
    if (wanted.count(ev->seq)) hash_of[ev->seq] = ev->hash;
    prev_hash = ev->hash;
    prev_seq = ev->seq;
  }
  if (in.bad()) return fail(ErrorKind::Unavailable, "cannot read {}: {}", path, strerror(errno));
  rep.last_seq = prev_seq;

  if (rep.records == 0 && !cps->empty()) {
    // Checkpoints only (a sink file, a syslog server's log): no records to compare them with, so each
    // is checked for its signature. Checking an export against them (--checkpoints) proves records.
    std::string key(public_key);
    for (const auto& cp : *cps) {
      if (key.empty()) key = cp.public_key;  // without a key given, all must be signed by one key
      if (auto st = verify_checkpoint(cp, key); !st) return bad(cp.seq, st.error().message);
      ++rep.checkpoints;
      rep.last_checkpoint_seq = std::max(rep.last_checkpoint_seq, cp.seq);
    }
    rep.public_key = key;
    rep.ok = true;
    return rep;
  }

  auto cr = check_checkpoints(
      std::move(*cps), rep.first_seq ? rep.first_seq : 1, rep.last_seq,
      [&](int64_t seq) -> Result<std::optional<std::string>> {
        auto it = hash_of.find(seq);
        if (it == hash_of.end()) return std::optional<std::string>{};
        return std::optional<std::string>(it->second);
      },
      public_key);
  rep.checkpoints = cr.checkpoints;
  rep.last_checkpoint_seq = cr.last_checkpoint_seq;
  rep.public_key = cr.public_key.empty() ? std::string(public_key) : cr.public_key;
  if (!cr.ok) return bad(cr.first_bad_seq, std::move(cr.problem));
  if (rep.key_given && rep.records > 0 && rep.checkpoints == 0)
    return bad(rep.first_seq,
               fmt::format("no checkpoint signed by key {} covers records {} to {}: the file holds no proof that "
                           "these records are the ones moatd wrote (export from a moatd with checkpoints, or add the "
                           "sink's file with --checkpoints)",
                           public_key, rep.first_seq, rep.last_seq));
  rep.ok = true;
  return rep;
}

}  // namespace moat
