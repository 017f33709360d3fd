#include "audit/export.h"

#include <gtest/gtest.h>

#include <sstream>

#include "audit/audit_log.h"
#include "audit/event.h"
#include "support/temp_dir.h"

using namespace moat;
using moat::testing::TempDir;

namespace {
constexpr int64_t kSec = 1'000'000'000LL;
constexpr int64_t kT0 = 1795764000LL * kSec;  // 2026-11-27T07:20:00Z

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
}  // namespace

TEST(AuditExport, JsonLinesParseBackAndRehash) {
  TempDir dir("moat-audit-export");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  int64_t t = kT0 + 123;
  AuditLog log(*db, [&] { return t += 60 * kSec; });
  ASSERT_TRUE(log.append("sandbox.create", "cli", "box", Json{{"image", "default"}, {"runtime", "runc"}}));
  ASSERT_TRUE(log.append("exec", "agent \"7\"", "box",
                         Json{{"argv", {"sh", "-c", "echo 'hi'\n"}}, {"exit", 0}, {"bytes", 3}, {"bad", "\xff"}}));
  ASSERT_TRUE(log.append("sandbox.stop", "daemon", "box"));

  std::ostringstream out;
  ASSERT_TRUE(export_jsonl(*db, 0, out));
  auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 3u);
  std::string prev(kGenesisHash);
  for (size_t i = 0; i < lines.size(); ++i) {
    auto j = Json::parse(lines[i], nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << lines[i];
    auto ev = audit_event_from_json(j);
    ASSERT_TRUE(ev) << ev.error().message;
    EXPECT_EQ(ev->seq, static_cast<int64_t>(i + 1));
    EXPECT_EQ(ev->prev_hash, prev);
    EXPECT_EQ(ev->hash, record_hash(ev->seq, ev->time_ns, ev->kind, ev->actor, ev->subject,
                                    canonical_json(ev->data), ev->prev_hash));
    EXPECT_EQ(j["time"], format_time_rfc3339(ev->time_ns));
    prev = ev->hash;
  }
  auto first = Json::parse(lines[0]);
  EXPECT_EQ(first["time"], "2026-11-27T07:21:00.000000123Z");
  EXPECT_EQ(first["kind"], "sandbox.create");
  EXPECT_EQ(first["data"]["image"], "default");
  EXPECT_EQ(Json::parse(lines[1])["actor"], "agent \"7\"");
  // Fields come in a reader-friendly order.
  EXPECT_EQ(lines[0].rfind("{\"seq\":1,\"time\":", 0), 0u) << lines[0];
}

TEST(AuditExport, SinceFiltersByTime) {
  TempDir dir("moat-audit-export");
  auto db = Database::open(dir / "moat.db");
  ASSERT_TRUE(db);
  int64_t t = kT0;
  AuditLog log(*db, [&] { return t += 3600 * kSec; });  // one record per hour: 08:20, 09:20, ...
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(log.append("exec", "cli", "box", Json{{"i", i}}));
  auto since = parse_since("2026-11-27T10:00:00Z", 0);
  ASSERT_TRUE(since);
  std::ostringstream out;
  ASSERT_TRUE(export_jsonl(*db, *since, out));
  auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 3u);  // 10:20, 11:20, 12:20
  EXPECT_EQ(Json::parse(lines[0])["seq"], 3);

  std::ostringstream none;
  ASSERT_TRUE(export_jsonl(*db, kT0 + 100 * 3600 * kSec, none));
  EXPECT_EQ(none.str(), "");
}

TEST(AuditExport, ParseSinceAcceptsTimestampsDatesAndDurations) {
  int64_t now = kT0;
  EXPECT_EQ(parse_since("2026-11-27T07:20:00Z", now).value(), kT0);
  EXPECT_EQ(parse_since("2026-11-27t07:20:00z", now).value(), kT0);
  EXPECT_EQ(parse_since("2026-11-27 07:20:00Z", now).value(), kT0);
  EXPECT_EQ(parse_since("2026-11-27T07:20:00.5Z", now).value(), kT0 + kSec / 2);
  EXPECT_EQ(parse_since("2026-11-27T07:20:00.000000001Z", now).value(), kT0 + 1);
  EXPECT_EQ(parse_since("2026-11-27T09:20:00+02:00", now).value(), kT0);
  EXPECT_EQ(parse_since("2026-11-27T02:50:00-04:30", now).value(), kT0);
  EXPECT_EQ(parse_since("2026-11-27", now).value(), kT0 - (7 * 3600 + 20 * 60) * kSec);
  EXPECT_EQ(parse_since("1970-01-01", now).value(), 0);
  EXPECT_EQ(parse_since("2024-02-29", now).value(), 1709164800LL * kSec);
  EXPECT_EQ(parse_since("30s", now).value(), now - 30 * kSec);
  EXPECT_EQ(parse_since("10m", now).value(), now - 600 * kSec);
  EXPECT_EQ(parse_since("2h", now).value(), now - 7200 * kSec);
  EXPECT_EQ(parse_since("7d", now).value(), now - 7 * 86400 * kSec);
  EXPECT_EQ(parse_since("1w", now).value(), now - 7 * 86400 * kSec);
  EXPECT_EQ(parse_since("0m", now).value(), now);
}

TEST(AuditExport, ParseSinceRejectsOtherInput) {
  for (std::string_view bad : {"", "yesterday", "10", "m", "-5m", "10y", "10 m", "2026-13-01", "2026-02-30",
                               "2023-02-29", "2026-11-27T25:00:00Z", "2026-11-27T07:20:00", "2026-11-27T07:20Z",
                               "2026-11-27T07:20:00+2", "2026-11-27T07:20:00.Z", "2026-11-27Tfoo",
                               "99999999999999999999d", "2026-11-27T07:20:00Zjunk"}) {
    auto r = parse_since(bad, kT0);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(r.error().message.find(fmt::format("'{}'", bad)), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("RFC 3339"), std::string::npos);
    EXPECT_NE(r.error().message.find("10m"), std::string::npos);
  }
}

TEST(AuditExport, TimeFormatting) {
  EXPECT_EQ(format_time_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(format_time_rfc3339(kT0, false), "2026-11-27T07:20:00Z");
  EXPECT_EQ(format_time_rfc3339(kT0 + 42), "2026-11-27T07:20:00.000000042Z");
  EXPECT_EQ(format_time_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
}
