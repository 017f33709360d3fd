// Signed checkpoints: signing and verifying, the checkpointer's triggers and sink, and checking a
// live store's chain against them (a cut tail, a recomputed chain).
#include "audit/checkpoint.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "audit/audit_log.h"
#include "audit/checkpointer.h"
#include "audit/verify.h"
#include "support/raw_sqlite.h"
#include "support/syslog_server.h"
#include "support/temp_dir.h"
#include "support/wait.h"

using namespace moat;
using moat::testing::TempDir;
using namespace std::chrono_literals;

namespace {

using moat::testing::raw_exec;

constexpr int64_t kT0 = 1795764000LL * 1'000'000'000LL;  // 2026-11-27T07:20:00Z

CheckpointKey test_key(char fill = 7) { return CheckpointKey::from_seed(std::string(32, fill)).value(); }

std::vector<std::string> lines_of(const std::filesystem::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Waits for `cond` up to `deadline`; returns whether it came true.
template <class F>
bool wait_for(F cond, std::chrono::milliseconds deadline = 5000ms) {
  return moat::testing::wait_until(cond, deadline, 5ms);
}

struct Store {
  TempDir dir{"moat-audit-cp"};
  std::filesystem::path path = dir / "moat.db";
  std::filesystem::path sink = dir / "sink.jsonl";
  Database db = std::move(Database::open(path).value());
  AuditLog log{db};

  void fill(int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(log.append("exec", "uid 0 pid 1 /bin/moat", "box", Json{{"i", i}}));
  }
  // check_checkpoints over the live store, the way `moat audit verify` does.
  CheckpointReport check(std::vector<Checkpoint> cps, const std::string& key) {
    auto rep = verify_chain(db);
    EXPECT_TRUE(rep && rep->ok) << (rep ? rep->problem : rep.error().message);
    return check_checkpoints(
        std::move(cps), 1, rep->last_seq,
        [&](int64_t seq) -> Result<std::optional<std::string>> {
          auto st = db.prepare("SELECT hash FROM audit WHERE seq = ?1");
          st->bind(1, seq);
          auto row = st->step();
          if (!*row) return std::optional<std::string>{};
          return std::optional<std::string>(std::string(st->column_text(0)));
        },
        key);
  }
};

}  // namespace

TEST(AuditCheckpoint, SignsAndVerifiesAndRefusesEveryEdit) {
  auto key = test_key();
  auto cp = key.sign(42, std::string(64, 'a'), kT0);
  EXPECT_EQ(cp.public_key.size(), 64u);
  EXPECT_EQ(cp.signature.size(), 128u);
  EXPECT_TRUE(verify_checkpoint(cp, key.public_key_hex()));
  EXPECT_TRUE(verify_checkpoint(cp));  // against the key it names

  auto round = checkpoint_from_json(Json::parse(to_json(cp).dump()));
  ASSERT_TRUE(round) << round.error().message;
  EXPECT_TRUE(verify_checkpoint(*round, key.public_key_hex()));
  EXPECT_TRUE(is_checkpoint_json(to_json(cp)));
  EXPECT_FALSE(is_checkpoint_json(Json{{"seq", 1}}));

  for (auto edit : std::vector<std::function<void(Checkpoint&)>>{
           [](Checkpoint& c) { c.seq += 1; }, [](Checkpoint& c) { c.head_hash[0] = 'b'; },
           [](Checkpoint& c) { c.time_ns += 1; }, [](Checkpoint& c) { c.signature[5] ^= 1; }}) {
    Checkpoint bad = cp;
    edit(bad);
    auto st = verify_checkpoint(bad, key.public_key_hex());
    EXPECT_FALSE(st);
  }
  // Re-signed by another key: a root attacker who made a key of his own.
  auto other = test_key(9).sign(42, std::string(64, 'a'), kT0);
  auto st = verify_checkpoint(other, key.public_key_hex());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("not signed by this moatd's key"), std::string::npos) << st.error().message;
  // A forged checkpoint that names moatd's key but was signed with another.
  other.public_key = key.public_key_hex();
  st = verify_checkpoint(other, key.public_key_hex());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("does not verify"), std::string::npos) << st.error().message;
}

