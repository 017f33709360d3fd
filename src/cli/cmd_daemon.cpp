// moat daemon status|stop
#include <cstdio>

#include "cli/cli.h"

namespace moat::cli {

void add_daemon_commands(CLI::App& app, Globals& g, int& rc) {
  auto* d = app.add_subcommand("daemon", "moatd itself");
  d->require_subcommand(1);
  auto* status = d->add_subcommand("status", "is moatd running, and with how many sandboxes");
  status->callback([&g, &rc] {
    auto r = call_or_report(g, "daemon.status", Json::object(), rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else {
      std::printf("moatd running (pid %d), %zu agent(s), %zu sandbox(es), %d running, socket %s\n", (*r)["pid"].get<int>(),
                  r->value("agents", size_t{0}), (*r)["sandboxes"].get<size_t>(), (*r)["running"].get<int>(),
                  (*r)["socket"].get<std::string>().c_str());
      if (!r->value("web_url", std::string()).empty())
        std::printf("web chat on %s/\n", (*r)["web_url"].get<std::string>().c_str());
      if (r->contains("runtimes"))
        for (auto& [name, version] : (*r)["runtimes"].items())
          std::printf("runtime %s: %s\n", name.c_str(), version.get<std::string>().c_str());
    }
  });
  auto* stop = d->add_subcommand("stop", "stop moatd (sandboxes keep running unless --all)");
  auto all = std::make_shared<bool>(false);
  stop->add_flag("--all", *all, "stop every running sandbox first");
  stop->callback([&g, &rc, all] {
    auto r = call_or_report(g, "daemon.stop", Json{{"all", *all}}, rc);
    if (!r) return;
    if (!g.json) std::printf("moatd stopping\n");
  });
}

}  // namespace moat::cli
