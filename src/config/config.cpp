#include "config/config.h"

#include <cstdlib>
#include <cctype>
#include <functional>
#include <map>
#include <sstream>

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include "base/fs.h"
#include "config/limits.h"
#include "config/toml_text.h"
#include "net/address.h"
#include "net/url.h"
#include "config/units.h"

namespace moat {
namespace {

using Setter = std::function<Status(Config&, const toml::node&)>;

struct Key {
  std::string_view table, name;
  Setter set;
};

std::string where(std::string_view origin, const toml::node& n) {
  return fmt::format("{}:{}", origin, n.source().begin.line);
}

template <class F>
Setter as_string(F apply) {
  return [apply](Config& c, const toml::node& n) -> Status {
    auto v = n.value<std::string>();
    if (!v) return fail(ErrorKind::InvalidInput, "expected a string");
    return apply(c, *v);
  };
}

// [sandbox] disk, memory, pids, cpus and the io_ limits: a number (sizes also as text such as "2GiB"), checked against
// the one table of limits (config/limits.h). The caller's error names the file, line and key.
Result<double> limit_value(const toml::node& n, Limit which) {
  const auto& r = limit_range(which);
  double v = 0;
  if (auto i = n.value_exact<int64_t>()) {
    v = static_cast<double>(*i);
  } else if (auto d = n.value_exact<double>(); d && !r.whole) {
    v = *d;
  } else if (auto s = n.value_exact<std::string>(); s && r.bytes) {
    auto b = parse_size(*s);
    if (!b) return std::unexpected(b.error());
    v = static_cast<double>(*b);
  } else {
    return fail(ErrorKind::InvalidInput, "expected {}; allowed {}",
                r.bytes ? "a size such as \"2GiB\"" : r.whole ? "an integer" : "a number such as 1 or 0.5",
                limit_range_text(which));
  }
  if (auto st = check_limit(which, v, ""); !st) return std::unexpected(st.error());
  return v;
}

template <class T>
Setter limit_key(Limit which, T SandboxDefaults::*field) {
  return [which, field](Config& c, const toml::node& n) -> Status {
    auto v = limit_value(n, which);
    if (!v) return std::unexpected(v.error());
    c.sandbox.*field = static_cast<T>(*v);  // checked: in range, whole where T is an integer
    return {};
  };
}

// [sandbox] io_read_bps, io_write_bps, io_read_iops, io_write_iops: as limit_key, into the I/O throttle.
Setter io_key(Limit which, uint64_t IoThrottle<uint64_t>::*field) {
  return [which, field](Config& c, const toml::node& n) -> Status {
    auto v = limit_value(n, which);
    if (!v) return std::unexpected(v.error());
    c.sandbox.io.*field = static_cast<uint64_t>(*v);  // checked: whole and in range
    return {};
  };
}

Setter duration_key(std::chrono::milliseconds DaemonConfig::*field) {
  return as_string([field](Config& c, const std::string& s) -> Status {
    auto v = parse_duration(s);
    if (!v) return std::unexpected(v.error());
    c.daemon.*field = *v;
    return {};
  });
}

Result<std::vector<std::string>> string_list(const toml::node& n) {
  auto* arr = n.as_array();
  if (!arr) return fail(ErrorKind::InvalidInput, "expected an array of strings such as [\"api.example.com:443\"]");
  std::vector<std::string> out;
  for (auto& item : *arr) {
    auto v = item.value<std::string>();
    if (!v) return fail(ErrorKind::InvalidInput, "expected an array of strings such as [\"api.example.com:443\"]");
    out.push_back(*v);
  }
  return out;
}

Result<uint64_t> positive_count(const toml::node& n) {
  auto v = n.value<int64_t>();
  if (!v || *v <= 0) return fail(ErrorKind::InvalidInput, "expected a positive integer");
  return static_cast<uint64_t>(*v);
}

Result<uint64_t> size_value(const toml::node& n) {
  if (auto i = n.value<int64_t>()) {
    if (*i <= 0) return fail(ErrorKind::InvalidInput, "must be positive");
    return static_cast<uint64_t>(*i);
  }
  auto s = n.value<std::string>();
  if (!s) return fail(ErrorKind::InvalidInput, "expected a size such as \"2GiB\"");
  return parse_size(*s);
}

Status check_preset(std::string_view s) {
  if (s != "locked" && s != "balanced" && s != "open")
    return fail(ErrorKind::InvalidInput, "must be one of locked, balanced, open");
  return {};
}

const std::vector<Key>& schema() {
  static const std::vector<Key> keys = {
      {"daemon", "socket", as_string([](Config& c, const std::string& s) -> Status {
         if (s.empty() || s[0] != '/') return fail(ErrorKind::InvalidInput, "must be an absolute path");
         c.daemon.socket = s;
         return {};
       })},
      {"daemon", "idle_timeout", duration_key(&DaemonConfig::idle_timeout)},
      {"daemon", "stop_grace", duration_key(&DaemonConfig::stop_grace)},
      {"daemon", "log_level", as_string([](Config& c, const std::string& s) -> Status {
         if (s != "debug" && s != "info" && s != "warn" && s != "error")
           return fail(ErrorKind::InvalidInput, "must be one of debug, info, warn, error");
         c.daemon.log_level = s;
         return {};
       })},
      {"sandbox", "image", as_string([](Config& c, const std::string& s) -> Status {
         c.sandbox.image = s;
         return {};
       })},
      {"sandbox", "runtime", as_string([](Config& c, const std::string& s) -> Status {
         if (s != "runc" && s != "crun" && s != "runsc")
           return fail(ErrorKind::InvalidInput, "must be one of runc, crun, runsc");
         c.sandbox.runtime = s;
         return {};
       })},
      {"sandbox", "disk", limit_key(Limit::DiskBytes, &SandboxDefaults::disk_bytes)},
      {"sandbox", "memory", limit_key(Limit::MemoryBytes, &SandboxDefaults::memory_bytes)},
      {"sandbox", "pids", limit_key(Limit::Pids, &SandboxDefaults::pids)},
      {"sandbox", "cpus", limit_key(Limit::Cpus, &SandboxDefaults::cpus)},
      {"sandbox", "io_read_bps", io_key(Limit::IoReadBps, &IoThrottle<uint64_t>::read_bps)},
      {"sandbox", "io_write_bps", io_key(Limit::IoWriteBps, &IoThrottle<uint64_t>::write_bps)},
      {"sandbox", "io_read_iops", io_key(Limit::IoReadIops, &IoThrottle<uint64_t>::read_iops)},
      {"sandbox", "io_write_iops", io_key(Limit::IoWriteIops, &IoThrottle<uint64_t>::write_iops)},
      {"egress", "preset", as_string([](Config& c, const std::string& s) -> Status {
         if (auto st = check_preset(s); !st) return st;
         c.egress.preset = s;
         return {};
       })},
      {"egress", "allow", [](Config& c, const toml::node& n) -> Status {
         auto v = string_list(n);
         if (!v) return std::unexpected(v.error());
         c.egress.allow = *v;
         return {};
       }},
      {"egress", "deny", [](Config& c, const toml::node& n) -> Status {
         auto v = string_list(n);
         if (!v) return std::unexpected(v.error());
         c.egress.deny = *v;
         return {};
       }},
      {"egress", "max_connections", [](Config& c, const toml::node& n) -> Status {
         auto v = positive_count(n);
         if (!v) return std::unexpected(v.error());
         c.egress.max_connections = *v;
         return {};
       }},
      {"egress", "max_bytes_per_day", [](Config& c, const toml::node& n) -> Status {
         auto v = size_value(n);
         if (!v) return std::unexpected(v.error());
         c.egress.max_bytes_per_day = *v;
         return {};
       }},
      {"egress", "upstream_ca_file", as_string([](Config& c, const std::string& s) -> Status {
         if (s.empty() || s[0] != '/') return fail(ErrorKind::InvalidInput, "must be an absolute path");
         c.egress.upstream_ca_file = s;
         return {};
       })},
      {"egress", "connect_timeout", as_string([](Config& c, const std::string& s) -> Status {
         auto v = parse_duration(s);
         if (!v) return std::unexpected(v.error());
         if (v->count() <= 0) return fail(ErrorKind::InvalidInput, "must be longer than 0");
         c.egress.connect_timeout = *v;
         return {};
       })},
      {"router", "max_concurrent_turns", [](Config& c, const toml::node& n) -> Status {
         auto v = positive_count(n);
         if (!v) return std::unexpected(v.error());
         c.router.max_concurrent_turns = *v;
         return {};
       }},
      {"router", "max_attempts", [](Config& c, const toml::node& n) -> Status {
         auto v = positive_count(n);
         if (!v) return std::unexpected(v.error());
         c.router.max_attempts = *v;
         return {};
       }},
      {"router", "retry_base", as_string([](Config& c, const std::string& s) -> Status {
         auto v = parse_duration(s);
         if (!v) return std::unexpected(v.error());
         c.router.retry_base = *v;
         return {};
       })},
      {"attachments", "max_file", as_string([](Config& c, const std::string& s) -> Status {
         auto v = parse_size(s);
         if (!v) return std::unexpected(v.error());
         if (*v < 1024 || *v > (2ull << 30)) return fail(ErrorKind::InvalidInput, "must be from 1KiB to 2GiB");
         c.attachments.max_file = *v;
         return {};
       })},
      {"attachments", "max_total", as_string([](Config& c, const std::string& s) -> Status {
         auto v = parse_size(s);
         if (!v) return std::unexpected(v.error());
         if (*v < (1ull << 20)) return fail(ErrorKind::InvalidInput, "must be at least 1MiB");
         c.attachments.max_total = *v;
         return {};
       })},
      {"attachments", "keep", as_string([](Config& c, const std::string& s) -> Status {
         auto v = parse_duration(s);
         if (!v) return std::unexpected(v.error());
         if (v->count() < 60'000) return fail(ErrorKind::InvalidInput, "must be at least 1m (a retried turn copies the files again)");
         c.attachments.keep = *v;
         return {};
       })},
      {"audit", "checkpoint_records", [](Config& c, const toml::node& n) -> Status {
         auto v = positive_count(n);
         if (!v) return std::unexpected(v.error());
         c.audit.checkpoint_records = *v;
         return {};
       }},
      {"audit", "checkpoint_interval", as_string([](Config& c, const std::string& s) -> Status {
         auto v = parse_duration(s);
         if (!v) return std::unexpected(v.error());
         if (v->count() <= 0) return fail(ErrorKind::InvalidInput, "must be longer than 0");
         c.audit.checkpoint_interval = *v;
         return {};
       })},
      {"audit", "sink", as_string([](Config& c, const std::string& s) -> Status {
         auto sink = parse_audit_sink(s);
         if (!sink) return std::unexpected(sink.error());
         sink->ca_file = std::move(c.audit.sink.ca_file);  // sink_ca_file may come first
         c.audit.sink = std::move(*sink);
         return {};
       })},
      {"audit", "sink_ca_file", as_string([](Config& c, const std::string& s) -> Status {
         if (s.empty() || s[0] != '/')
           return fail(ErrorKind::InvalidInput, "must be an absolute path of a PEM file of the CAs that vouch for the "
                                                "syslog server's certificate");
         c.audit.sink.ca_file = s;
         return {};
       })},
      {"web", "listen", as_string([](Config& c, const std::string& s) -> Status {
         if (s != "off")
           if (auto a = net::parse_listen_address(s); !a)
             return fail(ErrorKind::InvalidInput, "expected \"ADDRESS:PORT\" such as \"127.0.0.1:7700\", or \"off\" ({})",
                         a.error().message);
         c.web.listen = s;
         return {};
       })},
      {"web", "webhook_callbacks", as_string([](Config& c, const std::string& s) -> Status {
         if (s == "loopback")
           c.web.webhook_callbacks = WebhookCallbacks::Loopback;
         else if (s == "public")
           c.web.webhook_callbacks = WebhookCallbacks::Public;
         else
           return fail(ErrorKind::InvalidInput, "expected \"loopback\" (programs on this host) or \"public\" (public addresses)");
         return {};
       })},
  };
  return keys;
}

std::string known_keys(std::string_view table) {
  std::string out;
  for (auto& k : schema()) {
    if (k.table != table) continue;
    if (!out.empty()) out += ", ";
    out += k.name;
  }
  return out;
}

// [egress.routes.NAME]: upstream (required), env.
Status parse_route(Config& c, std::string_view origin, std::string_view name, const toml::node& node) {
  auto* tbl = node.as_table();
  if (!tbl) return fail(ErrorKind::InvalidInput, "{}: egress.routes.{} must be a table", where(origin, node), name);
  bool name_ok = !name.empty() && name.size() <= 64;
  for (char ch : name) name_ok = name_ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_');
  if (!name_ok)
    return fail(ErrorKind::InvalidInput, "{}: route name '{}' must be 1-64 letters, digits, '-' or '_' (it becomes a URL path)",
                where(origin, node), name);
  EgressRoute route;
  for (auto& [key, v] : *tbl) {
    auto str = v.value<std::string>();
    if (key.str() == "upstream") {
      if (!str || !str->starts_with("https://") || str->size() <= 8)
        return fail(ErrorKind::InvalidInput, "{}: egress.routes.{}.upstream: expected an https:// URL such as \"https://api.anthropic.com\"",
                    where(origin, v), name);
      route.upstream = *str;
    } else if (key.str() == "env") {
      if (!str) return fail(ErrorKind::InvalidInput, "{}: egress.routes.{}.env: expected a string", where(origin, v), name);
      route.env = *str;
    } else {
      return fail(ErrorKind::InvalidInput, "{}: unknown key 'egress.routes.{}.{}'; known keys: upstream, env (see docs/config.md)",
                  where(origin, v), name, key.str());
    }
  }
  if (route.upstream.empty())
    return fail(ErrorKind::InvalidInput, "{}: egress.routes.{} needs an upstream = \"https://...\"", where(origin, node), name);
  c.egress.routes[std::string(name)] = route;
  return {};
}

Json toml_to_json(const toml::node& n) {
  if (auto* t = n.as_table()) {
    Json j = Json::object();
    for (auto& [k, v] : *t) j[std::string(k.str())] = toml_to_json(v);
    return j;
  }
  if (auto* a = n.as_array()) {
    Json j = Json::array();
    for (auto& v : *a) j.push_back(toml_to_json(v));
    return j;
  }
  if (auto v = n.value_exact<std::string>()) return *v;
  if (auto v = n.value_exact<int64_t>()) return *v;
  if (auto v = n.value_exact<double>()) return *v;
  if (auto v = n.value_exact<bool>()) return *v;
  std::ostringstream out;  // dates and times, as TOML writes them
  if (auto* d = n.as_date()) out << *d;
  else if (auto* t = n.as_time()) out << *t;
  else if (auto* dt = n.as_date_time()) out << *dt;
  return out.str();
}

// [agents.NAME]: the agent's spec fields (kept as JSON, validated by the agent component), and
// [agents.NAME.egress]: preset, allow, deny, max_connections, max_bytes_per_day.
Status parse_agent(Config& c, std::string_view origin, std::string_view name, const toml::node& node) {
  auto* tbl = node.as_table();
  if (!tbl) return fail(ErrorKind::InvalidInput, "{}: agents.{} must be a table", where(origin, node), name);
  AgentDeclaration decl{Json::object(), static_cast<int>(node.source().begin.line)};
  bool has_egress = false;
  AgentEgressConfig agent;
  for (auto& [section, sv] : *tbl) {
    if (section.str() != "egress") {
      decl.fields[std::string(section.str())] = toml_to_json(sv);
      continue;
    }
    has_egress = true;
    auto* egress = sv.as_table();
    if (!egress) return fail(ErrorKind::InvalidInput, "{}: agents.{}.egress must be a table", where(origin, sv), name);
    for (auto& [key, v] : *egress) {
      std::string_view k = key.str();
      Status st;
      if (k == "preset") {
        auto s = v.value<std::string>();
        if (!s) st = fail(ErrorKind::InvalidInput, "expected a string");
        else if (st = check_preset(*s); st) agent.preset = *s;
      } else if (k == "allow" || k == "deny") {
        auto l = string_list(v);
        if (!l) st = std::unexpected(l.error());
        else (k == "allow" ? agent.allow : agent.deny) = *l;
      } else if (k == "max_connections") {
        auto n = positive_count(v);
        if (!n) st = std::unexpected(n.error());
        else agent.max_connections = *n;
      } else if (k == "max_bytes_per_day") {
        auto n = size_value(v);
        if (!n) st = std::unexpected(n.error());
        else agent.max_bytes_per_day = *n;
      } else {
        return fail(ErrorKind::InvalidInput,
                    "{}: unknown key 'agents.{}.egress.{}'; known keys: preset, allow, deny, max_connections, max_bytes_per_day (see docs/config.md)",
                    where(origin, v), name, k);
      }
      if (!st) return fail(ErrorKind::InvalidInput, "{}: agents.{}.egress.{}: {}", where(origin, v), name, k, st.error().message);
    }
  }
  if (has_egress) c.egress.agents[std::string(name)] = agent;
  c.agents[std::string(name)] = std::move(decl);
  return {};
}

// channels.telegram.webhook_url: the path moatd serves for it, or why Telegram could not call it.
Result<std::string> telegram_webhook_path(std::string_view text) {
  constexpr std::string_view example = "such as \"https://bot.example.com/telegram/webhook\"";
  auto u = net::parse_url(text);
  if (!u) return fail(ErrorKind::InvalidInput, "expected the public https:// URL Telegram calls, {} ({})", example, u.error().message);
  if (u->scheme == net::Scheme::Https) {
    // The only ports the Bot API delivers webhooks to (core.telegram.org/bots/api#setwebhook).
    if (u->port != 443 && u->port != 80 && u->port != 88 && u->port != 8443)
      return fail(ErrorKind::InvalidInput, "Telegram calls webhooks only on ports 443, 80, 88 and 8443, not {}; "
                                           "let the reverse proxy listen on one of them", u->port);
  } else if (!net::is_loopback_host(u->host)) {
    return fail(ErrorKind::InvalidInput, "Telegram calls webhooks only over https://, {}; http:// is for a Bot API "
                                         "server on this machine (a loopback host)", example);
  }
  std::string path = u->path.substr(0, u->path.find('?'));
  // Under /telegram: clear of the web chat's and the webhook channel's paths on the same listener.
  if (path != "/telegram" && !path.starts_with("/telegram/"))
    return fail(ErrorKind::InvalidInput, "the path must start with /telegram ({}): moatd serves that same path on its "
                                         "[web] listener, next to the web chat, so the proxy forwards it unchanged", example);
  if (u->path.find('?') != std::string::npos)
    return fail(ErrorKind::InvalidInput, "expected no query string, {}", example);
  return path;
}

// [channels.discord]: token_secret (required), api_base.
Status parse_discord(Config& c, std::string_view origin, const toml::node& cnode) {
  auto* t = cnode.as_table();
  if (!t) return fail(ErrorKind::InvalidInput, "{}: channels.discord must be a table", where(origin, cnode));
  DiscordConfig dc;
  dc.line = static_cast<int>(cnode.source().begin.line);
  for (auto& [key, v] : *t) {
    std::string_view k = key.str();
    auto str = v.value<std::string>();
    auto bad = [&](std::string_view why) {
      return fail(ErrorKind::InvalidInput, "{}: channels.discord.{}: {}", where(origin, v), k, why);
    };
    if (k == "token_secret") {
      if (!str || str->empty())
        return bad("expected the name of a vault secret holding the bot token, such as \"discord-bot\" (store it "
                   "with 'moat secret set discord-bot --channel'; never the token itself)");
      // A Discord bot token is three base64url parts joined by dots; a secret's name has no dots.
      if (str->find('.') != std::string::npos && str->size() > 50)
        return bad("this looks like a bot token, not a secret's name; never put the token in moat.toml: store it "
                   "with 'moat secret set discord-bot --channel' and write token_secret = \"discord-bot\"");
      dc.token_secret = *str;
    } else if (k == "api_base") {
      auto u = str ? net::parse_url(*str) : Result<net::Url>(fail(ErrorKind::InvalidInput, "expected a string"));
      if (!u)
        return bad(fmt::format("expected an http(s):// URL such as \"https://discord.com/api/v10\" ({})", u.error().message));
      dc.api_base = *str;
      while (dc.api_base.ends_with('/')) dc.api_base.pop_back();
    } else {
      return fail(ErrorKind::InvalidInput,
                  "{}: unknown key 'channels.discord.{}'; known keys: token_secret, api_base (the gateway URL comes "
                  "from the API, the intents are the channel's own; see docs/config.md)",
                  where(origin, v), k);
    }
  }
  if (dc.token_secret.empty())
    return fail(ErrorKind::InvalidInput,
                "{}: [channels.discord] needs token_secret = \"NAME\", the vault secret holding the bot token "
                "(moat secret set NAME --channel)",
                where(origin, cnode));
  c.channels.discord = dc;
  return {};
}

// [channels.telegram]: token_secret (required), mode, webhook_url, api_base, poll_timeout; [channels.discord]: above.
Status parse_channels(Config& c, std::string_view origin, const toml::node& node) {
  auto* tbl = node.as_table();
  if (!tbl) return fail(ErrorKind::InvalidInput, "{}: 'channels' must be a table of [channels.NAME]", where(origin, node));
  for (auto& [name, cnode] : *tbl) {
    if (name.str() == "discord") {
      if (auto st = parse_discord(c, origin, cnode); !st) return st;
      continue;
    }
    if (name.str() != "telegram")
      return fail(ErrorKind::InvalidInput,
                  "{}: unknown channel [channels.{}]; known: [channels.telegram], [channels.discord] (see docs/config.md)",
                  where(origin, cnode), name.str());
    auto* t = cnode.as_table();
    if (!t) return fail(ErrorKind::InvalidInput, "{}: channels.telegram must be a table", where(origin, cnode));
    TelegramConfig tg;
    tg.line = static_cast<int>(cnode.source().begin.line);
    for (auto& [key, v] : *t) {
      std::string_view k = key.str();
      auto str = v.value<std::string>();
      auto bad = [&](std::string_view why) {
        return fail(ErrorKind::InvalidInput, "{}: channels.telegram.{}: {}", where(origin, v), k, why);
      };
      if (k == "token_secret") {
        if (!str || str->empty())
          return bad("expected the name of a vault secret holding the bot token, such as \"telegram-bot\" (store it "
                     "with 'moat secret set telegram-bot --channel'; never the token itself)");
        if (str->find(':') != std::string::npos)
          return bad("this looks like a bot token, not a secret's name; never put the token in moat.toml: store it "
                     "with 'moat secret set telegram-bot --channel' and write token_secret = \"telegram-bot\"");
        tg.token_secret = *str;
      } else if (k == "mode") {
        if (str && *str == "polling") tg.mode = TelegramMode::Polling;
        else if (str && *str == "webhook") tg.mode = TelegramMode::Webhook;
        else return bad("expected \"polling\" (moatd asks Telegram with getUpdates) or \"webhook\" (Telegram calls "
                        "webhook_url)");
      } else if (k == "webhook_url") {
        auto path = str ? telegram_webhook_path(*str) : Result<std::string>(fail(ErrorKind::InvalidInput, "expected a string"));
        if (!path) return bad(path.error().message);
        tg.webhook_url = *str;
        tg.webhook_path = *path;
      } else if (k == "api_base") {
        auto u = str ? net::parse_url(*str) : Result<net::Url>(fail(ErrorKind::InvalidInput, "expected a string"));
        if (!u) return bad(fmt::format("expected an http(s):// URL such as \"https://api.telegram.org\" ({})", u.error().message));
        tg.api_base = *str;
        while (tg.api_base.ends_with('/')) tg.api_base.pop_back();
      } else if (k == "poll_timeout") {
        auto d = str ? parse_duration(*str) : Result<std::chrono::milliseconds>(fail(ErrorKind::InvalidInput, "x"));
        if (!d || *d < std::chrono::seconds(1) || *d > std::chrono::seconds(50))
          return bad("expected a duration from \"1s\" to \"50s\" (Telegram holds a long poll at most 50 s)");
        tg.poll_timeout = *d;
      } else {
        return fail(ErrorKind::InvalidInput,
                    "{}: unknown key 'channels.telegram.{}'; known keys: token_secret, mode, webhook_url, api_base, "
                    "poll_timeout "
                    "(see docs/config.md)",
                    where(origin, v), k);
      }
    }
    if (tg.token_secret.empty())
      return fail(ErrorKind::InvalidInput,
                  "{}: [channels.telegram] needs token_secret = \"NAME\", the vault secret holding the bot token "
                  "(moat secret set NAME --channel)",
                  where(origin, cnode));
    if (tg.mode == TelegramMode::Webhook && tg.webhook_url.empty())
      return fail(ErrorKind::InvalidInput,
                  "{}: [channels.telegram] mode = \"webhook\" needs webhook_url = \"https://HOST/telegram/...\", the "
                  "public HTTPS URL of a reverse proxy that forwards that path to moatd's [web] listen address",
                  where(origin, cnode));
    if (tg.mode == TelegramMode::Polling && !tg.webhook_url.empty())
      return fail(ErrorKind::InvalidInput,
                  "{}: channels.telegram.webhook_url is set but mode is \"polling\"; write mode = \"webhook\" to "
                  "use it, or remove webhook_url",
                  where(origin, cnode));
    c.channels.telegram = tg;
  }
  return {};
}

}  // namespace

Result<Config> parse_config(std::string_view text, std::string_view origin, Config cfg) {
  auto parsed = parse_toml_text(text, origin);
  if (!parsed) return std::unexpected(parsed.error());
  toml::table root = std::move(*parsed);
  for (auto& [table_key, table_node] : root) {
    std::string_view table = table_key.str();
    bool known_table = table == "daemon" || table == "sandbox" || table == "egress" || table == "agents" ||
                       table == "router" || table == "web" || table == "audit" || table == "channels" ||
                       table == "attachments";
    if (!known_table) {
      return fail(ErrorKind::InvalidInput,
                  "{}: unknown {} '{}'; known tables: [daemon], [sandbox], [egress], [router], [attachments], [web], [audit], [channels.NAME], [agents.NAME] (see docs/config.md)",
                  where(origin, table_node), table_node.is_table() ? "table" : "key", table);
    }
    auto* tbl = table_node.as_table();
    if (!tbl) return fail(ErrorKind::InvalidInput, "{}: '{}' must be a table", where(origin, table_node), table);
    if (table == "channels") {
      if (auto st = parse_channels(cfg, origin, table_node); !st) return std::unexpected(st.error());
      continue;
    }
    if (table == "agents") {
      for (auto& [name, node] : *tbl) {
        if (auto st = parse_agent(cfg, origin, name.str(), node); !st) return std::unexpected(st.error());
      }
      continue;
    }
    for (auto& [key, node] : *tbl) {
      if (table == "egress" && key.str() == "routes") {
        auto* routes = node.as_table();
        if (!routes) return fail(ErrorKind::InvalidInput, "{}: egress.routes must be a table of [egress.routes.NAME]", where(origin, node));
        for (auto& [rname, rnode] : *routes) {
          if (auto st = parse_route(cfg, origin, rname.str(), rnode); !st) return std::unexpected(st.error());
        }
        continue;
      }
      const Key* match = nullptr;
      for (auto& k : schema()) {
        if (k.table == table && k.name == key.str()) match = &k;
      }
      if (!match) {
        return fail(ErrorKind::InvalidInput, "{}: unknown key '{}.{}'; known keys in [{}]: {} (see docs/config.md)",
                    where(origin, node), table, key.str(), table, known_keys(table));
      }
      if (auto st = match->set(cfg, node); !st) {
        return fail(ErrorKind::InvalidInput, "{}: {}.{}: {}", where(origin, node), table, key.str(), st.error().message);
      }
    }
  }
  if (!cfg.audit.sink.ca_file.empty() && cfg.audit.sink.kind != AuditSink::Kind::SyslogTls)
    return fail(ErrorKind::InvalidInput,
                "{}: audit.sink_ca_file is only for a TLS syslog sink: set sink = \"syslog+tls://HOST:PORT\", or remove "
                "sink_ca_file",
                origin);
  return cfg;
}

std::filesystem::path resolve_state_dir(std::string_view flag_value) {
  if (!flag_value.empty()) return std::filesystem::path(flag_value);
  if (const char* env = std::getenv("MOAT_STATE_DIR"); env && *env) return env;
  return "/var/lib/moat";
}

Result<Config> load_config(const std::filesystem::path& state_dir, const std::filesystem::path& explicit_path) {
  Config base;
  base.state_dir = state_dir;
  auto path = explicit_path.empty() ? base.config_path() : explicit_path;
  auto text = read_file(path);
  if (!text) {
    if (text.error().kind == ErrorKind::NotFound && explicit_path.empty()) return base;
    return std::unexpected(text.error());
  }
  return parse_config(*text, path.string(), base);
}

}  // namespace moat