TEST(AuditCheckpoint, SameSeedSameKeyAndBadSeedsAreRefused) {
  EXPECT_EQ(test_key().public_key_hex(), test_key().public_key_hex());
  EXPECT_NE(test_key(1).public_key_hex(), test_key(2).public_key_hex());
  EXPECT_FALSE(CheckpointKey::from_seed("short"));
  EXPECT_EQ(CheckpointKey::random_seed().size(), CheckpointKey::kSeedBytes);
}

TEST(AuditCheckpoint, PublicKeyFromTextOrFile) {
  TempDir dir("moat-audit-key");
  auto hex = test_key().public_key_hex();
  EXPECT_EQ(parse_public_key(hex).value(), hex);
  std::ofstream(dir / "pub") << hex << "\n";
  EXPECT_EQ(parse_public_key((dir / "pub").string()).value(), hex);
  std::ofstream(dir / "junk") << "not a key\n";
  auto junk = parse_public_key((dir / "junk").string());
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message.find("does not hold a public key"), std::string::npos);
  EXPECT_FALSE(parse_public_key("abc"));
}

TEST(AuditCheckpoint, CheckpointerSignsEveryNRecordsAndAtStopIntoSinkAndStore) {
  Store s;
  Checkpointer cp(s.db, s.log, test_key(), CheckpointerOptions{10, std::chrono::hours(1), file_sink(s.sink)});
  ASSERT_TRUE(cp.start());
  struct stat st {};
  ASSERT_EQ(::stat(s.sink.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  s.fill(9);
  EXPECT_EQ(lines_of(s.sink).size(), 0u);  // fewer than N new records: nothing signed yet
  s.fill(1);
  ASSERT_TRUE(wait_for([&] { return lines_of(s.sink).size() == 1; }));
  EXPECT_EQ(Json::parse(lines_of(s.sink)[0])["seq"], 10);
  s.fill(15);  // appended faster than it signs: the next checkpoint covers all that came meanwhile
  ASSERT_TRUE(wait_for([&] { return lines_of(s.sink).size() == 2; }));
  s.fill(3);
  ASSERT_TRUE(cp.stop());
  auto lines = lines_of(s.sink);
  ASSERT_GE(lines.size(), 3u);
  auto last = checkpoint_from_json(Json::parse(lines.back())).value();
  EXPECT_EQ(last.seq, 28);  // the stop signs the head
  EXPECT_TRUE(verify_checkpoint(last, cp.public_key()));
  for (auto& l : lines) EXPECT_TRUE(verify_checkpoint(checkpoint_from_json(Json::parse(l)).value(), cp.public_key()));

  auto stored = read_stored_checkpoints(s.db).value();
  ASSERT_EQ(stored.size(), lines.size());
  EXPECT_EQ(stored.back().signature, last.signature);
  auto from_sink = read_checkpoint_lines(s.sink.string()).value();
  EXPECT_EQ(from_sink.size(), lines.size());

  // Nothing new: a second stop or a checkpoint now signs nothing.
  ASSERT_TRUE(cp.stop());
  auto again = cp.checkpoint_now();
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->has_value());
  EXPECT_EQ(lines_of(s.sink).size(), lines.size());

  auto rep = s.check(stored, cp.public_key());
  EXPECT_TRUE(rep.ok) << rep.problem;
  EXPECT_EQ(rep.last_checkpoint_seq, 28);
}

TEST(AuditCheckpoint, CheckpointerSignsAfterTheIntervalWhenTheChainMoved) {
  Store s;
  Checkpointer cp(s.db, s.log, test_key(), CheckpointerOptions{1'000'000, 100ms, file_sink(s.sink)});
  ASSERT_TRUE(cp.start());
  s.fill(3);
  ASSERT_TRUE(wait_for([&] { return lines_of(s.sink).size() == 1; }));
  EXPECT_EQ(Json::parse(lines_of(s.sink)[0])["seq"], 3);
  // An unchanged head is not signed again.
  auto idle = cp.checkpoint_now();
  ASSERT_TRUE(idle);
  EXPECT_FALSE(idle->has_value());
  EXPECT_EQ(lines_of(s.sink).size(), 1u);
  s.fill(1);
  ASSERT_TRUE(wait_for([&] { return lines_of(s.sink).size() == 2; }));
}

TEST(AuditCheckpoint, RestartDoesNotResignAndSinkErrorsAreClear) {
  Store s;
  {
    Checkpointer cp(s.db, s.log, test_key(), CheckpointerOptions{1000, std::chrono::hours(1), file_sink(s.sink)});
    ASSERT_TRUE(cp.start());
    s.fill(5);
  }  // destructor: stop, checkpoint at 5
  EXPECT_EQ(lines_of(s.sink).size(), 1u);
  {
    Checkpointer cp(s.db, s.log, test_key(), CheckpointerOptions{1000, std::chrono::hours(1), file_sink(s.sink)});
    ASSERT_TRUE(cp.start());
  }
  EXPECT_EQ(lines_of(s.sink).size(), 1u);

  Checkpointer bad(s.db, s.log, test_key(), CheckpointerOptions{1000, std::chrono::hours(1), file_sink(s.dir / "no/such/dir/sink")});
  auto st = bad.start();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("[audit] sink"), std::string::npos) << st.error().message;
  std::filesystem::create_symlink(s.sink, s.dir / "link");
  Checkpointer linked(s.db, s.log, test_key(), CheckpointerOptions{1000, std::chrono::hours(1), file_sink(s.dir / "link")});
  st = linked.start();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("symbolic link"), std::string::npos) << st.error().message;
}

