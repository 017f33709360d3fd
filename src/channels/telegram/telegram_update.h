#pragma once
// Telegram updates as envelopes, decided from the platform's facts (chat type, message entities, the
// replied-to message's author), never from patterns over names. Pure functions: no network, no state.
//
//   private chat                 -> direct; always for the bot
//   group / supergroup           -> not direct, `mentioned`, and only when the bot is addressed: an entity
//                                   of type "mention" naming @<bot username> (case-insensitive), a
//                                   "text_mention" of the bot's user id, a "bot_command" ending in
//                                   @<bot username>, or a reply to one of the bot's own messages. Other
//                                   group messages (they reach the bot with privacy mode off) are skipped
//                                   here, not stored: people talking among themselves are not the
//                                   agent's business, and a group must not fill the store.
//   the bot's own messages, other bots' messages          -> skipped
//   edited_message / edited_channel_post                  -> skipped: an edit does not start a new turn,
//                                                            and the first version was already answered
//   channel posts, callback queries, members joining ...  -> skipped
//   a message with neither text, caption nor a file        -> skipped (stickers, locations, polls ...)
//   documents, photos (the largest size), audio, voice, video -> Envelope::attachments, each with
//                                   url = "telegram-file:<file_id>"; the channel downloads them
//                                   (getFile) before the envelope is stored
//
// Envelope: channel "telegram", chat = the chat id, sender = the user id, message_id = "<chat>:<message>"
// (Telegram numbers messages per chat), sender_name = "@username" or the first and last name,
// reply_to = the Telegram message id (so a reply in a group can quote the message it answers).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/json.h"
#include "router/envelope.h"

namespace moat::channels::telegram {

struct BotIdentity {
  int64_t id = 0;
  std::string username;  // without '@'
};

enum class Skip { None, NotAMessage, Edited, OwnMessage, FromABot, NotAddressed, NoText, Malformed };
std::string_view skip_name(Skip s);

struct Mapped {
  std::optional<router::Envelope> envelope;  // set when Skip::None
  Skip skipped = Skip::None;
  int64_t platform_date_ms = 0;  // the message's date (seconds on the platform), for lag
};

// Attachments' url: this prefix and the file_id, for getFile (never a URL with the token).
inline constexpr std::string_view kFileUrlPrefix = "telegram-file:";
std::vector<router::Attachment> attachments_of(const Json& message);

// One update of getUpdates (or a webhook delivery).
Mapped map_update(const Json& update, const BotIdentity& bot);

// The UTF-8 text of `text` between UTF-16 offsets [offset, offset + length) (entity offsets count UTF-16
// code units); empty when out of range.
std::string utf16_slice(std::string_view text, size_t offset, size_t length);

// Whether a message addresses the bot (see above).
bool addresses_bot(const Json& message, const BotIdentity& bot);

}  // namespace moat::channels::telegram
