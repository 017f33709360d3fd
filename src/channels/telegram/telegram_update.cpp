#include "channels/telegram/telegram_update.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace moat::channels::telegram {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

int64_t int_of(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

std::string string_of(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string_view skip_name(Skip s) {
  switch (s) {
    case Skip::None: return "none";
    case Skip::NotAMessage: return "not a message";
    case Skip::Edited: return "an edit";
    case Skip::OwnMessage: return "the bot's own message";
    case Skip::FromABot: return "another bot's message";
    case Skip::NotAddressed: return "a group message not addressed to the bot";
    case Skip::NoText: return "no text";
    case Skip::Malformed: return "malformed";
  }
  return "?";
}

std::string utf16_slice(std::string_view text, size_t offset, size_t length) {
  size_t unit = 0, begin = std::string_view::npos, i = 0;
  const size_t end_unit = offset + length;
  while (i < text.size() && unit < end_unit) {
    if (unit == offset) begin = i;
    auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + n > text.size()) n = 1;
    unit += n == 4 ? 2 : 1;  // beyond the BMP: a surrogate pair
    i += n;
  }
  if (begin == std::string_view::npos || unit != end_unit) return {};
  return std::string(text.substr(begin, i - begin));
}

bool addresses_bot(const Json& message, const BotIdentity& bot) {
  if (auto r = message.find("reply_to_message"); r != message.end() && r->is_object()) {
    auto from = r->find("from");
    if (from != r->end() && from->is_object() && int_of(*from, "id") == bot.id) return true;
  }
  const std::string at_bot = "@" + lower(bot.username);
  for (const char* text_key : {"text", "caption"}) {
    std::string text = string_of(message, text_key);
    auto entities = message.find(std::string_view(text_key) == "text" ? "entities" : "caption_entities");
    if (text.empty() || entities == message.end() || !entities->is_array()) continue;
    for (const auto& e : *entities) {
      if (!e.is_object()) continue;
      std::string type = string_of(e, "type");
      if (type == "text_mention") {
        auto user = e.find("user");
        if (user != e.end() && user->is_object() && int_of(*user, "id") == bot.id) return true;
        continue;
      }
      if (type != "mention" && type != "bot_command") continue;
      int64_t offset = int_of(e, "offset"), length = int_of(e, "length");
      if (offset < 0 || length <= 0) continue;
      std::string word = lower(utf16_slice(text, static_cast<size_t>(offset), static_cast<size_t>(length)));
      if (type == "mention" && !bot.username.empty() && word == at_bot) return true;
      if (type == "bot_command" && !bot.username.empty() && word.ends_with(at_bot)) return true;
    }
  }
  return false;
}

std::vector<router::Attachment> attachments_of(const Json& message) {
  std::vector<router::Attachment> out;
  auto add = [&](const Json& f, std::string name, std::string mime) {
    if (!f.is_object()) return;
    std::string id = string_of(f, "file_id");
    if (id.empty()) return;
    if (auto n = string_of(f, "file_name"); !n.empty()) name = n;
    if (auto m = string_of(f, "mime_type"); !m.empty()) mime = m;
    out.push_back(router::Attachment{.name = std::move(name), .mime = std::move(mime),
                                     .url = std::string(kFileUrlPrefix) + id,
                                     .size = static_cast<uint64_t>(std::max<int64_t>(0, int_of(f, "file_size")))});
  };
  if (auto d = message.find("document"); d != message.end()) add(*d, "document", "");
  // A photo comes in several sizes, smallest first: the largest is the one sent.
  if (auto p = message.find("photo"); p != message.end() && p->is_array() && !p->empty()) add(p->back(), "photo.jpg", "image/jpeg");
  if (auto a = message.find("audio"); a != message.end()) add(*a, "audio", "");
  if (auto v = message.find("voice"); v != message.end()) add(*v, "voice.ogg", "audio/ogg");
  if (auto v = message.find("video"); v != message.end()) add(*v, "video.mp4", "video/mp4");
  return out;
}

Mapped map_update(const Json& update, const BotIdentity& bot) {
  Mapped out;
  if (!update.is_object()) {
    out.skipped = Skip::Malformed;
    return out;
  }
  if (update.contains("edited_message") || update.contains("edited_channel_post")) {
    out.skipped = Skip::Edited;
    return out;
  }
  auto m = update.find("message");
  if (m == update.end() || !m->is_object()) {
    out.skipped = Skip::NotAMessage;
    return out;
  }
  const Json& message = *m;
  auto chat = message.find("chat");
  auto from = message.find("from");
  int64_t message_id = int_of(message, "message_id");
  if (chat == message.end() || !chat->is_object() || int_of(*chat, "id") == 0 || message_id == 0) {
    out.skipped = Skip::Malformed;
    return out;
  }
  out.platform_date_ms = int_of(message, "date") * 1000;
  if (from == message.end() || !from->is_object()) {  // anonymous group admins, channel posts
    out.skipped = Skip::NotAMessage;
    return out;
  }
  if (int_of(*from, "id") == bot.id) {
    out.skipped = Skip::OwnMessage;
    return out;
  }
  if (from->value("is_bot", false)) {
    out.skipped = Skip::FromABot;
    return out;
  }
  std::string text = string_of(message, "text");
  if (text.empty()) text = string_of(message, "caption");
  auto attachments = attachments_of(message);
  if (text.empty() && attachments.empty()) {
    out.skipped = Skip::NoText;
    return out;
  }
  router::Envelope e;
  e.channel = "telegram";
  e.chat = std::to_string(int_of(*chat, "id"));
  e.sender = std::to_string(int_of(*from, "id"));
  if (auto username = string_of(*from, "username"); !username.empty()) {
    e.sender_name = "@" + username;
  } else {
    e.sender_name = string_of(*from, "first_name");
    if (auto last = string_of(*from, "last_name"); !last.empty()) e.sender_name += " " + last;
  }
  e.message_id = fmt::format("{}:{}", e.chat, message_id);
  e.text = std::move(text);
  e.direct = string_of(*chat, "type") == "private";
  e.mentioned = !e.direct && addresses_bot(message, bot);
  if (!e.direct && !e.mentioned) {
    out.skipped = Skip::NotAddressed;
    return out;
  }
  e.reply_to = std::to_string(message_id);
  e.attachments = std::move(attachments);
  out.envelope = std::move(e);
  return out;
}

}  // namespace moat::channels::telegram
