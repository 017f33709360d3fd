// moat audit verify|export|key
#include <cstdio>

#include "audit/checkpoint.h"
#include "audit/verify.h"
#include "cli/cli.h"

namespace moat::cli {

namespace {

struct VerifyFlags {
  std::string file, key;
  std::vector<std::string> checkpoints;
};

// The notes that qualify an "ok": what the signatures do not cover.
void print_coverage_notes(int64_t checkpoints, int64_t last_checkpoint_seq, int64_t last_seq, bool key_checked) {
  if (checkpoints == 0) {
    std::printf("note: no signed checkpoint covers these records: the chain is consistent, but nothing proves it was "
                "not recomputed or cut short\n");
    return;
  }
  if (!key_checked)
    std::printf("note: checkpoints were checked against the key they name; pass --key (from 'moat audit key') to "
                "check that key is moatd's\n");
  if (last_checkpoint_seq < last_seq)
    std::printf("note: records %lld to %lld come after the newest checkpoint: nothing signed covers them yet\n",
                (long long)last_checkpoint_seq + 1, (long long)last_seq);
}

void verify_file(const Globals& g, const VerifyFlags& f, int& rc) {
  std::string key;
  if (!f.key.empty()) {
    auto k = parse_public_key(f.key);
    if (!k) {
      rc = report(k.error());
      return;
    }
    key = *k;
  }
  auto rep = verify_export_file(f.file, key, f.checkpoints);
  if (!rep) {
    rc = report(rep.error());
    return;
  }
  if (g.json) {
    Json j{{"ok", rep->ok}, {"records", rep->records}, {"first_seq", rep->first_seq}, {"last_seq", rep->last_seq},
           {"checkpoints", rep->checkpoints}, {"last_checkpoint_seq", rep->last_checkpoint_seq},
           {"public_key", rep->public_key}, {"key_given", rep->key_given}, {"first_bad_seq", rep->first_bad_seq},
           {"problem", rep->problem}};
    std::printf("%s\n", j.dump(2).c_str());
  }
  if (!rep->ok) {
    if (!g.json) std::fprintf(stderr, "moat: audit export %s is broken: %s\n", f.file.c_str(), printable(rep->problem).c_str());
    rc = 7;
    return;
  }
  if (g.json) return;
  if (rep->records == 0 && rep->checkpoints > 0) {
    std::printf("audit checkpoints ok: %lld signed checkpoint(s) verified, the newest covering record %lld\n",
                (long long)rep->checkpoints, (long long)rep->last_checkpoint_seq);
    std::printf("note: %s holds no records; to check records against these checkpoints: moat audit export > "
                "audit.jsonl; moat audit verify --file audit.jsonl --checkpoints %s --key KEY\n",
                f.file.c_str(), f.file.c_str());
    if (!rep->key_given)
      std::printf("note: checkpoints were checked against the key they name; pass --key (from 'moat audit key') to "
                  "check that key is moatd's\n");
    return;
  }
  std::printf("audit export ok: records %lld to %lld verified, %lld signed checkpoint(s) match\n",
              (long long)rep->first_seq, (long long)rep->last_seq, (long long)rep->checkpoints);
  print_coverage_notes(rep->checkpoints, rep->last_checkpoint_seq, rep->last_seq, rep->key_given);
}

}  // namespace

void add_audit_commands(CLI::App& app, Globals& g, int& rc) {
  auto* audit = app.add_subcommand("audit", "the tamper-evident audit trail");
  audit->require_subcommand(1);

  auto flags = std::make_shared<VerifyFlags>();
  auto* verify = audit->add_subcommand(
      "verify", "check the hash chain and its signed checkpoints; names the first broken record or the missing tail");
  verify->add_option("--file", flags->file, "check an exported file offline (no moatd needed)");
  verify->add_option("--key", flags->key, "with --file: moatd's public key (as 'moat audit key' prints), or a file holding it");
  verify->add_option("--checkpoints", flags->checkpoints,
                     "with --file: more checkpoint files to check against, such as a copy of the [audit] sink");
  verify->callback([&g, &rc, flags] {
    if (!flags->file.empty()) return verify_file(g, *flags, rc);
    if (!flags->key.empty() || !flags->checkpoints.empty()) {
      rc = report(Error{ErrorKind::InvalidInput,
                        "--key and --checkpoints go with --file (an export checked offline); without --file, moatd "
                        "checks its store against its own key and its [audit] sink"});
      return;
    }
    auto r = call_or_report(g, "audit.verify", Json::object(), rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    if ((*r)["ok"].get<bool>()) {
      if (g.json) return;
      int64_t records = (*r)["records"].get<int64_t>(), cps = r->value("checkpoints", int64_t{0});
      std::printf("audit chain ok: %lld records verified, %lld signed checkpoint(s) match\n", (long long)records,
                  (long long)cps);
      print_coverage_notes(cps, r->value("last_checkpoint_seq", int64_t{0}), records, true);
      if (auto note = r->value("note", std::string()); !note.empty()) std::printf("note: %s\n", printable(note).c_str());
    } else {
      if (!g.json) std::fprintf(stderr, "moat: audit chain broken: %s\n", (*r)["problem"].get<std::string>().c_str());
      rc = 7;
    }
  });

  auto* exp = audit->add_subcommand("export", "write records and signed checkpoints as JSON Lines to stdout");
  auto since = std::make_shared<std::string>();
  exp->add_option("--since", *since, "only records from then on: 2026-11-27T07:00:00Z, 2026-11-27, or 10m / 2h / 7d ago");
  exp->callback([&g, &rc, since] {
    auto r = api::call(g.socket_path(), "audit.export", Json{{"since", *since}}, [](const Json& p) {
      if (p.contains("data")) std::printf("%s\n", p["data"].get<std::string>().c_str());
    });
    if (!r) rc = report(r.error());
  });

  auto* key = audit->add_subcommand("key", "print the public key audit checkpoints are signed with (for verify --key)");
  key->callback([&g, &rc] {
    auto r = call_or_report(g, "audit.key", Json::object(), rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else std::printf("%s\n", (*r)["public_key"].get<std::string>().c_str());
  });
}

}  // namespace moat::cli
