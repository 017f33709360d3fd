// Discord's messages as envelopes (from the platform's facts: guild_id, mentions, mention_roles,
// referenced_message), snowflakes, and the rate-limit route keys.
#include <gtest/gtest.h>

#include "channels/discord/discord_message.h"
#include "channels/discord/discord_rest.h"

namespace moat::channels::discord {
namespace {

const BotIdentity kBot{"1100000000000000001", "moat-bot", {{"44", {"55"}}}};

Json message(Json extra = Json::object()) {
  Json m = {{"id", "1200000000000000000"},
            {"channel_id", "33"},
            {"type", 0},
            {"content", "hello"},
            {"author", {{"id", "22"}, {"username", "ada"}, {"global_name", "Ada"}}},
            {"mentions", Json::array()},
            {"mention_roles", Json::array()}};
  m.update(extra);
  return m;
}

TEST(DiscordMessage, ADirectMessageIsAlwaysForTheBot) {
  auto m = map_message(message(), kBot);
  ASSERT_TRUE(m.envelope) << skip_name(m.skipped);
  EXPECT_EQ(m.envelope->channel, "discord");
  EXPECT_EQ(m.envelope->chat, "33");
  EXPECT_EQ(m.envelope->sender, "22");
  EXPECT_EQ(m.envelope->sender_name, "Ada");
  EXPECT_EQ(m.envelope->message_id, "33:1200000000000000000");
  EXPECT_TRUE(m.envelope->direct);
  EXPECT_EQ(m.envelope->reply_to, "");
  EXPECT_EQ(m.platform_ms, (1200000000000000000LL >> 22) + 1420070400000LL);
}

TEST(DiscordMessage, AGuildMessageOnlyWhenTheBotIsAddressed) {
  EXPECT_EQ(map_message(message({{"guild_id", "44"}}), kBot).skipped, Skip::NotAddressed);
  auto mention = map_message(message({{"guild_id", "44"}, {"mentions", {{{"id", kBot.id}}}}}), kBot);
  ASSERT_TRUE(mention.envelope);
  EXPECT_FALSE(mention.envelope->direct);
  EXPECT_TRUE(mention.envelope->mentioned);
  EXPECT_EQ(mention.envelope->reply_to, "1200000000000000000");
  EXPECT_TRUE(map_message(message({{"guild_id", "44"}, {"mention_roles", {"55"}}}), kBot).envelope);
  // A role the bot does not hold, or the bot's role id in another guild, is not addressing it.
  EXPECT_FALSE(map_message(message({{"guild_id", "44"}, {"mention_roles", {"56"}}}), kBot).envelope);
  EXPECT_FALSE(map_message(message({{"guild_id", "45"}, {"mention_roles", {"55"}}}), kBot).envelope);
  auto reply = message({{"guild_id", "44"}, {"type", 19}, {"message_reference", {{"message_id", "9"}}},
                        {"referenced_message", {{"id", "9"}, {"author", {{"id", kBot.id}}}}}});
  EXPECT_TRUE(map_message(reply, kBot).envelope);
  reply["referenced_message"]["author"]["id"] = "23";
  EXPECT_FALSE(map_message(reply, kBot).envelope);
  // A REST message (no guild_id) from a guild channel: the caller says which guild.
  EXPECT_EQ(map_message(message(), kBot, "44").skipped, Skip::NotAddressed);
}

TEST(DiscordMessage, OwnBotsSystemAndEmptyMessagesAreSkipped) {
  EXPECT_EQ(map_message(message({{"author", {{"id", kBot.id}}}}), kBot).skipped, Skip::OwnMessage);
  EXPECT_EQ(map_message(message({{"author", {{"id", "9"}, {"bot", true}}}}), kBot).skipped, Skip::FromABot);
  EXPECT_EQ(map_message(message({{"webhook_id", "7"}}), kBot).skipped, Skip::FromABot);
  EXPECT_EQ(map_message(message({{"type", 7}}), kBot).skipped, Skip::NotAUserMessage);
  EXPECT_EQ(map_message(message({{"content", ""}}), kBot).skipped, Skip::NoText);
  EXPECT_EQ(map_message(Json::array(), kBot).skipped, Skip::Malformed);
  EXPECT_EQ(map_message(message({{"id", 5}}), kBot).skipped, Skip::Malformed);
}

TEST(DiscordMessage, FilesBecomeAttachmentsEvenWithoutText) {
  Json file = {{"id", "77"}, {"filename", "notes.txt"}, {"size", 12}, {"content_type", "text/plain"},
               {"url", "https://cdn.discordapp.com/attachments/33/77/notes.txt?ex=1"}};
  auto m = map_message(message({{"content", ""}, {"attachments", {file}}}), kBot);
  ASSERT_TRUE(m.envelope) << skip_name(m.skipped);
  ASSERT_EQ(m.envelope->attachments.size(), 1u);
  EXPECT_EQ(m.envelope->attachments[0].name, "notes.txt");
  EXPECT_EQ(m.envelope->attachments[0].mime, "text/plain");
  EXPECT_EQ(m.envelope->attachments[0].size, 12u);
  EXPECT_EQ(m.envelope->attachments[0].url, "https://cdn.discordapp.com/attachments/33/77/notes.txt?ex=1");
}

TEST(DiscordMessage, Snowflakes) {
  EXPECT_TRUE(snowflake_less("99", "100"));
  EXPECT_FALSE(snowflake_less("100", "99"));
  EXPECT_TRUE(snowflake_less("1200000000000000000", "1200000000000000001"));
  EXPECT_EQ(snowflake_ms("x"), 0);
  int64_t now = 1765000000000;
  EXPECT_EQ(snowflake_ms(snowflake_at(now)), now);
}

TEST(DiscordRest, RouteKeysKeepTheMajorParameter) {
  EXPECT_EQ(route_key("POST", "/channels/33/messages"), "POST /channels/33/messages");
  EXPECT_EQ(route_key("PATCH", "/channels/33/messages/1200000000000000000"), "PATCH /channels/33/messages/:id");
  EXPECT_EQ(route_key("GET", "/channels/33/messages?after=5&limit=100"), "GET /channels/33/messages");
  EXPECT_EQ(route_key("GET", "/guilds/44/members/11"), "GET /guilds/44/members/:id");
  EXPECT_EQ(route_key("GET", "/gateway/bot"), "GET /gateway/bot");
  EXPECT_EQ(major_parameter("/channels/33/messages/12"), "33");
  EXPECT_EQ(major_parameter("/channels/33?x=1"), "33");
  EXPECT_EQ(major_parameter("/guilds/44/members/11"), "44");
  EXPECT_EQ(major_parameter("/gateway/bot"), "");
}

}  // namespace
}  // namespace moat::channels::discord
