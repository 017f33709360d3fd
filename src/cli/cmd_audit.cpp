// moat audit verify|export
#include <cstdio>

#include "cli/cli.h"

namespace moat::cli {

void add_audit_commands(CLI::App& app, Globals& g, int& rc) {
  auto* audit = app.add_subcommand("audit", "the tamper-evident audit trail");
  audit->require_subcommand(1);

  auto* verify = audit->add_subcommand("verify", "check the whole hash chain; names the first broken record");
  verify->callback([&g, &rc] {
    auto r = call_or_report(g, "audit.verify", Json::object(), rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    if ((*r)["ok"].get<bool>()) {
      if (!g.json) std::printf("audit chain ok: %lld records verified\n", (long long)(*r)["records"].get<int64_t>());
    } else {
      if (!g.json) std::fprintf(stderr, "moat: audit chain broken: %s\n", (*r)["problem"].get<std::string>().c_str());
      rc = 7;
    }
  });

  auto* exp = audit->add_subcommand("export", "write records as JSON Lines to stdout");
  auto since = std::make_shared<std::string>();
  exp->add_option("--since", *since, "only records from then on: 2026-11-27T07:00:00Z, 2026-11-27, or 10m / 2h / 7d ago");
  exp->callback([&g, &rc, since] {
    auto r = api::call(g.socket_path(), "audit.export", Json{{"since", *since}}, [](const Json& p) {
      if (p.contains("data")) std::printf("%s\n", p["data"].get<std::string>().c_str());
    });
    if (!r) rc = report(r.error());
  });
}

}  // namespace moat::cli
