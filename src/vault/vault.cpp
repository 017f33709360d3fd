#include "vault/vault.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include <fmt/ranges.h>

#include "base/log.h"
#include "store/clock.h"

namespace moat::vault {

namespace {

std::string_view column_blob(const Statement& st, int col) {
  const void* p = sqlite3_column_blob(st.handle(), col);
  int n = sqlite3_column_bytes(st.handle(), col);
  if (!p || n <= 0) return {};
  return {static_cast<const char*>(p), static_cast<size_t>(n)};
}

Status bind_blob(Database& db, Statement& st, int idx, std::string_view bytes) {
  int rc = sqlite3_bind_blob64(st.handle(), idx, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) return std::unexpected(sqlite_error(db.handle(), rc, "storing a sealed secret"));
  return {};
}

// [1 byte name length][name][4 bytes LE binding length][binding JSON][value]
SecretValue plaintext_of(std::string_view name, std::string_view binding_json, std::string_view value) {
  SecretValue p(1 + name.size() + 4 + binding_json.size() + value.size());
  char* out = p.data();
  *out++ = static_cast<char>(name.size());
  std::memcpy(out, name.data(), name.size());
  out += name.size();
  auto len = static_cast<uint32_t>(binding_json.size());
  for (int i = 0; i < 4; ++i) *out++ = static_cast<char>((len >> (8 * i)) & 0xff);
  std::memcpy(out, binding_json.data(), binding_json.size());
  out += binding_json.size();
  if (!value.empty()) std::memcpy(out, value.data(), value.size());
  return p;
}

Error unopenable(std::string_view name, const std::filesystem::path& key_file) {
  return Error{ErrorKind::Conflict,
               fmt::format("secret '{}' cannot be decrypted: the vault key {} is not the key it was sealed with, or "
                           "its row in the store was altered; set it again with 'moat secret set {}'",
                           name, key_file.string(), name)};
}

}  // namespace

Json secret_info_to_json(const SecretInfo& s) {
  return Json{{"name", s.name},
              {"binding", binding_to_json(s.binding)},
              {"placeholder", s.placeholder},
              {"created_at_ms", s.created_ms},
              {"updated_at_ms", s.updated_ms},
              {"last_used_at_ms", s.last_used_ms}};
}

SecretValue BoundSecret::header_value() const {
  std::string_view v = value.view();
  SecretValue out(header.prefix.size() + v.size() + header.suffix.size());
  char* p = out.data();
  std::memcpy(p, header.prefix.data(), header.prefix.size());
  if (!v.empty()) std::memcpy(p + header.prefix.size(), v.data(), v.size());
  std::memcpy(p + header.prefix.size() + v.size(), header.suffix.data(), header.suffix.size());
  return out;
}

bool Vault::Entry::serves(std::string_view agent) const {
  if (binding.use != SecretUse::Egress) return false;  // a channel secret serves no agent, ever
  return std::any_of(binding.agents.begin(), binding.agents.end(), [&](const std::string& a) {
    return a == "*" || a == agent;
  });
}

bool Vault::Entry::matches(std::string_view agent, std::string_view host, uint16_t port) const {
  return serves(agent) &&
         std::any_of(patterns.begin(), patterns.end(), [&](const HostPattern& p) { return p.matches(host, port); });
}

Result<std::unique_ptr<Vault>> Vault::open(Database& db, const std::filesystem::path& key_file) {
  if (auto st = init_sodium(); !st) return std::unexpected(st.error());
  auto key = load_key_file(key_file);
  if (!key && key.error().kind == ErrorKind::NotFound) {
    auto sealed = db.query_int64("SELECT count(*) FROM secrets");
    if (!sealed) return wrap(sealed.error(), "opening the vault");
    if (*sealed > 0)
      return fail(ErrorKind::Conflict,
                  "the vault key {} is missing, but the store holds {} secret(s) sealed with it; restore the key file "
                  "(32 bytes, mode 0600) from a backup, or give those secrets up with "
                  "sqlite3 {} 'DELETE FROM secrets' and set them again",
                  key_file.string(), *sealed, db.path().string());
    key = create_key_file(key_file);
    if (!key && key.error().kind == ErrorKind::Conflict) key = load_key_file(key_file);  // made by someone else first
    if (key) log::info("created the vault key {}", key_file.string());
  }
  if (!key) return std::unexpected(key.error());
  std::unique_ptr<Vault> v(new Vault(db, std::move(*key), key_file));  // private constructor
  if (auto st = v->load(); !st) return std::unexpected(st.error());
  if (auto st = v->migrate_bindings(); !st) return std::unexpected(st.error());
  return v;
}

// A host without a port once matched every port; it now means 443. Each binding stored the old way is
// re-sealed with the ports it now means, once, and said (migrations(): moatd logs and audits them).
Status Vault::migrate_bindings() {
  for (auto& [name, old_hosts] : stale_bindings_) {
    auto current = snapshot();
    auto it = current->find(name);
    if (it == current->end()) continue;
    auto value = open_entry(name, *it->second);
    if (!value) continue;  // unopenable: reported by load(), left as it is
    auto binding = it->second->binding;
    auto set_again = set(name, value->view(), binding);
    if (!set_again) return wrap(set_again.error(), fmt::format("migrating secret '{}''s binding", name));
    migrations_.push_back(fmt::format("secret '{}': host(s) {} without a port matched every port; they now mean {} "
                                      "(bind other ports explicitly with 'moat secret set {} --host HOST:PORT')",
                                      name, fmt::join(old_hosts, ", "), fmt::join(binding.hosts, ", "), name));
  }
  stale_bindings_.clear();
  return {};
}

Status Vault::load() {
  auto l = db_.lock();
  auto st = db_.prepare(
      "SELECT name, nonce, ciphertext, binding_json, created_at_ms, updated_at_ms, last_used_at_ms FROM secrets");
  if (!st) return wrap(st.error(), "loading the vault");
  Entries loaded;
  size_t unopenable_count = 0;
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "loading the vault");
    if (!*row) break;
    std::string name(st->column_text(0));
    auto e = std::make_shared<Entry>();
    e->sealed.nonce = std::string(column_blob(*st, 1));
    e->sealed.ciphertext = std::string(column_blob(*st, 2));
    e->binding_json = std::string(st->column_text(3));
    e->created_ms = st->column_int64(4);
    e->updated_ms = st->column_int64(5);
    e->last_used_ms = st->column_int64(6);
    // A row that does not parse is left in the store (secret rm still removes it) but serves nothing.
    Json j = Json::parse(e->binding_json, nullptr, false);
    auto b = j.is_discarded() ? Result<SecretBinding>(std::unexpected(Error{ErrorKind::InvalidInput, "not JSON"}))
                              : binding_from_json(j);
    std::vector<std::string> stored_hosts = b ? b->hosts : std::vector<std::string>{};
    if (b) b = normalize_binding(std::move(*b));
    if (b) {
      auto sorted = stored_hosts;
      std::sort(sorted.begin(), sorted.end());
      if (sorted != b->hosts) stale_bindings_.emplace_back(name, std::move(stored_hosts));
    }
    if (!b) {
      log::warn("vault: secret '{}' has an unreadable binding in the store and is ignored ({}); set it again", name,
                b.error().message);
      continue;
    }
    e->binding = std::move(*b);
    for (auto& h : e->binding.hosts) e->patterns.push_back(*parse_host_pattern(h));
    if (e->binding.use == SecretUse::Egress) e->header = *parse_header_template(e->binding.header);
    // Find a wrong key at start rather than at the first request that needs it.
    if (!open_entry(name, *e)) ++unopenable_count;
    loaded.emplace(std::move(name), std::move(e));
  }
  l.unlock();  // lock order elsewhere is vault, then store
  if (unopenable_count > 0)
    log::warn("vault: {} of {} secret(s) cannot be decrypted with the key {} (wrong key file, or altered rows); "
              "requests that need them will be refused",
              unopenable_count, loaded.size(), key_file_.string());
  publish(std::make_shared<const Entries>(std::move(loaded)));
  return {};
}

