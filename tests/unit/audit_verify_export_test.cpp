// `moat audit verify --file`: an export checked offline, checkpoints included.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "audit/audit_log.h"
#include "audit/checkpointer.h"
#include "audit/export.h"
#include "audit/verify.h"
#include "support/temp_dir.h"

using namespace moat;
using moat::testing::TempDir;

namespace {

CheckpointKey test_key(char fill = 7) { return CheckpointKey::from_seed(std::string(32, fill)).value(); }

struct Exported {
  TempDir dir{"moat-audit-vx"};
  std::filesystem::path file = dir / "audit.jsonl";
  std::filesystem::path sink = dir / "sink.jsonl";
  std::string key;
  std::vector<std::string> lines;

  // 25 records, checkpoints every 10 (10, 20) and at stop (25), exported to `file`.
  explicit Exported(int records = 25, bool checkpoints = true) {
    auto db = Database::open(dir / "moat.db").value();
    AuditLog log(db);
    // The thread never fires by itself here: checkpoints at 10 and 20 are made by hand.
    Checkpointer cp(db, log, test_key(), CheckpointerOptions{1'000'000, std::chrono::hours(1), file_sink(sink)});
    key = cp.public_key();
    if (checkpoints) {
      EXPECT_TRUE(cp.start());
    }
    for (int i = 1; i <= records; ++i) {
      EXPECT_TRUE(log.append("exec", "uid 0 pid 1 /bin/moat", "box", Json{{"argv", {"echo", i}}}));
      if (checkpoints && i % 10 == 0) {
        EXPECT_TRUE(cp.checkpoint_now());  // deterministic, not the thread's timing
      }
    }
    EXPECT_TRUE(cp.stop());
    std::ostringstream out;
    EXPECT_TRUE(export_jsonl(db, 0, out));
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    write();
  }
  void write() {
    std::ofstream out(file, std::ios::trunc);
    for (auto& l : lines) out << l << "\n";
  }
  ExportReport verify(std::string_view k, std::vector<std::string> extra = {}) {
    auto r = verify_export_file(file.string(), k, extra);
    EXPECT_TRUE(r) << r.error().message;
    return r.value_or(ExportReport{});
  }
  size_t line_of_seq(int64_t seq) {
    for (size_t i = 0; i < lines.size(); ++i) {
      auto j = Json::parse(lines[i]);
      if (!is_checkpoint_json(j) && j["seq"] == seq) return i;
    }
    ADD_FAILURE() << "no record " << seq;
    return 0;
  }
};

}  // namespace

TEST(AuditVerifyExport, ExportCarriesCheckpointsAfterTheirRecordsAndVerifiesOffline) {
  Exported x;
  ASSERT_EQ(x.lines.size(), 28u);  // 25 records + 3 checkpoints
  EXPECT_TRUE(is_checkpoint_json(Json::parse(x.lines[x.line_of_seq(10) + 1])));
  EXPECT_TRUE(is_checkpoint_json(Json::parse(x.lines.back())));
  auto rep = x.verify(x.key);
  EXPECT_TRUE(rep.ok) << rep.problem;
  EXPECT_EQ(rep.records, 25);
  EXPECT_EQ(rep.first_seq, 1);
  EXPECT_EQ(rep.last_seq, 25);
  EXPECT_EQ(rep.checkpoints, 3);
  EXPECT_EQ(rep.last_checkpoint_seq, 25);
  EXPECT_TRUE(rep.key_given);
  // Without --key: checked against the key the checkpoints name.
  auto nokey = x.verify("");
  EXPECT_TRUE(nokey.ok) << nokey.problem;
  EXPECT_FALSE(nokey.key_given);
  EXPECT_EQ(nokey.public_key, x.key);
}

TEST(AuditVerifyExport, AnEditedRecordIsNamed) {
  Exported x;
  auto i = x.line_of_seq(13);
  auto j = Json::parse(x.lines[i]);
  j["data"]["argv"][1] = 99;
  x.lines[i] = j.dump();
  x.write();
  auto rep = x.verify(x.key);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 13);
  EXPECT_NE(rep.problem.find("record 13 (exec at"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.problem.find("was altered"), std::string::npos) << rep.problem;
}

TEST(AuditVerifyExport, ARecomputedFileFailsAgainstTheSignedHeads) {
  Exported x;
  // Edit record 13 and recompute every hash after it: the chain alone is consistent again.
  std::string prev;
  for (auto& l : x.lines) {
    auto j = Json::parse(l);
    if (is_checkpoint_json(j)) continue;
    auto ev = audit_event_from_json(j).value();
    if (ev.seq < 13) {
      prev = ev.hash;
      continue;
    }
    if (ev.seq == 13) ev.data = Json{{"argv", {"true"}}};
    ev.prev_hash = prev;
    ev.hash = record_hash(ev.seq, ev.time_ns, ev.kind, ev.actor, ev.subject, canonical_json(ev.data), prev);
    prev = ev.hash;
    l = to_json(ev).dump();
  }
  x.write();
  auto rep = x.verify(x.key);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 20);
  EXPECT_NE(rep.problem.find("records 11 to 20"), std::string::npos) << rep.problem;
}

