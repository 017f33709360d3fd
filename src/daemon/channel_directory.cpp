#include "daemon/channel_directory.h"

#include <algorithm>

#include "base/log.h"
#include "store/clock.h"

namespace moat {

namespace {

constexpr std::string_view kOrigin = "moat channel add";

Result<ChannelsConfig> parse_tables(const std::string& text) {
  auto c = parse_config(text, kOrigin);
  if (!c) return std::unexpected(c.error());
  return c->channels;
}

}  // namespace

std::vector<std::string> channel_names(const ChannelsConfig& c) {
  std::vector<std::string> out;
  if (c.telegram) out.push_back("telegram");
  if (c.discord) out.push_back("discord");
  return out;
}

void copy_channel(const ChannelsConfig& from, std::string_view name, ChannelsConfig& to) {
  if (name == "telegram") to.telegram = from.telegram;
  if (name == "discord") to.discord = from.discord;
}

Result<std::string> ChannelDirectory::table_text(std::string_view name, const Json& fields) {
  if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "'{}' is not a channel name (telegram, discord, ...)", name);
  if (!fields.is_object()) return fail(ErrorKind::InvalidInput, "a channel's settings must be an object of keys to values");
  std::string text = fmt::format("[channels.{}]\n", name);
  for (auto& [key, value] : fields.items()) {
    if (key.empty() || key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
      return fail(ErrorKind::InvalidInput, "'{}' is not a setting of a channel (use the keys of [channels.{}] in "
                  "docs/config.md, such as token_secret)", key, name);
    if (!value.is_string())
      return fail(ErrorKind::InvalidInput, "channels.{}.{}: expected a string", name, key);
    // A JSON string is a valid TOML basic string: same quotes, same escapes, UTF-8 as is.
    text += fmt::format("{} = {}\n", key, value.dump());
  }
  return text;
}

Result<std::unique_ptr<ChannelDirectory>> ChannelDirectory::open(Database& db, const Config& config) {
  std::unique_ptr<ChannelDirectory> dir(new ChannelDirectory(db, config.channels));
  auto l = db.lock();
  auto st = db.prepare("SELECT name, toml FROM channel_configs ORDER BY name");
  if (!st) return std::unexpected(st.error());
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "reading the channels added with moat channel add");
    if (!*row) break;
    std::string name(st->column_text(0)), text(st->column_text(1));
    if (auto parsed = parse_tables(text); !parsed)
      return fail(ErrorKind::InvalidInput, "channel '{}' (added with moat channel add) is no longer valid: {}; remove "
                  "it with 'moat channel rm {}' and add it again", name, parsed.error().message, name);
    auto declared = channel_names(config.channels);
    if (std::find(declared.begin(), declared.end(), name) != declared.end())
      log::warn("channels: [channels.{}] in moat.toml is used; the one added with 'moat channel add' is ignored "
                "(remove it with 'moat channel rm {}' after removing the table from moat.toml)", name, name);
    dir->added_.emplace(std::move(name), std::move(text));
  }
  return dir;
}

ChannelsConfig ChannelDirectory::effective() const {
  ChannelsConfig out = declared_;
  std::lock_guard g(mu_);
  auto declared = channel_names(declared_);
  for (auto& [name, text] : added_) {
    if (std::find(declared.begin(), declared.end(), name) != declared.end()) continue;
    if (auto parsed = parse_tables(text)) copy_channel(*parsed, name, out);
  }
  return out;
}

std::optional<ChannelDirectory::Origin> ChannelDirectory::origin(std::string_view name) const {
  auto declared = channel_names(declared_);
  if (std::find(declared.begin(), declared.end(), name) != declared.end()) return Origin::Declared;
  std::lock_guard g(mu_);
  if (added_.contains(name)) return Origin::Added;
  return std::nullopt;
}

Result<ChannelsConfig> ChannelDirectory::add(std::string_view name, const Json& fields, std::string_view actor) {
  auto text = table_text(name, fields);
  if (!text) return std::unexpected(text.error());
  auto parsed = parse_tables(*text);
  if (!parsed) return std::unexpected(parsed.error());
  if (auto names = channel_names(*parsed); std::find(names.begin(), names.end(), name) == names.end())
    return fail(ErrorKind::InvalidInput, "'{}' is not a kind of channel moat has (see docs/channels.md)", name);
  if (auto o = origin(name); o == Origin::Declared)
    return fail(ErrorKind::Conflict, "channel '{}' is declared in moat.toml; change it there", name);
  else if (o)
    return fail(ErrorKind::Conflict, "channel '{}' exists; remove it first with 'moat channel rm {}'", name, name);
  std::lock_guard g(mu_);
  {
    auto l = db_.lock();
    auto st = db_.prepare("INSERT INTO channel_configs (name, toml, created_ms, actor) VALUES (?1, ?2, ?3, ?4)");
    if (!st) return std::unexpected(st.error());
    st->bind(1, name).bind(2, *text).bind(3, clock::now_ms()).bind(4, actor);
    if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("storing channel '{}'", name));
  }
  added_.emplace(std::string(name), std::move(*text));
  return *parsed;
}

Status ChannelDirectory::remove(std::string_view name) {
  auto o = origin(name);
  if (!o) return fail(ErrorKind::NotFound, "no channel '{}' was added with moat channel add (see 'moat channel ls')", name);
  if (*o == Origin::Declared)
    return fail(ErrorKind::Conflict, "channel '{}' is declared in moat.toml; remove its [channels.{}] table there and "
                "restart moatd", name, name);
  std::lock_guard g(mu_);
  {
    auto l = db_.lock();
    auto st = db_.prepare("DELETE FROM channel_configs WHERE name = ?1");
    if (!st) return std::unexpected(st.error());
    st->bind(1, name);
    if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("removing channel '{}'", name));
  }
  added_.erase(added_.find(name));
  return {};
}

}  // namespace moat