std::shared_ptr<const Vault::Entries> Vault::snapshot() const {
  std::lock_guard g(snapshot_mu_);
  return entries_;
}

void Vault::publish(std::shared_ptr<const Entries> next) {
  std::lock_guard g(snapshot_mu_);
  entries_ = std::move(next);
  revision_.fetch_add(1, std::memory_order_release);
}

Result<SecretValue> Vault::open_entry(const std::string& name, const Entry& e) const {
  auto plain = open_sealed(key_, e.sealed.nonce, e.sealed.ciphertext);
  if (!plain) return std::unexpected(unopenable(name, key_file_));
  std::string_view p = plain->view();
  auto altered = [&](std::string_view what) {
    return fail(ErrorKind::Conflict,
                "secret '{}' was altered in the store: its {} no longer matches what was sealed; set it again with "
                "'moat secret set {}'",
                name, what, name);
  };
  if (p.empty() || p.size() < 1 + static_cast<unsigned char>(p[0]) + 4u) return altered("layout");
  size_t name_len = static_cast<unsigned char>(p[0]);
  if (p.substr(1, name_len) != name) return altered("name");
  p.remove_prefix(1 + name_len);
  uint32_t json_len = 0;
  for (int i = 0; i < 4; ++i) json_len |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  p.remove_prefix(4);
  if (p.size() < json_len || p.substr(0, json_len) != e.binding_json) return altered("binding");
  return SecretValue(p.substr(json_len));
}

