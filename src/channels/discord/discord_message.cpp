#include "channels/discord/discord_message.h"

#include <algorithm>

#include "base/text.h"

namespace moat::channels::discord {

namespace {

std::string str(const Json& j, std::string_view key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool has_id(const Json& list, std::string_view id) {
  if (!list.is_array()) return false;
  for (const auto& x : list) {
    if (x.is_string() && x.get_ref<const std::string&>() == id) return true;
    if (x.is_object() && str(x, "id") == id) return true;
  }
  return false;
}

// Message types a person writes: DEFAULT (0) and REPLY (19). The rest are system notices.
bool user_message_type(const Json& m) {
  int type = m.value("type", 0);
  return type == 0 || type == 19;
}

}  // namespace

std::string_view skip_name(Skip s) {
  switch (s) {
    case Skip::None: return "none";
    case Skip::OwnMessage: return "the bot's own message";
    case Skip::FromABot: return "from another bot";
    case Skip::NotAddressed: return "a guild message not addressed to the bot";
    case Skip::NotAUserMessage: return "a system message";
    case Skip::NoText: return "no text";
    case Skip::Malformed: return "malformed";
  }
  return "unknown";
}

int64_t snowflake_ms(std::string_view id) {
  auto v = parse_number<uint64_t>(id);
  if (!v) return 0;
  return static_cast<int64_t>(*v >> 22) + 1420070400000LL;
}

std::string snowflake_at(int64_t ms) {
  int64_t since = std::max<int64_t>(0, ms - 1420070400000LL);
  return std::to_string(static_cast<uint64_t>(since) << 22);
}

bool snowflake_less(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

bool addresses_bot(const Json& m, const BotIdentity& bot, std::string_view guild_id) {
  if (bot.id.empty()) return false;
  if (auto it = m.find("mentions"); it != m.end() && has_id(*it, bot.id)) return true;
  if (auto g = bot.roles.find(guild_id); g != bot.roles.end()) {
    if (auto it = m.find("mention_roles"); it != m.end() && it->is_array())
      for (const auto& r : *it)
        if (r.is_string() && g->second.contains(r.get<std::string>())) return true;
  }
  if (auto ref = m.find("referenced_message"); ref != m.end() && ref->is_object()) {
    if (auto a = ref->find("author"); a != ref->end() && a->is_object() && str(*a, "id") == bot.id) return true;
  }
  return false;
}

Mapped map_message(const Json& m, const BotIdentity& bot, std::string_view guild_id_if_absent) {
  Mapped out;
  if (!m.is_object() || !m.contains("author") || !m["author"].is_object()) {
    out.skipped = Skip::Malformed;
    return out;
  }
  std::string id = str(m, "id"), channel = str(m, "channel_id");
  const Json& author = m["author"];
  std::string author_id = str(author, "id");
  if (id.empty() || channel.empty() || author_id.empty()) {
    out.skipped = Skip::Malformed;
    return out;
  }
  out.platform_ms = snowflake_ms(id);
  if (author_id == bot.id) {
    out.skipped = Skip::OwnMessage;
    return out;
  }
  if (author.value("bot", false) || m.contains("webhook_id")) {
    out.skipped = Skip::FromABot;
    return out;
  }
  if (!user_message_type(m)) {
    out.skipped = Skip::NotAUserMessage;
    return out;
  }
  std::string guild = m.contains("guild_id") ? str(m, "guild_id") : std::string(guild_id_if_absent);
  bool direct = guild.empty();
  if (!direct && !addresses_bot(m, bot, guild)) {
    out.skipped = Skip::NotAddressed;
    return out;
  }
  std::string text = str(m, "content");
  std::vector<router::Attachment> attachments;
  if (auto a = m.find("attachments"); a != m.end() && a->is_array())
    for (const auto& f : *a) {
      if (!f.is_object() || str(f, "url").empty()) continue;
      attachments.push_back(router::Attachment{
          .name = str(f, "filename").empty() ? "file" : str(f, "filename"), .mime = str(f, "content_type"),
          .url = str(f, "url"), .size = f.contains("size") && f["size"].is_number_integer()
                                                                ? static_cast<uint64_t>(std::max<int64_t>(0, f["size"].get<int64_t>()))
                                                                : 0});
    }
  if (text.empty() && attachments.empty()) {
    out.skipped = Skip::NoText;
    return out;
  }
  router::Envelope e;
  e.channel = "discord";
  e.chat = channel;
  e.sender = author_id;
  std::string global = str(author, "global_name");
  e.sender_name = global.empty() ? str(author, "username") : global;
  e.message_id = channel + ":" + id;
  e.text = std::move(text);
  e.direct = direct;
  e.mentioned = !direct;
  e.reply_to = direct ? std::string() : id;  // in a guild the reply quotes the message; in a DM it need not
  e.attachments = std::move(attachments);
  out.envelope = std::move(e);
  return out;
}

}  // namespace moat::channels::discord
