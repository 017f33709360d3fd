// Signed audit checkpoints against a real moatd, a real SQLite file and the real sqlite3 shell: what
// someone who can write the store can and cannot hide once checkpoints were shipped to the sink.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "api/client.h"
#include "audit/event.h"
#include "base/json.h"
#include "support/moat_env.h"
#include "support/syslog_server.h"
#include "support/test_ca.h"
#include "support/wait.h"

using namespace moat;
using namespace moat::testing;

namespace {

std::vector<Json> json_lines(const std::string& text) {
  std::vector<Json> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(Json::parse(l));
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

enum class Sink { File, Syslog, SyslogTls };

// A moatd whose checkpoints go to a sink this test owns: a file, or a syslog server on 127.0.0.1
// (the double of tests/support/syslog_server.h, which stores what it receives in `sink`).
struct SignedEnv {
  TempDir out{"moat-audit-sink"};
  std::filesystem::path sink = out / "checkpoints.jsonl";
  std::unique_ptr<TestCa> ca;  // SyslogTls: the CA of the server's certificate, moatd's sink_ca_file
  std::unique_ptr<SyslogServer> server;
  std::unique_ptr<MoatEnv> env;

  explicit SignedEnv(int every = 1000, std::string_view interval = "1h", Sink kind = Sink::File) {
    std::ofstream(sink).close();  // the test's file; moatd only appends
    std::string where = sink.string(), extra;
    if (kind == Sink::Syslog) {
      server = std::make_unique<SyslogServer>(sink);
      where = server->url();
    } else if (kind == Sink::SyslogTls) {
      ca = std::make_unique<TestCa>(out.path());
      server = std::make_unique<SyslogServer>(sink, 0, ca->issue("syslog", {"127.0.0.1"}));
      where = server->url();
      extra = fmt::format("sink_ca_file = \"{}\"\n", ca->ca_cert_path().string());
    }
    env = std::make_unique<MoatEnv>(fmt::format("[audit]\nsink = \"{}\"\n{}checkpoint_records = {}\ncheckpoint_interval = \"{}\"\n",
                                                where, extra, every, interval));
  }
  void records(int n, std::string_view prefix = "s") {
    for (int i = 0; i < n; ++i)
      env->ok({"secret", "set", fmt::format("{}{}", prefix, i), "--host", "api.example.com"}, "value");
  }
  // The checkpoints the sink holds, oldest first (from a syslog server: each message's MSG).
  std::vector<Json> shipped() const {
    if (!server) return json_lines(read_text(sink));
    std::vector<Json> out;
    for (auto& m : server->messages()) out.push_back(Json::parse(m.msg));
    return out;
  }
  int64_t last_shipped_seq() const {
    auto s = shipped();
    return s.empty() ? 0 : s.back()["seq"].get<int64_t>();
  }
  // The audit table as the sqlite3 shell sees it.
  std::vector<Json> table() const {
    auto r = run_process({"sqlite3", "-json", "-cmd", ".timeout 10000", env->db_path().string(),
                          "SELECT seq, time_ns, kind, actor, subject, data, prev_hash, hash FROM audit ORDER BY seq"});
    EXPECT_TRUE(r && r->ok()) << (r ? r->err : r.error().message);
    return Json::parse(r->out);
  }
  void sql(const std::string& statements) const {
    auto r = run_process({"sqlite3", "-cmd", ".timeout 10000", env->db_path().string()},
                         RunOptions{.stdin_data = statements});
    ASSERT_TRUE(r && r->ok()) << (r ? r->err : r.error().message);
  }
  // Rewrites the data of every record with seq >= from (kind "secret.set" only) and recomputes every
  // hash from there on, as an attacker with the file and a few lines of code would; the chain is
  // consistent again on its own.
  void recompute_from(int64_t from) const {
    auto rows = table();
    std::string prev, script = "BEGIN;\n";
    for (auto& r : rows) {
      int64_t seq = r["seq"];
      if (seq < from) {
        prev = r["hash"];
        continue;
      }
      std::string data = r["data"];
      if (r["kind"] == "secret.set") data = canonical_json(Json{{"name", "nothing-to-see"}});
      std::string h = record_hash(seq, r["time_ns"].get<int64_t>(), r["kind"].get<std::string>(),
                                  r["actor"].get<std::string>(), r["subject"].get<std::string>(), data, prev);
      std::string quoted;
      for (char c : data) quoted += c == '\'' ? std::string("''") : std::string(1, c);
      script += fmt::format("UPDATE audit SET data = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {};\n", quoted,
                            prev, h, seq);
      prev = h;
    }
    script += "DELETE FROM audit_checkpoints;\nCOMMIT;\n";  // the store's copy goes too
    sql(script);
  }
};

}  // namespace

TEST(AuditSignedCheckpoints, ACutTailIsNamedAgainstTheShippedCheckpoint) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s;
  s.records(4);
  EXPECT_NE(s.env->ok({"audit", "verify"}).find("audit chain ok"), std::string::npos);
  s.env->stop_daemon();  // signs the head (the daemon.stop record) and ships it
  auto shipped = s.shipped();
  ASSERT_FALSE(shipped.empty());
  int64_t signed_seq = shipped.back()["seq"];
  auto rows = s.table();
  ASSERT_EQ(rows.back()["seq"], signed_seq);
  EXPECT_EQ(rows.back()["kind"], "daemon.stop");