SecretInfo Vault::info_of(const std::string& name, const Entry& e) const {
  return SecretInfo{name, e.binding, placeholder_for(name), e.created_ms, e.updated_ms, e.last_used_ms.load()};
}

Result<Vault::SetResult> Vault::set(std::string_view name, std::string_view value, SecretBinding binding) {
  if (auto st = validate_secret_name(name); !st) return std::unexpected(st.error());
  if (auto st = validate_secret_value(value); !st) return std::unexpected(st.error());
  auto b = normalize_binding(std::move(binding));
  if (!b) return std::unexpected(b.error());
  auto e = std::make_shared<Entry>();
  e->binding = std::move(*b);
  for (auto& h : e->binding.hosts) e->patterns.push_back(*parse_host_pattern(h));
  if (e->binding.use == SecretUse::Egress) e->header = *parse_header_template(e->binding.header);
  e->binding_json = binding_to_json(e->binding).dump();
  std::string key_name(name);

  std::lock_guard w(write_mu_);
  auto current = snapshot();
  if (!e->binding.env.empty()) {
    for (auto& [other_name, other] : *current) {
      if (other_name == key_name || other->binding.env != e->binding.env) continue;
      bool overlap = other->serves("*") || e->serves("*") ||
                     std::any_of(e->binding.agents.begin(), e->binding.agents.end(),
                                 [&](const std::string& a) { return other->serves(a); });
      if (overlap)
        return fail(ErrorKind::Conflict,
                    "--env {} already holds the placeholder of secret '{}' for some of the same agents; choose another "
                    "--env, or remove '{}' first",
                    e->binding.env, other_name, other_name);
    }
  }
  auto existing = current->find(key_name);
  bool replaced = existing != current->end();
  int64_t now = clock::now_ms();
  e->created_ms = replaced ? existing->second->created_ms : now;
  e->updated_ms = now;
  if (replaced) {
    e->last_used_ms = existing->second->last_used_ms.load();
    e->use_dirty = existing->second->use_dirty.load();
  }

  {
    SecretValue plain = plaintext_of(key_name, e->binding_json, value);
    e->sealed = seal(key_, plain.view());
  }
  {
    auto l = db_.lock();
    auto st = db_.prepare(
        "INSERT INTO secrets (name, nonce, ciphertext, binding_json, created_at_ms, updated_at_ms, last_used_at_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0) ON CONFLICT(name) DO UPDATE SET nonce = excluded.nonce, "
        "ciphertext = excluded.ciphertext, binding_json = excluded.binding_json, updated_at_ms = excluded.updated_at_ms");
    if (!st) return wrap(st.error(), fmt::format("storing secret '{}'", key_name));
    st->bind(1, std::string_view(key_name)).bind(4, std::string_view(e->binding_json)).bind(5, e->created_ms).bind(6, now);
    if (auto s = bind_blob(db_, *st, 2, e->sealed.nonce); !s) return std::unexpected(s.error());
    if (auto s = bind_blob(db_, *st, 3, e->sealed.ciphertext); !s) return std::unexpected(s.error());
    if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("storing secret '{}'", key_name));
  }
  SetResult out;
  out.replaced = replaced;
  out.info = info_of(key_name, *e);
  auto next = std::make_shared<Entries>(*current);
  (*next)[key_name] = std::move(e);
  publish(std::move(next));
  return out;
}