TEST(AuditCheckpoint, CutTailIsNamedAgainstTheSignedCheckpoint) {
  Store s;
  Checkpointer cp(s.db, s.log, test_key(), CheckpointerOptions{1000, std::chrono::hours(1), file_sink(s.sink)});
  ASSERT_TRUE(cp.start());
  s.fill(20);
  ASSERT_TRUE(cp.stop());
  auto sunk = read_checkpoint_lines(s.sink.string()).value();
  raw_exec(s.path, "DELETE FROM audit WHERE seq > 16; DELETE FROM audit_checkpoints");
  AuditLog fresh(s.db);  // the chain as a restarted moatd reads it
  auto rep = s.check(sunk, cp.public_key());
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 17);
  EXPECT_NE(rep.problem.find("records 17 to 20 are missing"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.problem.find("the tail was cut"), std::string::npos) << rep.problem;
}

TEST(AuditCheckpoint, RecomputedChainNoLongerMatchesTheSignedHead) {
  Store s;
  Checkpointer cp(s.db, s.log, test_key(), CheckpointerOptions{10, std::chrono::hours(1), file_sink(s.sink)});
  ASSERT_TRUE(cp.start());
  s.fill(10);
  ASSERT_TRUE(wait_for([&] { return lines_of(s.sink).size() == 1; }));
  s.fill(10);
  ASSERT_TRUE(cp.stop());
  auto sunk = read_checkpoint_lines(s.sink.string()).value();
  ASSERT_EQ(sunk.size(), 2u);
  // Rewrite record 14 and recompute every hash from there, as an attacker with the file would.
  {
    std::vector<AuditEvent> evs = s.log.read_after(0, 100).value();
    std::string prev = evs[12].hash;
    for (size_t i = 13; i < evs.size(); ++i) {
      auto& e = evs[i];
      if (e.seq == 14) e.data = Json{{"i", "nothing to see"}};
      std::string data = canonical_json(e.data);
      std::string h = record_hash(e.seq, e.time_ns, e.kind, e.actor, e.subject, data, prev);
      raw_exec(s.path, fmt::format("UPDATE audit SET data = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}", data,
                                   prev, h, e.seq));
      prev = h;
    }
  }
  auto chain = verify_chain(s.db);
  ASSERT_TRUE(chain);
  EXPECT_TRUE(chain->ok) << "the recomputed chain is consistent on its own";
  auto rep = s.check(sunk, cp.public_key());
  EXPECT_FALSE(rep.ok);
  EXPECT_EQ(rep.first_bad_seq, 20);
  EXPECT_NE(rep.problem.find("records 11 to 20"), std::string::npos) << rep.problem;
  EXPECT_NE(rep.problem.find("recomputed"), std::string::npos) << rep.problem;
}

