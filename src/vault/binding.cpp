#include "vault/binding.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "base/ids.h"
#include "base/text.h"

namespace moat::vault {

namespace {

constexpr size_t kMaxValueBytes = 16384;

bool is_tchar(unsigned char c) {  // RFC 9110 token characters
  return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

// Headers that frame or route the request: a credential must not be able to rewrite them.
constexpr std::array<std::string_view, 10> kReservedHeaders = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive",
    "te",   "trailer",        "upgrade",           "proxy-connection", "proxy-authorization"};

// Variables moat sets itself inside every sandbox, and ones that change how programs load.
bool reserved_env(std::string_view name) {
  std::string l = ascii_lower(name);
  static constexpr std::array<std::string_view, 9> kReserved = {
      "http_proxy", "https_proxy", "no_proxy", "all_proxy", "ssl_cert_file",
      "node_extra_ca_certs", "requests_ca_bundle", "path", "home"};
  return std::find(kReserved.begin(), kReserved.end(), l) != kReserved.end() || l.starts_with("ld_");
}

Status validate_env_name(std::string_view env) {
  if (env.empty()) return {};
  bool ok = env.size() <= 128 && (std::isalpha(static_cast<unsigned char>(env[0])) || env[0] == '_') &&
            std::all_of(env.begin(), env.end(), [](unsigned char c) { return std::isalnum(c) || c == '_'; });
  if (!ok)
    return fail(ErrorKind::InvalidInput,
                "invalid --env '{}': an environment variable name is letters, digits and '_', not starting with a "
                "digit (e.g. ANTHROPIC_API_KEY)",
                env);
  if (reserved_env(env))
    return fail(ErrorKind::InvalidInput, "invalid --env '{}': moat sets that variable itself; choose another name", env);
  return {};
}

}  // namespace

Status validate_secret_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 64 &&
            (std::isalnum(static_cast<unsigned char>(name[0])) || name[0] == '_') &&
            std::all_of(name.begin(), name.end(), [](unsigned char c) {
              return std::isalnum(c) || c == '_' || c == '-' || c == '.';
            });
  if (!ok)
    return fail(ErrorKind::InvalidInput,
                "invalid secret name '{}': use 1-64 letters, digits, '_', '-' or '.', starting with a letter, digit "
                "or '_' (e.g. ANTHROPIC_API_KEY)",
                name.size() > 80 ? std::string(name.substr(0, 80)) + "..." : std::string(name));
  return {};
}

Status validate_secret_value(std::string_view value) {
  if (value.empty()) return fail(ErrorKind::InvalidInput, "the secret value is empty; give the value on stdin");
  if (value.size() > kMaxValueBytes)
    return fail(ErrorKind::InvalidInput, "the secret value is {} bytes; the limit is {} (it travels in an HTTP header)",
                value.size(), kMaxValueBytes);
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f)
      return fail(ErrorKind::InvalidInput,
                  "the secret value contains a line break or another control character, which cannot travel in an "
                  "HTTP header; give the value on one line");
  }
  if (value.front() == ' ' || value.back() == ' ')
    return fail(ErrorKind::InvalidInput,
                "the secret value starts or ends with a space, which HTTP would drop; give the value without it");
  return {};
}

Result<HeaderTemplate> parse_header_template(std::string_view header) {
  auto bad = [&](std::string_view why) {
    return fail(ErrorKind::InvalidInput, "invalid --header '{}': {}; write it like 'x-api-key: {{}}' or "
                "'Authorization: Bearer {{}}'", header, why);
  };
  auto colon = header.find(':');
  if (colon == std::string_view::npos) return bad("no ':' between the header name and its value");
  auto name = trim_space(header.substr(0, colon));
  auto value = trim_space(header.substr(colon + 1));
  if (name.empty()) return bad("the header name is empty");
  if (!std::all_of(name.begin(), name.end(), [](unsigned char c) { return is_tchar(c); }))
    return bad("the header name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)");
  std::string lname = ascii_lower(name);
  if (std::find(kReservedHeaders.begin(), kReservedHeaders.end(), lname) != kReservedHeaders.end() ||
      lname.starts_with("proxy-"))
    return bad("that header frames or routes the request and cannot carry a credential");
  for (unsigned char c : value) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return bad("the value template contains a control character");
  }
  auto at = value.find("{}");
  if (at == std::string_view::npos || value.find("{}", at + 2) != std::string_view::npos)
    return bad("the value template must contain '{}' exactly once (where the secret goes)");
  return HeaderTemplate{std::string(name), std::string(value.substr(0, at)), std::string(value.substr(at + 2))};
}

