// moat channel ls|status [NAME]: what each messaging channel is doing (connected or not, the last
// error in words, lag, messages in and out today). Channels are configured in moat.toml
// ([channels.telegram]); see docs/channels.md.
#include <cstdio>

#include "cli/cli.h"

namespace moat::cli {
namespace {

std::string lag_text(const Json& s) {
  int64_t ms = s.value("lag_ms", int64_t{-1});
  if (ms < 0) return "-";
  if (ms < 10'000) return fmt::format("{:.1f}s", ms / 1000.0);
  return fmt::format("{}s", ms / 1000);
}

std::string state_text(const Json& s) { return s.value("state", std::string("?")); }

void print_status(const Json& s) {
  std::printf("channel %s (%s): %s%s\n", s["name"].get<std::string>().c_str(), s["kind"].get<std::string>().c_str(),
              state_text(s).c_str(), s.value("connected", false) ? "" : " (not connected)");
  if (auto id = s.value("identity", std::string()); !id.empty()) std::printf("  as:          %s\n", printable(id).c_str());
  if (int64_t since = s.value("connected_since_ms", int64_t{0}); since > 0)
    std::printf("  connected:   %s\n", format_time_ago(since).c_str());
  std::printf("  lag:         %s\n", lag_text(s).c_str());
  std::printf("  today (UTC): %s in, %s out\n", s["in_today"].dump().c_str(), s["out_today"].dump().c_str());
  if (auto e = s.value("last_error", std::string()); !e.empty())
    std::printf("  last error:  %s (%s)\n", printable(e).c_str(), format_time_ago(s.value("last_error_at_ms", int64_t{0})).c_str());
}

}  // namespace

void add_channel_commands(CLI::App& app, Globals& g, int& rc) {
  auto* c = app.add_subcommand("channel", "messaging channels: whether each is connected, its last error, traffic");
  c->require_subcommand(1);

  auto* ls = c->add_subcommand("ls", "list the channels moatd runs");
  ls->add_flag("--json", g.json, "print machine-readable JSON");
  ls->callback([&g, &rc] {
    auto r = call_or_report(g, "channel.ls", Json::object(), rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    std::vector<std::vector<std::string>> rows{{"NAME", "KIND", "STATE", "LAG", "IN TODAY", "OUT TODAY", "LAST ERROR"}};
    for (auto& s : *r)
      rows.push_back({s["name"], s["kind"], state_text(s), lag_text(s), s["in_today"].dump(), s["out_today"].dump(),
                      s.value("last_error", std::string()).empty() ? "-" : printable(s["last_error"].get<std::string>(), Lines::Escape)});
    print_table(rows);
  });

  auto* status = c->add_subcommand("status", "one channel's state in detail (all of them without NAME)");
  auto name = std::make_shared<std::string>();
  status->add_option("name", *name, "channel name (telegram, terminal, web, webhook)");
  status->add_flag("--json", g.json, "print machine-readable JSON");
  status->callback([&g, &rc, name] {
    auto r = name->empty() ? call_or_report(g, "channel.ls", Json::object(), rc)
                           : call_or_report(g, "channel.status", Json{{"name", *name}}, rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    if (r->is_array()) {
      for (auto& s : *r) print_status(s);
    } else {
      print_status(*r);
    }
  });

  c->footer(
      "Channels are set up in moat.toml: [channels.telegram] token_secret = \"NAME\", with the bot token\n"
      "stored by 'moat secret set NAME --channel' (see docs/channels.md). States: serving (built in),\n"
      "starting, connected, retrying, conflict (another poller or a webhook holds the bot), failed (the\n"
      "owner must act: the last error says how), stopped.\n");
}

}  // namespace moat::cli
