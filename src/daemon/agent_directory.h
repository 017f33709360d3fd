#pragma once
// Every agent moatd knows: those declared in moat.toml ([agents.NAME]) and those created at run time
// (`moat agent create`), kept in the store's `agents` table. Declared agents follow the file: at
// each start their rows are rewritten from it, and a declared agent gone from the file is removed.
// They cannot be edited or removed through the API (the error says to edit moat.toml).
//
// Reads take a snapshot (a shared_ptr to an immutable map) so the router's turn threads never wait
// for an edit; edits are serialised, written to the store first and published after.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/agent_spec.h"
#include "config/config.h"
#include "router/route_rule.h"
#include "store/database.h"

namespace moat {

class AgentDirectory {
 public:
  using Snapshot = std::shared_ptr<const std::map<std::string, agent::AgentSpec, std::less<>>>;
  using ChangeFn = std::function<void(const Snapshot&)>;

  // Loads the table and applies the declarations of moat.toml; an invalid declaration is an error
  // naming the file, line and key.
  static Result<std::unique_ptr<AgentDirectory>> open(Database& db, const Config& config);

  Snapshot snapshot() const;
  Result<agent::AgentSpec> get(std::string_view name) const;
  bool exists(std::string_view name) const;

  // Conflict when the name is taken; the spec is validated.
  Result<agent::AgentSpec> create(agent::AgentSpec spec);
  // Applies `changes` (spec fields as JSON) to a run-time agent.
  Result<agent::AgentSpec> edit(std::string_view name, const Json& changes);
  Status remove(std::string_view name);

  // Called (outside the lock) after every change, with the new snapshot.
  void on_change(ChangeFn fn) { on_change_ = std::move(fn); }

 private:
  AgentDirectory(Database& db) : db_(db) {}
  Status store(const agent::AgentSpec& spec);
  void publish(std::map<std::string, agent::AgentSpec, std::less<>> agents);

  Database& db_;
  std::mutex edit_mu_;
  mutable std::mutex snap_mu_;
  Snapshot snap_;
  ChangeFn on_change_;
};

// The router rule of an agent. Every agent answers in its own chats of the built-in channels
// ("terminal:<agent>/...", "web:<agent>/...", "webhook:<agent>/...") where the local owner talks to
// it, plus the chats its spec lists. Terminal and web senders are always allowed (the owner).
router::RouteRule route_rule_for(const agent::AgentSpec& spec);

}  // namespace moat