TEST(AuditVerifyExport, ACutTailIsNamedAndStrippedCheckpointsAreNoProof) {
  Exported x;
  // Records 23..25 removed; the checkpoint of 25 (from the sink) still says they existed.
  std::vector<std::string> kept;
  for (auto& l : x.lines) {
    auto j = Json::parse(l);
    if (is_checkpoint_json(j) || j["seq"].get<int64_t>() <= 22) kept.push_back(l);
  }
  x.lines = kept;
  x.write();
  auto rep = x.verify(x.key);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 23);
  EXPECT_NE(rep.problem.find("records 23 to 25 are missing"), std::string::npos) << rep.problem;

  // The attacker strips every checkpoint from the file too: with --key that proves nothing...
  std::vector<std::string> records_only;
  for (auto& l : x.lines)
    if (!is_checkpoint_json(Json::parse(l))) records_only.push_back(l);
  x.lines = records_only;
  x.write();
  auto stripped = x.verify(x.key);
  EXPECT_FALSE(stripped.ok);
  EXPECT_NE(stripped.problem.find("no checkpoint signed by key"), std::string::npos) << stripped.problem;
  // ...and the sink's own copy, given with --checkpoints, names the cut tail again.
  auto with_sink = x.verify(x.key, {x.sink.string()});
  EXPECT_FALSE(with_sink.ok);
  EXPECT_NE(with_sink.problem.find("records 23 to 25 are missing"), std::string::npos) << with_sink.problem;
}

TEST(AuditVerifyExport, CheckpointsOfAnotherKeyAreRefused) {
  Exported x;
  auto rep = x.verify(test_key(9).public_key_hex());
  EXPECT_FALSE(rep.ok);
  EXPECT_NE(rep.problem.find("not signed by this moatd's key"), std::string::npos) << rep.problem;
}

TEST(AuditVerifyExport, MissingAndDamagedLinesAreNamed) {
  Exported x;
  x.lines.erase(x.lines.begin() + static_cast<long>(x.line_of_seq(7)));
  x.write();
  auto rep = x.verify(x.key);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 7);
  EXPECT_NE(rep.problem.find("record 7 is missing"), std::string::npos) << rep.problem;

  Exported y;
  y.lines[y.line_of_seq(4)] = "{not json";
  y.write();
  rep = y.verify(y.key);
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 4);

  auto none = verify_export_file((x.dir / "absent.jsonl").string(), x.key);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().kind, ErrorKind::NotFound);
}

TEST(AuditVerifyExport, AFileWithoutCheckpointsVerifiesOnlyWithoutAKey) {
  Exported x(5, false);
  ASSERT_EQ(x.lines.size(), 5u);
  auto rep = x.verify("");
  EXPECT_TRUE(rep.ok) << rep.problem;
  EXPECT_EQ(rep.checkpoints, 0);
  EXPECT_FALSE(x.verify(x.key).ok);
}

// What a syslog server stores: each checkpoint behind the server's own header (RFC 5424 as moatd sent
// it, or rsyslog's traditional file format). verify --file takes such a log alone (signatures only)
// or as --checkpoints for an export, and a forged line in it is named.
TEST(AuditVerifyExport, ASyslogServersLogOfCheckpointsIsAccepted) {
  Exported x;
  std::vector<std::string> cps;
  for (auto& l : x.lines)
    if (is_checkpoint_json(Json::parse(l))) cps.push_back(l);
  ASSERT_EQ(cps.size(), 3u);
  auto server_log = x.dir / "syslog.log";
  {
    std::ofstream out(server_log);
    out << "<109>1 2026-12-07T20:37:47.123456Z host moat 42 checkpoint - " << cps[0] << "\n";
    out << "Dec  7 20:37:48 host moat[42]: " << cps[1] << "\n";
    out << "2026-12-07T20:37:49+00:00 host moat[42]: " << cps[2] << "\n";
  }
  auto alone = verify_export_file(server_log.string(), x.key);
  ASSERT_TRUE(alone) << alone.error().message;
  EXPECT_TRUE(alone->ok) << alone->problem;
  EXPECT_EQ(alone->records, 0);
  EXPECT_EQ(alone->checkpoints, 3);
  EXPECT_EQ(alone->last_checkpoint_seq, 25);

  // Strip the export's own checkpoints: the server's copy is the proof.
  std::erase_if(x.lines, [](const std::string& l) { return is_checkpoint_json(Json::parse(l)); });
  x.write();
  auto rep = x.verify(x.key, {server_log.string()});
  EXPECT_TRUE(rep.ok) << rep.problem;
  EXPECT_EQ(rep.checkpoints, 3);
  EXPECT_EQ(rep.last_checkpoint_seq, 25);

  // A forged checkpoint in the server's log: its signature fails, named by seq.
  auto forged = Json::parse(cps[1]);
  forged["head_hash"] = std::string(64, '0');
  { std::ofstream(server_log, std::ios::app) << "<109>1 - host moat 42 checkpoint - " << forged.dump() << "\n"; }
  auto bad = verify_export_file(server_log.string(), x.key);
  ASSERT_TRUE(bad) << bad.error().message;
  EXPECT_FALSE(bad->ok);
  EXPECT_EQ(bad->first_bad_seq, 20);
}
