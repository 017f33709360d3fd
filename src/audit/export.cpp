#include "audit/export.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>

#include "audit/checkpoint.h"
#include "audit/civil_time.h"
#include "audit/event.h"
#include "audit/verify.h"
#include "base/json.h"

namespace moat {

namespace {

void append_json_string(std::string& out, std::string_view s) {
  out += Json(std::string(s)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

Status export_jsonl(Database& db, int64_t since_ns, std::ostream& out) {
  auto reader = db.open_reader();
  if (!reader) return wrap(reader.error(), "exporting the audit log");
  if (auto s = reader->exec("BEGIN"); !s) return s;
  struct EndRead {
    Database& db;
    ~EndRead() { (void)db.exec("COMMIT"); }
  } end_read{*reader};

  // Checkpoints go right after the record they sign; those beyond the last record (a cut tail) at
  // the end, where a verifier reports them.
  auto cps = read_stored_checkpoints(*reader);
  if (!cps) return wrap(cps.error(), "exporting the audit log");
  std::erase_if(*cps, [&](const Checkpoint& cp) { return cp.time_ns < since_ns; });
  std::stable_sort(cps->begin(), cps->end(), [](const Checkpoint& a, const Checkpoint& b) { return a.seq < b.seq; });
  size_t next_cp = 0;
  auto write_line = [&](const std::string& text) {
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    return static_cast<bool>(out);
  };
  auto write_checkpoints_upto = [&](int64_t seq) {
    for (; next_cp < cps->size() && (*cps)[next_cp].seq <= seq; ++next_cp)
      if (!write_line(checkpoint_line((*cps)[next_cp]) + "\n")) return false;
    return true;
  };

  auto st = reader->prepare(
      "SELECT seq, time_ns, kind, actor, subject, data, prev_hash, hash FROM audit WHERE time_ns >= ?1 ORDER BY seq");
  if (!st) return std::unexpected(st.error());
  st->bind(1, since_ns);
  std::string line;
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "exporting the audit log");
    if (!*row) break;
    int64_t seq = st->column_int64(0), time_ns = st->column_int64(1);
    line.clear();
    line += fmt::format("{{\"seq\":{},\"time\":\"{}\",\"time_ns\":{},\"kind\":", seq, format_time_rfc3339(time_ns),
                        time_ns);
    append_json_string(line, st->column_text(2));
    line += ",\"actor\":";
    append_json_string(line, st->column_text(3));
    line += ",\"subject\":";
    append_json_string(line, st->column_text(4));
    line += ",\"data\":";
    // data is stored as canonical JSON; a row edited into non-JSON is exported as a string rather
    // than breaking the line (verify reports the edit).
    std::string_view data = st->column_text(5);
    if (Json::accept(data))
      line += data;
    else
      append_json_string(line, data);
    line += ",\"prev_hash\":";
    append_json_string(line, st->column_text(6));
    line += ",\"hash\":";
    append_json_string(line, st->column_text(7));
    line += "}\n";
    if (!write_line(line) || !write_checkpoints_upto(seq))
      return fail(ErrorKind::Unavailable, "exporting the audit log: writing record {} failed", seq);
  }
  if (!write_checkpoints_upto(std::numeric_limits<int64_t>::max()))
    return fail(ErrorKind::Unavailable, "exporting the audit log: writing its checkpoints failed");
  out.flush();
  if (!out) return fail(ErrorKind::Unavailable, "exporting the audit log: flushing the output failed");
  return {};
}

namespace {

// Reads exactly n decimal digits at s[pos...]; advances pos.
std::optional<int64_t> digits(std::string_view s, size_t& pos, size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool expect(std::string_view s, size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

std::optional<int64_t> parse_duration_ago(std::string_view v, int64_t now_ns) {
  if (v.size() < 2) return std::nullopt;
  int64_t unit_ns;
  switch (v.back()) {
    case 's': unit_ns = 1'000'000'000LL; break;
    case 'm': unit_ns = 60 * 1'000'000'000LL; break;
    case 'h': unit_ns = 3600 * 1'000'000'000LL; break;
    case 'd': unit_ns = 86400 * 1'000'000'000LL; break;
    case 'w': unit_ns = 7 * 86400 * 1'000'000'000LL; break;
    default: return std::nullopt;
  }
  auto num = v.substr(0, v.size() - 1);
  int64_t n = 0;
  auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
  if (ec != std::errc() || end != num.data() + num.size() || n < 0) return std::nullopt;
  int64_t ago;
  if (__builtin_mul_overflow(n, unit_ns, &ago)) return std::nullopt;
  int64_t since;
  if (__builtin_sub_overflow(now_ns, ago, &since)) return std::nullopt;
  return since;
}

// YYYY-MM-DD, returning days since the epoch.
std::optional<int64_t> parse_date(std::string_view s, size_t& pos) {
  auto y = digits(s, pos, 4);
  if (!y || !expect(s, pos, '-')) return std::nullopt;
  auto m = digits(s, pos, 2);
  if (!m || !expect(s, pos, '-')) return std::nullopt;
  auto d = digits(s, pos, 2);
  if (!d || *m < 1 || *m > 12 || *d < 1 || *d > days_in_month(*y, static_cast<unsigned>(*m))) return std::nullopt;
  return days_from_civil(*y, static_cast<unsigned>(*m), static_cast<unsigned>(*d));
}

std::optional<int64_t> parse_timestamp(std::string_view s) {
  constexpr int64_t kSec = 1'000'000'000LL;
  size_t pos = 0;
  auto days = parse_date(s, pos);
  if (!days) return std::nullopt;
  if (pos == s.size()) return *days * 86400 * kSec;  // a bare date: midnight UTC
  if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
  ++pos;
  auto hh = digits(s, pos, 2);
  if (!hh || !expect(s, pos, ':')) return std::nullopt;
  auto mm = digits(s, pos, 2);
  if (!mm || !expect(s, pos, ':')) return std::nullopt;
  auto ss = digits(s, pos, 2);
  if (!ss || *hh > 23 || *mm > 59 || *ss > 60) return std::nullopt;  // 60: a leap second
  int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    int64_t scale = 100'000'000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      frac_ns += (s[pos] - '0') * scale;  // digits past nanoseconds are dropped
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  if (pos >= s.size()) return std::nullopt;  // RFC 3339 requires a zone
  int64_t offset_s = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int sign = s[pos] == '+' ? 1 : -1;
    ++pos;
    auto oh = digits(s, pos, 2);
    if (!oh || !expect(s, pos, ':')) return std::nullopt;
    auto om = digits(s, pos, 2);
    if (!om || *oh > 23 || *om > 59) return std::nullopt;
    offset_s = sign * (*oh * 3600 + *om * 60);
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  int64_t secs = *days * 86400 + *hh * 3600 + *mm * 60 + *ss - offset_s;
  int64_t ns;
  if (__builtin_mul_overflow(secs, kSec, &ns) || __builtin_add_overflow(ns, frac_ns, &ns)) return std::nullopt;
  return ns;
}

}  // namespace

Result<int64_t> parse_since(std::string_view value, int64_t now_ns) {
  if (auto t = parse_duration_ago(value, now_ns)) return *t;
  if (auto t = parse_timestamp(value)) return *t;
  return fail(ErrorKind::InvalidInput,
              "--since '{}' is not a time moat understands; use an RFC 3339 timestamp (2026-11-27T07:00:00Z), a "
              "date (2026-11-27, midnight UTC) or a duration ago (30s, 10m, 2h, 7d, 2w)",
              value);
}

}  // namespace moat