  // Cut the last five records, and the store's copy of the checkpoints with them.
  s.sql(fmt::format("DELETE FROM audit WHERE seq > {}; DELETE FROM audit_checkpoints;", signed_seq - 5));
  s.env->start_daemon();
  auto r = s.env->moat({"audit", "verify"});
  EXPECT_EQ(r.code, 7) << r.out << r.err;
  EXPECT_NE(r.err.find("are missing"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(fmt::format("covers record {} (the tail was cut)", signed_seq)), std::string::npos) << r.err;
  auto j = Json::parse(s.env->moat({"--json", "audit", "verify"}).out);
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_EQ(j["first_bad_seq"], signed_seq - 5 + 2);  // after the restart's daemon.start record
}

TEST(AuditSignedCheckpoints, ARecomputedChainNoLongerMatchesTheSignedHeads) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s;
  s.records(4);
  s.env->stop_daemon();
  int64_t signed_seq = s.shipped().back()["seq"];
  s.recompute_from(2);
  s.env->start_daemon();
  auto r = s.env->moat({"audit", "verify"});
  EXPECT_EQ(r.code, 7) << r.out << r.err;
  EXPECT_NE(r.err.find(fmt::format("record {} is not the record signed at", signed_seq)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("recomputed"), std::string::npos) << r.err;
}

TEST(AuditSignedCheckpoints, AnExportVerifiesOfflineAndAnEditedRecordIsNamed) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s(3);  // a checkpoint every 3 records
  s.records(7);
  auto key = s.env->ok({"audit", "key"});
  ASSERT_EQ(key.size(), 65u) << key;  // 64 hex digits and a newline
  std::ofstream(s.out / "moat.pub") << key;
  auto exported = s.env->ok({"audit", "export"});
  s.env->stop_daemon();  // offline from here on: no moatd
  std::ofstream(s.out / "audit.jsonl") << exported;
  auto lines = json_lines(exported);
  int checkpoints = 0;
  for (auto& l : lines) checkpoints += l.contains("type") && l["type"] == "checkpoint";
  EXPECT_GE(checkpoints, 3);

  auto file = (s.out / "audit.jsonl").string(), pub = (s.out / "moat.pub").string();
  auto ok = s.env->moat({"audit", "verify", "--file", file, "--key", pub});
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("audit export ok: records 1 to"), std::string::npos) << ok.out;
  auto okj = Json::parse(s.env->ok({"--json", "audit", "verify", "--file", file, "--key", key.substr(0, 64)}));
  EXPECT_TRUE(okj["ok"].get<bool>());
  EXPECT_TRUE(okj["key_given"].get<bool>());
  EXPECT_GE(okj["checkpoints"].get<int>(), 3);

  // Edit one record of the file: verify names it.
  int64_t victim = 0;
  std::string edited;
  for (auto& l : lines) {
    if (!l.contains("type") && l["kind"] == "secret.set" && !victim) {
      victim = l["seq"];
      l["data"]["name"] = "renamed";
    }
    edited += l.dump() + "\n";
  }
  ASSERT_NE(victim, 0);
  std::ofstream(s.out / "edited.jsonl") << edited;
  auto bad = s.env->moat({"audit", "verify", "--file", (s.out / "edited.jsonl").string(), "--key", pub});
  EXPECT_EQ(bad.code, 7) << bad.out << bad.err;
  EXPECT_NE(bad.err.find(fmt::format("record {} (secret.set at", victim)), std::string::npos) << bad.err;

  // A key that is not moatd's: refused.
  auto other = s.env->moat({"audit", "verify", "--file", file, "--key", std::string(64, 'a')});
  EXPECT_EQ(other.code, 7) << other.out << other.err;
  EXPECT_NE(other.err.find("not signed by this moatd's key"), std::string::npos) << other.err;
}