TEST(AuditCheckpoint, LineKeepsTheDocumentedFieldOrderAndParsesBack) {
  auto cp = test_key().sign(7, std::string(64, 'c'), kT0);
  auto line = checkpoint_line(cp);
  EXPECT_EQ(line.rfind("{\"type\":\"checkpoint\",\"seq\":7,\"head_hash\":\"ccc", 0), 0u) << line;
  auto back = checkpoint_from_json(Json::parse(line));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(Json::parse(line), to_json(cp));
  EXPECT_TRUE(verify_checkpoint(*back, cp.public_key));
}

TEST(AuditCheckpoint, SyslogMessageIsRfc5424WithTheCheckpointAsItsMsg) {
  auto cp = test_key().sign(7, std::string(64, 'c'), kT0 + 123'456'789);
  auto msg = syslog_checkpoint_message(cp, "host-1.example", 4242);
  EXPECT_EQ(msg, "<109>1 2026-11-27T07:20:00.123456Z host-1.example moat 4242 checkpoint - " + checkpoint_line(cp));
  auto parsed = moat::testing::parse_rfc5424(msg);  // the syslog double's parser, checked against logger
  ASSERT_TRUE(parsed) << msg;
  EXPECT_EQ(parsed->facility, 13);
  EXPECT_EQ(parsed->severity, 5);
  EXPECT_EQ(parsed->msg, checkpoint_line(cp));
  EXPECT_EQ(syslog_checkpoint_message(cp, "bad host", 1).find("Z - moat 1 checkpoint"), 33u) << "nil HOSTNAME";
  EXPECT_NE(syslog_checkpoint_message(cp, "", 1).find("Z - moat 1 checkpoint"), std::string::npos);
}

// The sink's retry: a checkpoint the syslog server missed is shipped again once it is back, even
// when no record was appended since (the newest checkpoint covers all before it).
TEST(AuditCheckpoint, ACheckpointTheServerMissedIsShippedWhenItReturns) {
  Store s;
  moat::testing::SyslogServer server(s.dir / "syslog.log");
  // Neither trigger fires by itself: only the retry ships the missed checkpoint.
  CheckpointerOptions opts{1'000'000, std::chrono::hours(1), parse_audit_sink(server.url()).value()};
  opts.sink_retry = 50ms;
  opts.sink_retry_cap = 200ms;
  Checkpointer cp(s.db, s.log, test_key(), opts);
  ASSERT_TRUE(cp.start());
  s.fill(3);
  ASSERT_TRUE(cp.checkpoint_now());
  ASSERT_TRUE(wait_for([&] { return server.messages().size() == 1; }));
  server.stop();
  s.fill(2);
  auto missed = cp.checkpoint_now();
  ASSERT_FALSE(missed) << "the server is down";
  EXPECT_NE(missed.error().message.find(server.url()), std::string::npos) << missed.error().message;
  EXPECT_NE(missed.error().message.find("kept in the store"), std::string::npos) << missed.error().message;
  EXPECT_EQ(read_stored_checkpoints(s.db).value().back().seq, 5) << "stored whatever the sink did";
  server.start();
  ASSERT_TRUE(wait_for([&] { return server.messages().size() == 2; }));
  auto back = Json::parse(server.messages().back().msg);
  EXPECT_EQ(back["seq"], 5);
  EXPECT_EQ(server.connections(), 2u) << "a new connection after the server closed the old one";
  EXPECT_EQ(server.bad_frames(), 0u);
}
