#include "daemon/agent_directory.h"

#include "store/clock.h"

namespace moat {

namespace {

using AgentMap = std::map<std::string, agent::AgentSpec, std::less<>>;

Result<AgentMap> load_rows(Database& db) {
  AgentMap out;
  auto st = db.prepare("SELECT name, source, spec_json FROM agents ORDER BY name");
  if (!st) return std::unexpected(st.error());
  for (;;) {
    auto row = st->step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    std::string name(st->column_text(0));
    auto j = Json::parse(st->column_text(2), nullptr, false);
    if (j.is_discarded()) return fail(ErrorKind::Internal, "the store's row for agent '{}' is not valid JSON", name);
    auto spec = agent::agent_spec_from_json(j);
    if (!spec) return wrap(spec.error(), fmt::format("the store's row for agent '{}'", name));
    spec->source = std::string(st->column_text(1));
    out.emplace(name, std::move(*spec));
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<AgentDirectory>> AgentDirectory::open(Database& db, const Config& config) {
  std::unique_ptr<AgentDirectory> d(new AgentDirectory(db));  // private constructor; owned at once
  auto rows = load_rows(db);
  if (!rows) return std::unexpected(rows.error());
  AgentMap agents = std::move(*rows);
  auto now = clock::now_ms();
  // One transaction for the whole file: thousands of declared agents cost one sync, not thousands.
  auto tx = Transaction::begin(db);
  if (!tx) return wrap(tx.error(), "storing the agents of moat.toml");
  for (auto& [name, decl] : config.agents) {
    Json fields = decl.fields;
    fields["name"] = name;
    auto spec = agent::agent_spec_from_json(fields);
    if (!spec)
      return fail(ErrorKind::InvalidInput, "{}:{}: [agents.{}]: {}", config.config_path().string(), decl.line, name,
                  spec.error().message);
    spec->source = "config";
    auto old = agents.find(name);
    spec->created_ms = old != agents.end() ? old->second.created_ms : now;
    spec->updated_ms = now;
    if (old != agents.end() && old->second.source == "api")
      return fail(ErrorKind::Conflict,
                  "{}:{}: [agents.{}]: an agent of that name was created with `moat agent create`; remove it "
                  "(`moat agent rm {}`) or rename one of them",
                  config.config_path().string(), decl.line, name, name);
    if (auto st = d->store(*spec); !st) return std::unexpected(st.error());
    agents[name] = std::move(*spec);
  }
  for (auto it = agents.begin(); it != agents.end();) {
    if (it->second.source == "config" && !config.agents.contains(it->first)) {
      auto del = db.prepare("DELETE FROM agents WHERE name = ?1");
      if (!del) return std::unexpected(del.error());
      if (auto r = del->bind(1, it->first).step(); !r) return std::unexpected(r.error());
      it = agents.erase(it);
    } else {
      ++it;
    }
  }
  if (auto st = tx->commit(); !st) return wrap(st.error(), "storing the agents of moat.toml");
  d->publish(std::move(agents));
  return d;
}

AgentDirectory::Snapshot AgentDirectory::snapshot() const {
  std::lock_guard l(snap_mu_);
  return snap_;
}

Result<agent::AgentSpec> AgentDirectory::get(std::string_view name) const {
  auto s = snapshot();
  auto it = s->find(name);
  if (it == s->end()) return fail(ErrorKind::NotFound, "no agent named '{}'; see 'moat agent ls'", name);
  return it->second;
}

bool AgentDirectory::exists(std::string_view name) const { return snapshot()->contains(name); }

Status AgentDirectory::store(const agent::AgentSpec& spec) {
  auto st = db_.prepare(
      "INSERT INTO agents (name, source, spec_json, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5) "
      "ON CONFLICT(name) DO UPDATE SET source = excluded.source, spec_json = excluded.spec_json, "
      "updated_ms = excluded.updated_ms");
  if (!st) return std::unexpected(st.error());
  auto r = st->bind(1, spec.name)
               .bind(2, spec.source)
               .bind(3, agent::agent_spec_to_json(spec).dump())
               .bind(4, spec.created_ms)
               .bind(5, spec.updated_ms)
               .step();
  if (!r) return wrap(r.error(), fmt::format("storing agent '{}'", spec.name));
  return {};
}

void AgentDirectory::publish(AgentMap agents) {
  auto snap = std::make_shared<const AgentMap>(std::move(agents));
  {
    std::lock_guard l(snap_mu_);
    snap_ = snap;
  }
  if (on_change_) on_change_(snap);
}

Result<agent::AgentSpec> AgentDirectory::create(agent::AgentSpec spec) {
  std::lock_guard l(edit_mu_);
  if (auto st = agent::validate_agent_name(spec.name); !st) return std::unexpected(st.error());
  auto cur = snapshot();
  if (cur->contains(spec.name))
    return fail(ErrorKind::Conflict, "an agent named '{}' already exists; see 'moat agent show {}'", spec.name, spec.name);
  auto checked = agent::agent_spec_from_json(agent::agent_spec_to_json(spec));
  if (!checked) return std::unexpected(checked.error());
  spec = std::move(*checked);
  spec.source = "api";
  spec.created_ms = spec.updated_ms = clock::now_ms();
  if (auto st = store(spec); !st) return std::unexpected(st.error());
  AgentMap next = *cur;
  next[spec.name] = spec;
  publish(std::move(next));
  return spec;
}

Result<agent::AgentSpec> AgentDirectory::edit(std::string_view name, const Json& changes) {
  std::lock_guard l(edit_mu_);
  auto cur = snapshot();
  auto it = cur->find(name);
  if (it == cur->end()) return fail(ErrorKind::NotFound, "no agent named '{}'; see 'moat agent ls'", name);
  if (it->second.source == "config")
    return fail(ErrorKind::Conflict, "agent '{}' is declared in moat.toml; change it there and restart moatd", name);
  if (changes.contains("name") && changes["name"] != std::string(name))
    return fail(ErrorKind::InvalidInput, "an agent cannot be renamed; create a new one and remove '{}'", name);
  Json j = agent::agent_spec_to_json(it->second);
  j.merge_patch(changes);
  auto spec = agent::agent_spec_from_json(j);
  if (!spec) return std::unexpected(spec.error());
  spec->source = "api";
  spec->created_ms = it->second.created_ms;
  spec->updated_ms = clock::now_ms();
  if (auto st = store(*spec); !st) return std::unexpected(st.error());
  AgentMap next = *cur;
  next[spec->name] = *spec;
  publish(std::move(next));
  return *spec;
}

Status AgentDirectory::remove(std::string_view name) {
  std::lock_guard l(edit_mu_);
  auto cur = snapshot();
  auto it = cur->find(name);
  if (it == cur->end()) return fail(ErrorKind::NotFound, "no agent named '{}'; see 'moat agent ls'", name);
  if (it->second.source == "config")
    return fail(ErrorKind::Conflict, "agent '{}' is declared in moat.toml; remove it there and restart moatd", name);
  auto del = db_.prepare("DELETE FROM agents WHERE name = ?1");
  if (!del) return std::unexpected(del.error());
  if (auto r = del->bind(1, name).step(); !r) return std::unexpected(r.error());
  AgentMap next = *cur;
  next.erase(std::string(name));
  publish(std::move(next));
  return {};
}

router::RouteRule route_rule_for(const agent::AgentSpec& spec) {
  router::RouteRule r;
  r.agent = spec.name;
  r.channels = spec.channels;
  if (!r.channels.empty()) {
    for (const char* own : {"terminal", "web", "webhook"}) r.channels.push_back(own);
  }
  r.chats = spec.chats;
  for (const char* own : {"terminal", "web", "webhook"}) r.chats.push_back(fmt::format("{}:{}/*", own, spec.name));
  r.trigger = spec.trigger;
  r.senders = spec.senders;
  // The owner's own channels (the local terminal over root's API socket, the loopback web chat) are
  // always allowed, whatever the sender list says of outsiders. Webhook senders are whoever the
  // integration says they are, so they follow the list like any other channel's.
  if (!r.senders.empty()) {
    for (const char* own : {"terminal:*", "web:*"}) r.senders.push_back(own);
  }
  r.unknown_senders = spec.unknown_senders == "hold" ? router::UnknownSenders::Hold : router::UnknownSenders::Drop;
  return r;
}

}  // namespace moat
