#include "agent/agent_spec.h"

#include <algorithm>

#include <regex>

#include "config/limits.h"

namespace moat::agent {

namespace {

// Globs are matched with fnmatch-like '*' only; what we refuse is what could never match anything
// sensible or would smuggle control characters into logs and error messages.
Status check_glob(std::string_view field, const std::string& g) {
  if (g.empty()) return fail(ErrorKind::InvalidInput, "{}: an entry is empty; remove it or write '*'", field);
  for (unsigned char c : g)
    if (c < 0x20 || c == 0x7f)
      return fail(ErrorKind::InvalidInput, "{}: '{}' contains a control character", field, g);
  return {};
}

// A JSON value that must be a string when present; a missing key keeps `out` as it is.
Status take_string(const Json& j, const char* key, std::string& out, std::string_view field) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_string()) return fail(ErrorKind::InvalidInput, "{}: must be a string", field);
  out = j[key].get<std::string>();
  return {};
}

Status take_strings(const Json& j, const char* key, std::vector<std::string>& out, std::string_view field) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_array()) return fail(ErrorKind::InvalidInput, "{}: must be a list of strings", field);
  out.clear();
  for (const auto& v : j[key]) {
    if (!v.is_string()) return fail(ErrorKind::InvalidInput, "{}: must be a list of strings", field);
    out.push_back(v.get<std::string>());
  }
  return {};
}

template <class T>
Status take_positive(const Json& j, const char* key, T& out, std::string_view field) {
  if (!j.contains(key) || j[key].is_null()) return {};
  const auto& v = j[key];
  if (!v.is_number() || (v.is_number_integer() && v.get<int64_t>() <= 0) || v.get<double>() <= 0)
    return fail(ErrorKind::InvalidInput, "{}: must be a positive number", field);
  out = v.get<T>();
  return {};
}

Status validate(const AgentSpec& a) {
  if (auto st = validate_agent_name(a.name); !st) return st;
  if (a.source != "config" && a.source != "api")
    return fail(ErrorKind::InvalidInput, "source: '{}' is not one of config, api", a.source);
  const auto& p = a.model.provider;
  if (p != "anthropic" && p != "openai" && p != "none")
    return fail(ErrorKind::InvalidInput, "model.provider: '{}' is not one of anthropic, openai, none", p);
  if (p != "none" && a.command.empty() && a.model.model.empty())
    return fail(ErrorKind::InvalidInput, "model.model: required for provider '{}' (e.g. claude-sonnet-4-5)", p);
  if (!a.model.base_url.empty() && !a.model.base_url.starts_with("http://") && !a.model.base_url.starts_with("https://"))
    return fail(ErrorKind::InvalidInput, "model.base_url: '{}' must start with http:// or https://", a.model.base_url);
  if (a.model.max_tokens <= 0) return fail(ErrorKind::InvalidInput, "model.max_tokens: must be positive");
  if (a.limits.max_model_calls <= 0) return fail(ErrorKind::InvalidInput, "limits.max_model_calls: must be positive");
  if (a.limits.max_wall.count() <= 0) return fail(ErrorKind::InvalidInput, "limits.max_wall_ms: must be positive");
  if (a.limits.max_tokens == 0) return fail(ErrorKind::InvalidInput, "limits.max_tokens: must be positive");
  if (a.limits.context_budget_tokens < 1000)
    return fail(ErrorKind::InvalidInput, "limits.context_budget_tokens: must be at least 1000");
  for (size_t i = 0; i < a.command.size(); ++i)
    if (a.command[i].find('\0') != std::string::npos)
      return fail(ErrorKind::InvalidInput, "command[{}]: contains a NUL byte", i);
  if (!a.command.empty() && a.command[0].empty())
    return fail(ErrorKind::InvalidInput, "command: the program (first element) is empty");
  for (const auto& c : a.channels)
    if (auto st = check_glob("channels", c); !st) return st;
  for (const auto& c : a.chats)
    if (auto st = check_glob("chats", c); !st) return st;
  for (const auto& c : a.senders)
    if (auto st = check_glob("senders", c); !st) return st;
  for (const auto& c : a.may_message) {
    if (auto st = check_glob("may_message", c); !st) return st;
    if (c.find(':') == std::string::npos)
      return fail(ErrorKind::InvalidInput, "may_message: '{}' must be 'channel:chat' (globs allowed, e.g. telegram:*)", c);
  }
  if (a.unknown_senders != "drop" && a.unknown_senders != "hold")
    return fail(ErrorKind::InvalidInput, "unknown_senders: '{}' is not one of drop, hold", a.unknown_senders);
  if (!a.trigger.empty()) {
    // std::regex reports a bad pattern by throwing; that stays inside this function.
    try {
      std::regex re(a.trigger, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return fail(ErrorKind::InvalidInput, "trigger: '{}' is not a valid regular expression ({})", a.trigger, e.what());
    }
  }
  return {};
}

}  // namespace

Status validate_agent_name(std::string_view name) {
  auto bad = [&] {
    return fail(ErrorKind::InvalidInput,
                "agent name '{}' is not valid: use 1-63 of a-z, 0-9 and '-', starting with a letter or digit", name);
  };
  if (name.empty() || name.size() > 63) return bad();
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
    if (!ok) return bad();
  }
  return {};
}

