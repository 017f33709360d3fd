#include "daemon/secret_verbs.h"

#include "base/log.h"

namespace moat {

namespace {

// Who asked: api::Server puts the peer's credentials (SO_PEERCRED) in "actor"; a client cannot name another.
std::string actor_of(const Json& args) { return args.value("actor", std::string("cli")); }

Result<std::string> name_arg(const Json& a, std::string_view verb) {
  if (!a.contains("name") || !a["name"].is_string())
    return fail(ErrorKind::InvalidInput, "{} needs the secret's 'name' as a string", verb);
  return a["name"].get<std::string>();
}

// The audit record is part of the change; if it cannot be written the change stands (it is already
// durable) but moatd's log says so.
void audit_or_warn(AuditLog& audit, std::string kind, const Json& args, const std::string& name, Json data) {
  if (auto r = audit.append(kind, actor_of(args), name, std::move(data)); !r)
    log::warn("audit: could not record {} of secret '{}': {}", kind, name, r.error().message);
}

}  // namespace

void register_secret_verbs(api::Server& server, vault::Vault& vault, AuditLog& audit) {
  server.handle("secret.set", [&vault, &audit](const Json& a, api::Session&) -> Result<Json> {
    auto name = name_arg(a, "secret.set");
    if (!name) return std::unexpected(name.error());
    if (!a.contains("value") || !a["value"].is_string())
      return fail(ErrorKind::InvalidInput, "secret.set needs the secret's 'value' as a string");
    auto binding = vault::binding_from_json(a);  // agents, hosts, header, env; absent = defaults
    if (!binding) return std::unexpected(binding.error());
    auto r = vault.set(*name, a["value"].get_ref<const std::string&>(), std::move(*binding));
    if (!r) return std::unexpected(r.error());
    audit_or_warn(audit, "secret.set", a, *name,
                  Json{{"name", *name}, {"binding", vault::binding_to_json(r->info.binding)}, {"replaced", r->replaced}});
    return vault::secret_info_to_json(r->info);
  });

  server.handle("secret.ls", [&vault](const Json&, api::Session&) -> Result<Json> {
    auto all = vault.list();
    if (!all) return std::unexpected(all.error());
    Json out = Json::array();
    for (auto& s : *all) out.push_back(vault::secret_info_to_json(s));
    return out;
  });

  server.handle("secret.rm", [&vault, &audit](const Json& a, api::Session&) -> Result<Json> {
    auto name = name_arg(a, "secret.rm");
    if (!name) return std::unexpected(name.error());
    auto info = vault.get(*name);  // for the audit record; a row the vault could not load has none
    if (auto st = vault.remove(*name); !st) return std::unexpected(st.error());
    Json data{{"name", *name}};
    if (info) data["binding"] = vault::binding_to_json(info->binding);
    audit_or_warn(audit, "secret.rm", a, *name, std::move(data));
    return Json{{"name", *name}, {"removed", true}};
  });
}

}  // namespace moat