// The documented limit: records appended after the last checkpoint that reached the sink, then
// altered before any checkpoint covered them, are not detected.
TEST(AuditSignedCheckpoints, TamperingAfterTheLastShippedCheckpointIsTheDocumentedLimit) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s;
  s.records(2, "before");
  s.env->stop_daemon();
  int64_t signed_seq = s.shipped().back()["seq"];
  s.env->start_daemon();
  s.records(3, "after");
  s.env->kill_daemon(SIGKILL);  // no checkpoint at stop: records after signed_seq were never signed
  EXPECT_EQ(s.shipped().back()["seq"], signed_seq);
  s.recompute_from(signed_seq + 1);
  s.env->start_daemon();
  auto r = s.env->moat({"audit", "verify"});
  EXPECT_EQ(r.code, 0) << "an unsigned tail rewritten consistently passes: " << r.out << r.err;
  EXPECT_NE(r.out.find(fmt::format("records {} to", signed_seq + 1)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing signed covers them yet"), std::string::npos) << r.out;
  // The same rewrite reaching one record the shipped checkpoint covers is caught.
  s.env->stop_daemon();
  s.recompute_from(signed_seq - 1);
  s.env->start_daemon();
  auto caught = s.env->moat({"audit", "verify"});
  EXPECT_EQ(caught.code, 7) << caught.out << caught.err;
}

TEST(AuditSignedCheckpoints, AfterTheIntervalTheMovedHeadIsShippedWhileMoatdRuns) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s(1000, "1s");
  s.records(1);
  int64_t last = 0;
  (void)wait_until(
      [&] {
        auto shipped = s.shipped();
        return !shipped.empty() && (last = shipped.back()["seq"]) >= 3;  // daemon.start, image.import, secret.set
      },
      std::chrono::seconds(20), std::chrono::milliseconds(50));
  EXPECT_GE(last, 3);
  auto r = s.env->moat({"audit", "verify"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
}

TEST(AuditSignedCheckpoints, AnUnwritableSinkStopsMoatdNamingIt) {
  MOAT_REQUIRE_ROOT();
  TempDir state("moat-badsink");
  std::ofstream(state.path() / "moat.toml") << "[audit]\nsink = \"/nonexistent-moat-dir/checkpoints.jsonl\"\n";
  auto r = run_process({MOAT_BUILD_DIR "/moatd", "--state-dir", state.path().string()});
  ASSERT_TRUE(r);
  EXPECT_NE(r->exit_code, 0);
  std::string said = r->out + r->err;  // moatd's log goes to its stdout
  EXPECT_NE(said.find("cannot open the audit checkpoint sink /nonexistent-moat-dir/checkpoints.jsonl"),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("[audit] sink in moat.toml"), std::string::npos) << said;
}

TEST(AuditSignedCheckpoints, TheActorIsThePeerNotWhatTheRequestClaims) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s;
  auto socket = s.env->state_dir() / "moatd.sock";
  auto r = api::call(socket, "secret.set",
                     Json{{"name", "spoofed"}, {"hosts", {"api.example.com"}}, {"value", "x"}, {"actor", "alice"}});
  ASSERT_TRUE(r) << r.error().message;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(n, 0);
  std::string me = fmt::format("uid 0 pid {} {}", getpid(), std::string_view(exe, static_cast<size_t>(n)));
  s.records(1, "cli");
  bool seen_spoof = false, seen_cli = false;
  for (auto& l : json_lines(s.env->ok({"audit", "export"}))) {
    if (l.contains("type")) continue;
    if (l["subject"] == "spoofed") {
      seen_spoof = true;
      EXPECT_EQ(l["actor"], me);
    }
    if (l["subject"] == "cli0") {
      seen_cli = true;
      std::string actor = l["actor"];
      EXPECT_TRUE(actor.starts_with("uid 0 pid ")) << actor;
      EXPECT_TRUE(actor.ends_with("/moat")) << actor;
    }
  }
  EXPECT_TRUE(seen_spoof);
  EXPECT_TRUE(seen_cli);
}

// --- a remote syslog sink: syslog+tcp://HOST:PORT ---

TEST(AuditSyslogSink, CheckpointsReachTheServerAndVerifyAgainstWhatItStored) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s(3, "1h", Sink::Syslog);  // a checkpoint every 3 records
  s.records(7);
  ASSERT_TRUE(wait_until([&] { return s.shipped().size() >= 3; }, std::chrono::seconds(20)));
  for (auto& m : s.server->messages()) {
    EXPECT_EQ(m.facility, 13) << m.raw;  // log audit
    EXPECT_EQ(m.severity, 5) << m.raw;   // notice
    EXPECT_EQ(m.app_name, "moat");
    EXPECT_EQ(m.msgid, "checkpoint");
    EXPECT_EQ(m.procid, std::to_string(s.env->daemon_pid()));
    EXPECT_EQ(m.structured_data, "-");
    EXPECT_TRUE(m.timestamp.ends_with("Z") && m.timestamp.size() == 27) << m.timestamp;  // microseconds, UTC
    EXPECT_TRUE(m.msg.starts_with(R"({"type":"checkpoint","seq":)")) << m.msg;
  }
  EXPECT_EQ(s.server->connections(), 1u) << "one connection, kept open between checkpoints";
  EXPECT_EQ(s.server->bad_frames(), 0u);
  // moatd cannot read the server's copy back: its own verify says where to check it.
  auto live = s.env->moat({"audit", "verify"});
  EXPECT_EQ(live.code, 0) << live.out << live.err;
  EXPECT_NE(live.out.find(s.server->url()), std::string::npos) << live.out;

  auto key = s.env->ok({"audit", "key"}).substr(0, 64);
  s.env->stop_daemon();  // the last checkpoint goes to the server too
  auto capture = s.sink.string(), file = (s.out / "audit.jsonl").string();
  auto lines = split_lines(read_text(s.sink));
  ASSERT_GE(lines.size(), 4u);
  EXPECT_TRUE(lines[0].starts_with("<109>1 ")) << "the server stored the syslog header too: " << lines[0];

  // The server's log alone: every checkpoint's signature.
  auto alone = s.env->moat({"audit", "verify", "--file", capture, "--key", key});
  EXPECT_EQ(alone.code, 0) << alone.out << alone.err;
  EXPECT_NE(alone.out.find(fmt::format("audit checkpoints ok: {} signed checkpoint(s) verified", lines.size())),
            std::string::npos)
      << alone.out;
  // An export checked against the server's copy (made after the last checkpoint, which covers the
  // daemon.stop record: an export made before it would look cut short).
  s.env->start_daemon();
  std::ofstream(s.out / "audit.jsonl") << s.env->ok({"audit", "export"});
  auto both = s.env->moat({"--json", "audit", "verify", "--file", file, "--checkpoints", capture, "--key", key});
  EXPECT_EQ(both.code, 0) << both.out << both.err;
  auto j = Json::parse(both.out);
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_GE(j["checkpoints"].get<int64_t>(), 3);
}

