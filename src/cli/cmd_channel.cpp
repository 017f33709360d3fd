// moat channel ls|status [NAME]: what each messaging channel is doing (connected or not, the last
// error in words, lag, messages in and out today); moat channel add|rm: channels added at run time,
// next to those configured in moat.toml ([channels.NAME]); see docs/channels.md.
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

  auto* add = c->add_subcommand("add", "add a messaging channel now (kept across restarts; moat.toml's stay the file's)");
  struct AddArgs {
    std::string name, token_secret, mode, api_base, poll_timeout, webhook_url, webhook_secret;
    std::vector<std::string> set;
  };
  auto aa = std::make_shared<AddArgs>();
  add->add_option("name", aa->name, "the channel: telegram or discord")->required();
  add->add_option("--token-secret", aa->token_secret,
                  "vault secret holding the bot token (store it first: moat secret set NAME --channel)");
  add->add_option("--mode", aa->mode, "telegram: polling (default) or webhook");
  add->add_option("--api-base", aa->api_base, "the platform's API base URL (for a Bot API server of your own, or tests)");
  add->add_option("--poll-timeout", aa->poll_timeout, "telegram: the long-poll timeout, e.g. 25s");
  add->add_option("--webhook-url", aa->webhook_url, "telegram webhook mode: the public HTTPS URL Telegram calls");
  add->add_option("--webhook-secret", aa->webhook_secret, "telegram webhook mode: vault secret of the webhook's secret token");
  add->add_option("--set", aa->set, "any other key of [channels.NAME] (docs/config.md): --set KEY=VALUE");
  add->add_flag("--json", g.json, "print machine-readable JSON");
  add->callback([&g, &rc, aa] {
    Json settings = Json::object();
    auto put = [&](const char* key, const std::string& v) {
      if (!v.empty()) settings[key] = v;
    };
    put("token_secret", aa->token_secret);
    put("mode", aa->mode);
    put("api_base", aa->api_base);
    put("poll_timeout", aa->poll_timeout);
    put("webhook_url", aa->webhook_url);
    put("webhook_secret", aa->webhook_secret);
    for (const auto& kv : aa->set) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "moat: --set wants KEY=VALUE (e.g. --set poll_timeout=10s), not '%s'\n", kv.c_str());
        rc = 2;
        return;
      }
      settings[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    auto r = call_or_report(g, "channel.add", Json{{"name", aa->name}, {"settings", settings}}, rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    std::printf("added channel %s; it is %s now (moat channel status %s)\n", aa->name.c_str(), state_text(*r).c_str(),
                aa->name.c_str());
  });
  add->footer(
      "Examples:\n"
      "  moat secret set tg-bot --channel            # paste the token from BotFather\n"
      "  moat channel add telegram --token-secret tg-bot\n"
      "  moat channel add discord --token-secret discord-bot\n");

  auto* rm = c->add_subcommand("rm", "remove a channel added with 'moat channel add' (moat.toml's: edit the file)");
  auto rm_name = std::make_shared<std::string>();
  rm->add_option("name", *rm_name, "the channel")->required();
  rm->add_flag("--json", g.json, "print machine-readable JSON");
  rm->callback([&g, &rc, rm_name] {
    auto r = call_or_report(g, "channel.rm", Json{{"name", *rm_name}}, rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    std::printf("removed channel %s (replies not yet delivered to it wait until it is added again)\n", rm_name->c_str());
  });

  c->footer(
      "Channels are set up in moat.toml: [channels.telegram] token_secret = \"NAME\", with the bot token\n"
      "stored by 'moat secret set NAME --channel' (see docs/channels.md). States: serving (built in),\n"
      "starting, connected, retrying, conflict (another poller or a webhook holds the bot), failed (the\n"
      "owner must act: the last error says how), stopped.\n");
}

}  // namespace moat::cli
