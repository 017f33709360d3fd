#pragma once
// Discord messages as envelopes, decided from the platform's facts (guild_id, mentions[],
// mention_roles[], message_reference with referenced_message.author), never from patterns over text.
// Pure functions: no network, no state.
//
//   no guild_id (a DM)                                   -> direct; always for the bot
//   in a guild                                           -> not direct, `mentioned`, and only when the bot
//                                                           is addressed: its user id in mentions[], one of
//                                                           the bot's roles in that guild in mention_roles[],
//                                                           or a reply to one of the bot's own messages
//                                                           (referenced_message.author.id). Other guild
//                                                           messages are skipped here, not stored.
//   the bot's own messages, other bots' and webhooks'    -> skipped
//   MESSAGE_UPDATE (edits)                               -> not mapped at all: an edit does not start a new
//                                                           turn, and the first version was already answered
//   system messages (joins, pins ...)                    -> skipped
//   no content and no files                              -> skipped
//   attachments[]                                        -> Envelope::attachments (url = the CDN link,
//                                                           which the channel downloads before storing)
//
// Envelope: channel "discord", chat = the Discord channel id, sender = the author's user id,
// message_id = "<channel id>:<message id>", sender_name = the global name or username, reply_to = the
// Discord message id in a guild (the reply quotes the message it answers there), empty in a DM.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "base/json.h"
#include "router/envelope.h"

namespace moat::channels::discord {

struct BotIdentity {
  std::string id;        // the bot's user id (a snowflake, as a string)
  std::string username;
  std::map<std::string, std::set<std::string>, std::less<>> roles;  // guild id -> the bot's role ids there
};

enum class Skip { None, OwnMessage, FromABot, NotAddressed, NotAUserMessage, NoText, Malformed };
std::string_view skip_name(Skip s);

struct Mapped {
  std::optional<router::Envelope> envelope;  // set when Skip::None
  Skip skipped = Skip::None;
  int64_t platform_ms = 0;  // when Discord made the message (from its snowflake id), for lag
};

// One MESSAGE_CREATE's `d` (or a message from GET /channels/{id}/messages, whose guild_id the caller
// passes: REST messages do not carry it; empty for a DM channel).
Mapped map_message(const Json& message, const BotIdentity& bot, std::string_view guild_id_if_absent = {});

// Whether a guild message addresses the bot (see above).
bool addresses_bot(const Json& message, const BotIdentity& bot, std::string_view guild_id);

// The Unix time in ms a snowflake id was made at; 0 for something that is not a snowflake.
int64_t snowflake_ms(std::string_view id);
// The smallest snowflake of the Unix time `ms`: every message made later has a larger id.
std::string snowflake_at(int64_t ms);
// a < b as snowflakes (numbers of up to 20 digits, compared without overflow).
bool snowflake_less(std::string_view a, std::string_view b);

}  // namespace moat::channels::discord