Status Vault::remove(std::string_view name) {
  std::lock_guard w(write_mu_);
  auto drop = [&] {
    auto current = snapshot();
    if (current->find(name) == current->end()) return;
    auto next = std::make_shared<Entries>(*current);
    next->erase(next->find(name));
    publish(std::move(next));
  };
  {
    auto l = db_.lock();
    auto st = db_.prepare("DELETE FROM secrets WHERE name = ?1");
    if (!st) return wrap(st.error(), fmt::format("removing secret '{}'", name));
    st->bind(1, name);
    if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("removing secret '{}'", name));
    if (db_.changes() == 0) {
      drop();
      return fail(ErrorKind::NotFound, "no secret named '{}'; see 'moat secret ls'", name);
    }
  }
  drop();
  return {};
}

Result<std::vector<SecretInfo>> Vault::list() const {
  auto entries = snapshot();
  std::vector<SecretInfo> out;
  out.reserve(entries->size());
  for (auto& [name, e] : *entries) out.push_back(info_of(name, *e));
  return out;
}

Result<SecretInfo> Vault::get(std::string_view name) const {
  auto entries = snapshot();
  auto it = entries->find(name);
  if (it == entries->end()) return fail(ErrorKind::NotFound, "no secret named '{}'; see 'moat secret ls'", name);
  return info_of(it->first, *it->second);
}

Result<std::vector<BoundSecret>> Vault::bound_for(std::string_view agent, std::string_view host, uint16_t port) const {
  auto entries = snapshot();
  std::vector<BoundSecret> out;
  for (auto& [name, e] : *entries) {
    if (!e->matches(agent, host, port)) continue;
    auto value = open_entry(name, *e);
    if (!value) return std::unexpected(value.error());
    out.push_back(BoundSecret{name, placeholder_for(name), e->header, std::move(*value)});
  }
  return out;
}

bool Vault::has_binding_for_host(std::string_view agent, std::string_view host, uint16_t port) const {
  auto entries = snapshot();
  return std::any_of(entries->begin(), entries->end(),
                     [&](const auto& kv) { return kv.second->matches(agent, host, port); });
}

std::vector<std::pair<std::string, std::string>> Vault::placeholders_for(std::string_view agent) const {
  auto entries = snapshot();
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [name, e] : *entries) {
    if (!e->binding.env.empty() && e->serves(agent)) out.emplace_back(e->binding.env, placeholder_for(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<SecretValue> Vault::channel_secret(std::string_view name) const {
  auto entries = snapshot();
  auto it = entries->find(name);
  if (it == entries->end())
    return fail(ErrorKind::NotFound, "no secret named '{}'; store the token with 'moat secret set {} --channel' (value on stdin)",
                name, name);
  if (it->second->binding.use != SecretUse::Channel)
    return fail(ErrorKind::InvalidInput,
                "secret '{}' is an egress secret (the gateway may inject it into sandboxes' requests), not a channel "
                "token; store the token with 'moat secret set {} --channel' so that only moatd ever uses it",
                name, name);
  return open_entry(it->first, *it->second);
}

void Vault::mark_used(std::string_view name) {
  auto entries = snapshot();
  auto it = entries->find(name);
  if (it == entries->end()) return;
  it->second->last_used_ms = clock::now_ms();
  it->second->use_dirty = true;
}

Result<size_t> Vault::flush_usage() {
  std::vector<std::pair<std::string, int64_t>> changed;
  auto entries = snapshot();
  for (auto& [name, e] : *entries) {
    if (e->use_dirty.exchange(false)) changed.emplace_back(name, e->last_used_ms.load());
  }
  if (changed.empty()) return size_t{0};
  auto write = [&]() -> Status {
    auto tx = Transaction::begin(db_);
    if (!tx) return std::unexpected(tx.error());
    auto st = db_.prepare("UPDATE secrets SET last_used_at_ms = max(last_used_at_ms, ?1) WHERE name = ?2");
    if (!st) return std::unexpected(st.error());
    for (auto& [name, ms] : changed) {
      st->reset();
      st->bind(1, ms).bind(2, std::string_view(name));
      if (auto r = st->step(); !r) return std::unexpected(r.error());
    }
    return tx->commit();
  };
  if (auto s = write(); !s) {
    // Keep them dirty so the next flush tries again.
    for (auto& [name, ms] : changed) {
      if (auto it = entries->find(name); it != entries->end()) it->second->use_dirty = true;
    }
    return wrap(s.error(), "recording when secrets were last used");
  }
  return changed.size();
}

}  // namespace moat::vault