TEST(AuditSyslogSink, AServerDownAtStartStopsMoatdNamingIt) {
  MOAT_REQUIRE_ROOT();
  TempDir state("moat-badsyslog");
  SyslogServer server(state.path() / "never.log");
  server.stop();  // a port nothing listens on
  std::ofstream(state.path() / "moat.toml") << fmt::format("[audit]\nsink = \"{}\"\n", server.url());
  auto r = run_process({MOAT_BUILD_DIR "/moatd", "--state-dir", state.path().string()},
                       RunOptions{.timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(r);
  EXPECT_NE(r->exit_code, 0);
  std::string said = r->out + r->err;
  EXPECT_NE(said.find(fmt::format("cannot connect to the audit checkpoint sink {}", server.url())), std::string::npos)
      << said;
  EXPECT_NE(said.find("start the syslog server, or fix [audit] sink in moat.toml"), std::string::npos) << said;
  EXPECT_FALSE(std::filesystem::exists(state.path() / "moatd.sock")) << "nothing half-started";
}

TEST(AuditSyslogSink, WhileTheServerIsDownMoatdServesWarnsAndCatchesUpWhenItReturns) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s(1000, "1s", Sink::Syslog);
  s.records(1);
  ASSERT_TRUE(wait_until([&] { return s.last_shipped_seq() >= 3; }, std::chrono::seconds(20)));

  s.server->stop();
  auto log_path = s.env->state_dir() / "moatd.log";
  size_t log_before = read_text(log_path).size();
  for (int i = 0; i < 3; ++i) {  // moatd keeps serving: a request does not wait on the network
    auto t0 = std::chrono::steady_clock::now();
    s.records(1, fmt::format("down{}-", i));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  }
  ASSERT_TRUE(wait_until(
      [&] {
        for (auto& line : split_lines(read_text(log_path).substr(log_before)))
          if (line.find(" warning ") != std::string::npos && line.find(s.server->url()) != std::string::npos)
            return true;  // a warning naming the sink
        return false;
      },
      std::chrono::seconds(20)))
      << read_text(log_path).substr(log_before);
  int64_t head = s.env->audit_records().back()["seq"];
  EXPECT_LT(s.last_shipped_seq(), head);

  s.server->start();  // the same port: moatd reconnects after its backoff
  ASSERT_TRUE(wait_until([&] { return s.last_shipped_seq() >= head; }, std::chrono::seconds(60)))
      << "last shipped " << s.last_shipped_seq() << ", head " << head << "\n"
      << read_text(log_path).substr(log_before);
  EXPECT_GE(s.server->connections(), 2u);
  auto r = s.env->moat({"audit", "verify"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
}

TEST(AuditSyslogSink, ARewrittenStoreIsCaughtAgainstTheServersCopy) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s(1000, "1h", Sink::Syslog);
  s.records(4);
  auto key = s.env->ok({"audit", "key"}).substr(0, 64);
  s.env->stop_daemon();  // signs the head and ships it
  int64_t signed_seq = s.last_shipped_seq();
  ASSERT_GT(signed_seq, 0);
  s.recompute_from(2);  // the store's own checkpoints go too
  s.env->start_daemon();
  // The store alone no longer shows it: its chain is consistent and its checkpoints are gone.
  auto local = s.env->moat({"audit", "verify"});
  EXPECT_EQ(local.code, 0) << local.out << local.err;
  std::ofstream(s.out / "audit.jsonl") << s.env->ok({"audit", "export"});
  auto r = s.env->moat({"audit", "verify", "--file", (s.out / "audit.jsonl").string(), "--checkpoints",
                        s.sink.string(), "--key", key});
  EXPECT_EQ(r.code, 7) << r.out << r.err;
  EXPECT_NE(r.err.find(fmt::format("record {} is not the record signed at", signed_seq)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("recomputed"), std::string::npos) << r.err;
}

// --- over TLS: syslog+tls://HOST:PORT, the server verified against [audit] sink_ca_file ---

TEST(AuditSyslogSink, OverTlsCheckpointsArriveAndAServerTheCaDidNotSignIsRefused) {
  MOAT_REQUIRE_ROOT();
  SignedEnv s(3, "1h", Sink::SyslogTls);
  EXPECT_TRUE(s.server->url().starts_with("syslog+tls://")) << s.server->url();
  s.records(4);
  ASSERT_TRUE(wait_until([&] { return s.shipped().size() >= 2; }, std::chrono::seconds(20)));
  auto key = s.env->ok({"audit", "key"}).substr(0, 64);
  s.env->stop_daemon();
  EXPECT_EQ(s.server->connections(), 1u) << "one TLS connection kept open (session tickets are not a close)";
  EXPECT_EQ(s.server->failed_handshakes(), 0u);
  EXPECT_EQ(s.server->bad_frames(), 0u);
  auto alone = s.env->moat({"audit", "verify", "--file", s.sink.string(), "--key", key});
  EXPECT_EQ(alone.code, 0) << alone.out << alone.err;
  EXPECT_NE(alone.out.find("audit checkpoints ok"), std::string::npos) << alone.out;

  // A server whose certificate another CA signed: moatd does not start, and says why.
  TempDir state("moat-tls-syslog");
  SyslogServer impostor(state.path() / "impostor.log", 0, s.ca->issue_bad("impostor", BadCert::UntrustedCa));
  std::ofstream(state.path() / "moat.toml")
      << fmt::format("[audit]\nsink = \"{}\"\nsink_ca_file = \"{}\"\n", impostor.url(), s.ca->ca_cert_path().string());
  auto r = run_process({MOAT_BUILD_DIR "/moatd", "--state-dir", state.path().string()},
                       RunOptions{.timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(r);
  EXPECT_NE(r->exit_code, 0);
  std::string said = r->out + r->err;
  EXPECT_NE(said.find(fmt::format("cannot connect to the audit checkpoint sink {}", impostor.url())), std::string::npos)
      << said;
  EXPECT_NE(said.find("certificate verification failed"), std::string::npos) << said;
  EXPECT_NE(said.find("[audit] sink_ca_file"), std::string::npos) << said;
  EXPECT_TRUE(impostor.messages().empty()) << "nothing was sent to it";
}
