#include "daemon/audit_verbs.h"

#include <chrono>
#include <functional>
#include <streambuf>

#include "audit/export.h"
#include "audit/verify.h"
#include "base/log.h"
#include "vault/private_file.h"

namespace moat {

namespace {

constexpr std::string_view kKeyWhat = "the audit signing key";

// Streams whatever is written to it out as one callback per line, so an export of millions of
// records never sits in memory whole.
class LineSink : public std::streambuf {
 public:
  explicit LineSink(std::function<void(std::string_view)> cb) : cb_(std::move(cb)) {}
  ~LineSink() override { flush_line(); }

 protected:
  int_type overflow(int_type c) override {
    if (c == traits_type::eof()) return c;
    if (c == '\n') flush_line();
    else line_.push_back(static_cast<char>(c));
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize i = 0; i < n; ++i) overflow(s[i]);
    return n;
  }

 private:
  void flush_line() {
    if (!line_.empty()) cb_(line_);
    line_.clear();
  }
  std::function<void(std::string_view)> cb_;
  std::string line_;
};

std::filesystem::path key_path(const Config& config) { return config.state_dir / "audit.key"; }

}  // namespace

Result<std::unique_ptr<Checkpointer>> start_checkpointer(const Config& config, Database& db, AuditLog& log) {
  auto path = key_path(config);
  auto seed = vault::read_private_file(path, kKeyWhat, CheckpointKey::kSeedBytes);
  if (!seed && seed.error().kind == ErrorKind::NotFound) {
    std::string fresh = CheckpointKey::random_seed();
    auto st = vault::create_private_file(path, fresh, kKeyWhat);
    std::fill(fresh.begin(), fresh.end(), '\0');
    if (!st && st.error().kind != ErrorKind::Conflict) return wrap(st.error(), "preparing audit checkpoints");
    if (st) log::info("created the audit signing key {}", path.string());
    seed = vault::read_private_file(path, kKeyWhat, CheckpointKey::kSeedBytes);
  }
  if (!seed) return wrap(seed.error(), "preparing audit checkpoints");
  auto key = CheckpointKey::from_seed(seed->view());
  if (!key)
    return fail(ErrorKind::InvalidInput, "{} {}: {}; it is not the file moat made (move it aside to make a new key)",
                kKeyWhat, path.string(), key.error().message);
  CheckpointerOptions opts;
  opts.every_records = static_cast<int64_t>(config.audit.checkpoint_records);
  opts.interval = config.audit.checkpoint_interval;
  opts.sink = config.audit.sink;
  auto cp = std::make_unique<Checkpointer>(db, log, std::move(*key), opts);
  if (auto st = cp->start(); !st) return wrap(st.error(), "starting audit checkpoints");
  if (opts.sink.kind == AuditSink::Kind::None)
    log::warn("audit checkpoints are kept in the store only: set [audit] sink in moat.toml so that someone who can "
              "write the state directory cannot rewrite them too");
  return cp;
}

void register_audit_verbs(api::Server& s, Database& db, Checkpointer& checkpointer) {
  s.handle("audit.verify", [&db, &checkpointer](const Json&, api::Session&) -> Result<Json> {
    auto reader = db.open_reader();
    if (!reader) return std::unexpected(reader.error());
    // Checkpoints are read before the chain's snapshot is taken, so every record they sign is in it.
    auto cps = read_stored_checkpoints(*reader);
    if (!cps) return std::unexpected(cps.error());
    std::string note;
    int64_t from_sink = 0;
    const AuditSink& sink = checkpointer.sink();
    switch (sink.kind) {
      case AuditSink::Kind::None: break;
      case AuditSink::Kind::File: {
        auto sunk = read_checkpoint_lines(sink.file.string());
        if (sunk) {
          from_sink = static_cast<int64_t>(sunk->size());
          cps->insert(cps->end(), sunk->begin(), sunk->end());
        } else if (sunk.error().kind == ErrorKind::NotFound) {
          note = fmt::format("the audit sink {} does not exist (moved or deleted?); only the store's checkpoints "
                             "were checked",
                             sink.text());
        } else {
          return std::unexpected(sunk.error());
        }
        break;
      }
      case AuditSink::Kind::SyslogTcp:
      case AuditSink::Kind::SyslogTls:
        // moatd only sends to the server; the copy it keeps is checked offline against an export.
        note = fmt::format("only the store's checkpoints were checked: those shipped to {} are checked with 'moat "
                           "audit export > audit.jsonl' and 'moat audit verify --file audit.jsonl --checkpoints "
                           "<the server's log> --key <moat audit key>'",
                           sink.text());
        break;
    }
    auto report = verify_chain(*reader);
    if (!report) return std::unexpected(report.error());
    Json out{{"ok", report->ok}, {"records", report->records}, {"first_bad_seq", report->first_bad_seq},
             {"problem", report->problem}, {"public_key", checkpointer.public_key()},
             {"sink", checkpointer.sink().text()}, {"sink_checkpoints", from_sink}, {"note", note},
             {"checkpoints", 0}, {"last_checkpoint_seq", 0}};
    if (!report->ok) return out;
    auto cr = check_checkpoints(
        std::move(*cps), 1, report->last_seq,
        [&](int64_t seq) -> Result<std::optional<std::string>> {
          auto st = reader->prepare("SELECT hash FROM audit WHERE seq = ?1");
          if (!st) return std::unexpected(st.error());
          st->bind(1, seq);
          auto row = st->step();
          if (!row) return wrap(row.error(), "reading the audit log");
          if (!*row) return std::optional<std::string>{};
          return std::optional<std::string>(std::string(st->column_text(0)));
        },
        checkpointer.public_key());
    out["checkpoints"] = cr.checkpoints;
    out["last_checkpoint_seq"] = cr.last_checkpoint_seq;
    if (!cr.ok) {
      out["ok"] = false;
      out["first_bad_seq"] = cr.first_bad_seq;
      out["problem"] = cr.problem;
    }
    return out;
  });

  s.handle("audit.export", [&db](const Json& a, api::Session& session) -> Result<Json> {
    int64_t since = 0;
    if (a.contains("since") && !a["since"].get<std::string>().empty()) {
      auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
      auto s = parse_since(a["since"].get<std::string>(), now);
      if (!s) return std::unexpected(s.error());
      since = *s;
    }
    auto reader = db.open_reader();
    if (!reader) return std::unexpected(reader.error());
    LineSink sink([&](std::string_view line) { session.progress(Json{{"data", line}}); });
    std::ostream out(&sink);
    if (auto st = export_jsonl(*reader, since, out); !st) return std::unexpected(st.error());
    out.flush();
    return Json{{"exported", true}};
  });

  s.handle("audit.key", [&checkpointer](const Json&, api::Session&) -> Result<Json> {
    return Json{{"public_key", checkpointer.public_key()}};
  });
}

}  // namespace moat
