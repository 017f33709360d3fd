// Channels added at run time (`moat channel add`) next to those declared in moat.toml: checked by the
// one config parser, kept in the store across restarts, never shadowing or removing a declared one.
#include "daemon/channel_directory.h"

#include <gtest/gtest.h>

#include "support/temp_dir.h"

using namespace moat;

namespace {

struct Fixture {
  moat::testing::TempDir dir{"moat-chdir"};
  std::optional<Database> db;
  Fixture() { db.emplace(std::move(*Database::open(dir / "moat.db"))); }
  std::unique_ptr<ChannelDirectory> open(const Config& c = {}) {
    auto d = ChannelDirectory::open(*db, c);
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
  }
};

}  // namespace

TEST(ChannelDirectory, AnAddedChannelIsCheckedStoredAndKeptAcrossRestarts) {
  Fixture f;
  auto d = f.open();
  EXPECT_FALSE(d->effective().telegram);
  auto added = d->add("telegram", Json{{"token_secret", "tg-bot"}, {"poll_timeout", "5s"}}, "uid:0");
  ASSERT_TRUE(added) << added.error().message;
  ASSERT_TRUE(added->telegram);
  EXPECT_EQ(added->telegram->poll_timeout, std::chrono::seconds(5));
  d = f.open();
  ASSERT_TRUE(d->effective().telegram);
  EXPECT_EQ(d->effective().telegram->token_secret, "tg-bot");
  EXPECT_EQ(d->origin("telegram"), ChannelDirectory::Origin::Added);
  auto again = d->add("telegram", Json{{"token_secret", "other"}}, "uid:0");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, ErrorKind::Conflict);
  ASSERT_TRUE(d->remove("telegram"));
  d = f.open();
  EXPECT_FALSE(d->effective().telegram);
  EXPECT_EQ(d->remove("telegram").error().kind, ErrorKind::NotFound);
}

TEST(ChannelDirectory, BadSettingsAreRefusedNamingTheKey) {
  Fixture f;
  auto d = f.open();
  auto no_token = d->add("telegram", Json::object(), "uid:0");
  ASSERT_FALSE(no_token);
  EXPECT_NE(no_token.error().message.find("token_secret"), std::string::npos) << no_token.error().message;
  auto bad_key = d->add("telegram", Json{{"token_secret", "t"}, {"pol_timeout", "5s"}}, "uid:0");
  ASSERT_FALSE(bad_key);
  EXPECT_NE(bad_key.error().message.find("pol_timeout"), std::string::npos) << bad_key.error().message;
  auto bad_value = d->add("telegram", Json{{"token_secret", "t"}, {"mode", "po\"lling\nx = 1"}}, "uid:0");
  ASSERT_FALSE(bad_value);
  EXPECT_NE(bad_value.error().message.find("mode"), std::string::npos) << bad_value.error().message;
  auto kind = d->add("irc", Json{{"token_secret", "t"}}, "uid:0");
  ASSERT_FALSE(kind);
  EXPECT_EQ(kind.error().kind, ErrorKind::InvalidInput);
  auto injected = d->add("telegram]\n[agents.x", Json{{"token_secret", "t"}}, "uid:0");
  ASSERT_FALSE(injected);
  EXPECT_EQ(*f.db->query_int64("SELECT count(*) FROM channel_configs"), 0);
}

TEST(ChannelDirectory, ADeclaredChannelCannotBeAddedOverOrRemoved) {
  Fixture f;
  auto c = parse_config("[channels.telegram]\ntoken_secret = \"from-file\"\n", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  auto d = f.open(*c);
  EXPECT_EQ(d->origin("telegram"), ChannelDirectory::Origin::Declared);
  auto added = d->add("telegram", Json{{"token_secret", "other"}}, "uid:0");
  ASSERT_FALSE(added);
  EXPECT_NE(added.error().message.find("moat.toml"), std::string::npos);
  auto removed = d->remove("telegram");
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().kind, ErrorKind::Conflict);
  EXPECT_EQ(d->effective().telegram->token_secret, "from-file");
}
