#include "config/config.h"

#include <cstdlib>
#include <functional>
#include <map>

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include "base/fs.h"
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

Setter size_key(uint64_t SandboxDefaults::*field) {
  return [field](Config& c, const toml::node& n) -> Status {
    if (auto i = n.value<int64_t>()) {
      if (*i <= 0) return fail(ErrorKind::InvalidInput, "must be positive");
      c.sandbox.*field = static_cast<uint64_t>(*i);
      return {};
    }
    auto s = n.value<std::string>();
    if (!s) return fail(ErrorKind::InvalidInput, "expected a size such as \"2GiB\"");
    auto v = parse_size(*s);
    if (!v) return std::unexpected(v.error());
    c.sandbox.*field = *v;
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
      {"sandbox", "disk", size_key(&SandboxDefaults::disk_bytes)},
      {"sandbox", "memory", size_key(&SandboxDefaults::memory_bytes)},
      {"sandbox", "pids", [](Config& c, const toml::node& n) -> Status {
         auto v = n.value<int64_t>();
         if (!v || *v < 16) return fail(ErrorKind::InvalidInput, "expected an integer of at least 16");
         c.sandbox.pids = static_cast<uint64_t>(*v);
         return {};
       }},
      {"sandbox", "cpus", [](Config& c, const toml::node& n) -> Status {
         auto v = n.value<double>();
         if (!v || *v <= 0 || *v > 1024) return fail(ErrorKind::InvalidInput, "expected a number of CPUs such as 1 or 0.5");
         c.sandbox.cpus = *v;
         return {};
       }},
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

}  // namespace

Result<Config> parse_config(std::string_view text, std::string_view origin, Config cfg) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return fail(ErrorKind::InvalidInput, "{}:{}: {}", origin, e.source().begin.line, e.description());
  }
  for (auto& [table_key, table_node] : root) {
    std::string_view table = table_key.str();
    bool known_table = table == "daemon" || table == "sandbox";
    if (!known_table) {
      return fail(ErrorKind::InvalidInput, "{}: unknown {} '{}'; known tables: [daemon], [sandbox] (see docs/config.md)",
                  where(origin, table_node), table_node.is_table() ? "table" : "key", table);
    }
    auto* tbl = table_node.as_table();
    if (!tbl) return fail(ErrorKind::InvalidInput, "{}: '{}' must be a table", where(origin, table_node), table);
    for (auto& [key, node] : *tbl) {
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
