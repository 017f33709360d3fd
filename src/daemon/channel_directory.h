#pragma once
// Every messaging channel moatd runs: those declared in moat.toml ([channels.NAME]) and those added at
// run time (`moat channel add`), kept in the store's channel_configs table as the text of their
// [channels.NAME] table. One parser checks both (config/config.h parse_config), at add and at every
// start, so a run-time channel is exactly what the same lines in moat.toml would be. Declared channels
// follow the file and cannot be removed through the API (the error says to edit moat.toml); moat.toml
// wins over a run-time channel of the same name (logged at start).
//
// Why a store table and not an edit of moat.toml: the file is the owner's (comments, layout, and
// possibly managed by configuration management); moatd writing into it would fight both. Agents
// follow the same rule (daemon/agent_directory.h).
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/json.h"
#include "config/config.h"
#include "store/database.h"

namespace moat {

class ChannelDirectory {
 public:
  enum class Origin { Declared, Added };

  // Loads the run-time channels; one that no longer parses (moatd upgraded and a key changed) is an
  // error naming it and saying how to remove it.
  static Result<std::unique_ptr<ChannelDirectory>> open(Database& db, const Config& config);

  // What moatd runs: moat.toml's channels plus the run-time ones it does not shadow.
  ChannelsConfig effective() const;
  std::optional<Origin> origin(std::string_view name) const;

  // Checks `fields` (TOML keys of [channels.NAME] to string values, e.g. {"token_secret": "tg-bot"}) as
  // that table and stores it: the channel's configuration alone. InvalidInput naming the key for a
  // bad one; Conflict when NAME exists (declared or added).
  Result<ChannelsConfig> add(std::string_view name, const Json& fields, std::string_view actor);
  // NotFound when unknown; Conflict when declared in moat.toml.
  Status remove(std::string_view name);

  // The [channels.NAME] table text for `fields` (exposed for tests).
  static Result<std::string> table_text(std::string_view name, const Json& fields);

 private:
  ChannelDirectory(Database& db, ChannelsConfig declared) : db_(db), declared_(std::move(declared)) {}
  Database& db_;
  const ChannelsConfig declared_;
  mutable std::mutex mu_;
  std::map<std::string, std::string, std::less<>> added_;  // name -> table text
};

// The names of the channels a ChannelsConfig holds ("telegram", ...), and one of them copied over.
std::vector<std::string> channel_names(const ChannelsConfig& c);
void copy_channel(const ChannelsConfig& from, std::string_view name, ChannelsConfig& to);

}  // namespace moat