std::string_view secret_use_name(SecretUse use) { return use == SecretUse::Channel ? "channel" : "egress"; }

Result<SecretBinding> normalize_binding(SecretBinding b) {
  SecretBinding out;
  if (b.use == SecretUse::Channel) {
    // moatd's own: nothing that would let the gateway put it into a sandbox's request.
    bool only_default_agents = b.agents.empty() || b.agents == std::vector<std::string>{"*"};
    if (!b.hosts.empty() || !b.env.empty() || !only_default_agents)
      return fail(ErrorKind::InvalidInput,
                  "a channel secret (--channel) is used by moatd alone to reach its platform and is never injected "
                  "into a sandbox's traffic, so it takes no --host, --agent or --env; drop them");
    out.use = SecretUse::Channel;
    out.agents.clear();
    out.header.clear();
    return out;
  }
  out.agents.clear();
  for (auto& a : b.agents) {
    if (a == "*") {
      out.agents = {"*"};
      break;
    }
    if (auto st = validate_name("agent", a); !st)
      return fail(ErrorKind::InvalidInput, "{}; or '*' for every agent", st.error().message);
    out.agents.push_back(a);
  }
  if (out.agents.empty()) out.agents = {"*"};
  std::sort(out.agents.begin(), out.agents.end());
  out.agents.erase(std::unique(out.agents.begin(), out.agents.end()), out.agents.end());

  if (b.hosts.empty())
    return fail(ErrorKind::InvalidInput,
                "a secret needs at least one --host it may be sent to (e.g. --host api.anthropic.com)");
  for (auto& h : b.hosts) {
    auto p = parse_host_pattern(h);
    if (!p) return std::unexpected(p.error());
    out.hosts.push_back(p->text());
  }
  std::sort(out.hosts.begin(), out.hosts.end());
  out.hosts.erase(std::unique(out.hosts.begin(), out.hosts.end()), out.hosts.end());

  auto t = parse_header_template(b.header);
  if (!t) return std::unexpected(t.error());
  out.header = fmt::format("{}: {}{{}}{}", t->name, t->prefix, t->suffix);

  if (auto st = validate_env_name(b.env); !st) return std::unexpected(st.error());
  out.env = std::move(b.env);
  return out;
}

std::string placeholder_for(std::string_view name) { return fmt::format("moat-placeholder-{}", name); }

Json binding_to_json(const SecretBinding& b) {
  // An egress binding is written as it always was (no "use"), so rows sealed before channel secrets
  // existed still match what they sealed.
  if (b.use == SecretUse::Channel) return Json{{"use", "channel"}, {"agents", Json::array()}, {"hosts", Json::array()}};
  return Json{{"agents", b.agents}, {"hosts", b.hosts}, {"header", b.header}, {"env", b.env}};
}

Result<SecretBinding> binding_from_json(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::InvalidInput, "a secret binding must be a JSON object");
  SecretBinding b;
  auto strings = [&](const char* key, std::vector<std::string>& out) -> Status {
    if (!j.contains(key) || j[key].is_null()) return {};
    if (!j[key].is_array()) return fail(ErrorKind::InvalidInput, "'{}' must be a list of strings", key);
    out.clear();
    for (auto& v : j[key]) {
      if (!v.is_string()) return fail(ErrorKind::InvalidInput, "'{}' must be a list of strings", key);
      out.push_back(v.get<std::string>());
    }
    return {};
  };
  auto string = [&](const char* key, std::string& out) -> Status {
    if (!j.contains(key) || j[key].is_null()) return {};
    if (!j[key].is_string()) return fail(ErrorKind::InvalidInput, "'{}' must be a string", key);
    out = j[key].get<std::string>();
    return {};
  };
  std::string use = "egress";
  if (auto st = string("use", use); !st) return std::unexpected(st.error());
  if (use == "channel") b.use = SecretUse::Channel;
  else if (use != "egress")
    return fail(ErrorKind::InvalidInput, "'use' must be \"egress\" (injected by the gateway) or \"channel\" (moatd's own)");
  if (auto st = strings("agents", b.agents); !st) return std::unexpected(st.error());
  if (auto st = strings("hosts", b.hosts); !st) return std::unexpected(st.error());
  if (auto st = string("header", b.header); !st) return std::unexpected(st.error());
  if (auto st = string("env", b.env); !st) return std::unexpected(st.error());
  return b;
}

}  // namespace moat::vault