Json agent_spec_to_json(const AgentSpec& a) {
  Json j{{"name", a.name},
         {"source", a.source},
         {"image", a.image},
         {"runtime", a.runtime},
         {"model",
          {{"provider", a.model.provider},
           {"model", a.model.model},
           {"base_url", a.model.base_url},
           {"max_tokens", a.model.max_tokens}}},
         {"system_prompt", a.system_prompt},
         {"limits",
          {{"max_model_calls", a.limits.max_model_calls},
           {"max_wall_ms", a.limits.max_wall.count()},
           {"max_tokens", a.limits.max_tokens},
           {"context_budget_tokens", a.limits.context_budget_tokens}}},
         {"command", a.command},
         {"channels", a.channels},
         {"chats", a.chats},
         {"senders", a.senders},
         {"trigger", a.trigger},
         {"unknown_senders", a.unknown_senders},
         {"may_message", a.may_message},
         {"created_ms", a.created_ms},
         {"updated_ms", a.updated_ms}};
  if (a.disk_bytes) j["disk_bytes"] = *a.disk_bytes;
  if (a.memory_bytes) j["memory_bytes"] = *a.memory_bytes;
  if (a.pids) j["pids"] = *a.pids;
  if (a.cpus) j["cpus"] = *a.cpus;
  put_io_limits(j, a.io);
  return j;
}

// A misspelt key must not be silently ignored (an agent answering everyone because "sendrs" was
// skipped): every key is one of these.
static Status check_keys(const Json& j, std::string_view prefix, std::initializer_list<std::string_view> known) {
  for (auto& [k, v] : j.items()) {
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    std::string list;
    for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
    return fail(ErrorKind::InvalidInput, "unknown key '{}{}'; known keys: {}", prefix, k, list);
  }
  return {};
}

Result<AgentSpec> agent_spec_from_json(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::InvalidInput, "an agent spec must be a JSON object");
  AgentSpec a;
  if (!j.contains("name")) return fail(ErrorKind::InvalidInput, "name: required");
  if (auto st = check_keys(j, "", {"name", "source", "image", "runtime", "disk_bytes", "memory_bytes", "pids", "cpus",
                                   "io_read_bps", "io_write_bps", "io_read_iops", "io_write_iops", "model",
                                   "system_prompt", "limits", "command", "channels", "chats", "senders", "trigger",
                                   "unknown_senders", "may_message", "created_ms", "updated_ms"});
      !st)
    return std::unexpected(st.error());
  if (j.contains("model") && j["model"].is_object()) {
    if (auto st = check_keys(j["model"], "model.", {"provider", "model", "base_url", "max_tokens"}); !st)
      return std::unexpected(st.error());
  }
  if (j.contains("limits") && j["limits"].is_object()) {
    if (auto st = check_keys(j["limits"], "limits.", {"max_model_calls", "max_wall_ms", "max_tokens", "context_budget_tokens"});
        !st)
      return std::unexpected(st.error());
  }
  Status st;
  auto run = [&](Status s) {
    if (st && !s) st = s;
  };
  run(take_string(j, "name", a.name, "name"));
  run(take_string(j, "source", a.source, "source"));
  run(take_string(j, "image", a.image, "image"));
  run(take_string(j, "runtime", a.runtime, "runtime"));
  // The sandbox's limits: the same table and check as moat.toml and sandbox create (config/limits.h).
  run(read_limit(j, "disk_bytes", Limit::DiskBytes, a.disk_bytes));
  run(read_limit(j, "memory_bytes", Limit::MemoryBytes, a.memory_bytes));
  run(read_limit(j, "pids", Limit::Pids, a.pids));
  run(read_limit(j, "cpus", Limit::Cpus, a.cpus));
  run(read_io_limits(j, a.io));
  if (j.contains("model") && !j["model"].is_null()) {
    const auto& m = j["model"];
    if (!m.is_object()) return fail(ErrorKind::InvalidInput, "model: must be an object");
    run(take_string(m, "provider", a.model.provider, "model.provider"));
    run(take_string(m, "model", a.model.model, "model.model"));
    run(take_string(m, "base_url", a.model.base_url, "model.base_url"));
    run(take_positive(m, "max_tokens", a.model.max_tokens, "model.max_tokens"));
  }
  run(take_string(j, "system_prompt", a.system_prompt, "system_prompt"));
  if (j.contains("limits") && !j["limits"].is_null()) {
    const auto& l = j["limits"];
    if (!l.is_object()) return fail(ErrorKind::InvalidInput, "limits: must be an object");
    run(take_positive(l, "max_model_calls", a.limits.max_model_calls, "limits.max_model_calls"));
    int64_t wall = a.limits.max_wall.count();
    run(take_positive(l, "max_wall_ms", wall, "limits.max_wall_ms"));
    a.limits.max_wall = std::chrono::milliseconds(wall);
    run(take_positive(l, "max_tokens", a.limits.max_tokens, "limits.max_tokens"));
    run(take_positive(l, "context_budget_tokens", a.limits.context_budget_tokens, "limits.context_budget_tokens"));
  }
  run(take_strings(j, "command", a.command, "command"));
  run(take_strings(j, "channels", a.channels, "channels"));
  run(take_strings(j, "chats", a.chats, "chats"));
  run(take_strings(j, "senders", a.senders, "senders"));
  run(take_string(j, "trigger", a.trigger, "trigger"));
  run(take_string(j, "unknown_senders", a.unknown_senders, "unknown_senders"));
  run(take_strings(j, "may_message", a.may_message, "may_message"));
  if (j.contains("created_ms") && j["created_ms"].is_number_integer()) a.created_ms = j["created_ms"].get<int64_t>();
  if (j.contains("updated_ms") && j["updated_ms"].is_number_integer()) a.updated_ms = j["updated_ms"].get<int64_t>();
  if (!st) return std::unexpected(st.error());
  if (auto v = validate(a); !v) return std::unexpected(v.error());
  return a;
}

}  // namespace moat::agent
