// Agents' policies: moat.toml rules and presets, plus run-time changes kept in a real SQLite store.
#include "egress/policy_book.h"

#include <gtest/gtest.h>

#include "egress/usage_meter.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::egress;

namespace {

EgressConfig sample_config() {
  EgressConfig c;
  c.preset = "locked";
  c.deny = {"*.evil.example"};
  c.agents["builder"].preset = "balanced";
  c.agents["builder"].allow = {"registry.example.com:443"};
  c.agents["builder"].max_connections = 3;
  return c;
}

}  // namespace

TEST(PolicyBook, CombinesConfigPresetAndRunTimeRulesAndKeepsThem) {
  moat::testing::TempDir dir("moat-policy-book");
  auto db = Database::open(dir.path() / "moat.db");
  ASSERT_TRUE(db) << db.error().message;
  auto cfg = sample_config();
  {
    auto book = PolicyBook::open(*db, cfg);
    ASSERT_TRUE(book) << book.error().message;
    auto& b = **book;
    EXPECT_FALSE(check_host(b.policy_for("other"), "api.anthropic.com", 443).allowed);  // locked
    EXPECT_TRUE(check_host(b.policy_for("builder"), "api.anthropic.com", 443).allowed);  // balanced
    EXPECT_TRUE(check_host(b.policy_for("builder"), "registry.example.com", 443).allowed);
    EXPECT_FALSE(check_host(b.policy_for("builder"), "x.evil.example", 443).allowed);
    EXPECT_EQ(b.limits_for("builder").max_connections, 3u);
    EXPECT_EQ(b.limits_for("other").max_connections, cfg.max_connections);

    ASSERT_TRUE(b.add_rule("other", RuleAction::Allow, "pypi.org:443"));
    ASSERT_TRUE(b.add_rule("other", RuleAction::Allow, "pypi.org:443"));  // again: no error, no duplicate
    ASSERT_TRUE(b.set_preset("other", "open"));
    EXPECT_FALSE(b.add_rule("other", RuleAction::Allow, "http://x/"));
    EXPECT_FALSE(b.set_preset("other", "wide"));
    EXPECT_TRUE(check_host(b.policy_for("other"), "pypi.org", 443).allowed);
  }
  // A new book over the same store (a moatd restart) still has the run-time changes.
  auto book = PolicyBook::open(*db, cfg);
  ASSERT_TRUE(book);
  auto p = (*book)->policy_for("other");
  EXPECT_EQ(p.preset, "open");
  EXPECT_EQ(std::count_if(p.rules.begin(), p.rules.end(), [](const Rule& r) { return r.text() == "allow pypi.org:443"; }), 1);
  auto shown = (*book)->describe("other");
  EXPECT_EQ(shown["preset"], "open");
  EXPECT_TRUE((*book)->remove_rule("other", RuleAction::Allow, "pypi.org:443"));
  EXPECT_EQ((*book)->remove_rule("other", RuleAction::Allow, "pypi.org:443").error().kind, ErrorKind::NotFound);
}

TEST(PolicyBook, BadConfigRuleIsNamed) {
  moat::testing::TempDir dir("moat-policy-book");
  auto db = Database::open(dir.path() / "moat.db");
  ASSERT_TRUE(db);
  EgressConfig c;
  c.agents["a"].allow = {"exa mple.com"};
  auto book = PolicyBook::open(*db, c);
  ASSERT_FALSE(book);
  EXPECT_NE(book.error().message.find("agents.a.egress.allow"), std::string::npos) << book.error().message;
}

TEST(UsageMeter, RefusesOverLimitsAndRemembersTheDay) {
  moat::testing::TempDir dir("moat-usage");
  auto db = Database::open(dir.path() / "moat.db");
  ASSERT_TRUE(db);
  AgentLimits limits{2, 1000};
  {
    UsageMeter m(*db);
    EXPECT_FALSE(m.try_open("a", limits));
    EXPECT_FALSE(m.try_open("a", limits));
    auto third = m.try_open("a", limits);
    ASSERT_TRUE(third);
    EXPECT_NE(third->find("max_connections"), std::string::npos);
    m.close("a");
    m.add_bytes("a", 1500);
    EXPECT_TRUE(m.over_budget("a", limits));
    ASSERT_TRUE(m.flush());
  }
  UsageMeter again(*db);
  auto refused = again.try_open("a", limits);
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->find("max_bytes_per_day"), std::string::npos);
  EXPECT_FALSE(again.try_open("b", limits));
}
