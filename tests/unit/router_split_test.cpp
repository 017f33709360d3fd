// Splitting long replies for platforms: within the limit in the platform's own unit, never inside a
// character, preferring line and word ends, and nothing lost or reordered.
#include <gtest/gtest.h>

#include "router/split.h"

using namespace moat::router;

namespace {
std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (auto& p : parts) out += p;
  return out;
}
}  // namespace

TEST(RouterSplit, CountsUnitsAsEachPlatformDoes) {
  const std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a é € 😀
  EXPECT_EQ(text_length(s, TextUnit::Bytes), 10u);
  EXPECT_EQ(text_length(s, TextUnit::CodePoints), 4u);
  EXPECT_EQ(text_length(s, TextUnit::Utf16), 5u);  // 😀 is a surrogate pair
  EXPECT_EQ(text_length("\xFF\xFE", TextUnit::Utf16), 2u);  // invalid bytes: one unit each
}

TEST(RouterSplit, AReplyThatFitsIsOnePartUnderTheRowsOwnKey) {
  auto parts = split_text("hello", {4096, TextUnit::Utf16});
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0], "hello");
  EXPECT_EQ(part_key("o31", 0, 1), "o31");
  EXPECT_EQ(split_text(std::string(100000, 'x'), {}).size(), 1u);  // no limit
}

TEST(RouterSplit, TenThousandCharactersArriveSplitInOrderWithinTheLimit) {
  std::string text;
  for (int i = 0; text.size() < 10000; ++i) text += "line " + std::to_string(i) + " of the reply, with some words\n";
  text.resize(10000);
  for (MessageLimit limit : {MessageLimit{4096, TextUnit::Utf16}, MessageLimit{2000, TextUnit::CodePoints}}) {
    auto parts = split_text(text, limit);
    EXPECT_EQ(joined(parts), text);
    // Cuts land in each part's last quarter: as few parts as fit, and at most a quarter more.
    EXPECT_GE(parts.size(), (10000 + limit.max - 1) / limit.max);
    EXPECT_LE(parts.size(), 10000 / (limit.max - limit.max / 4) + 1);
    for (size_t i = 0; i < parts.size(); ++i) {
      EXPECT_LE(text_length(parts[i], limit.unit), limit.max);
      if (i + 1 < parts.size()) {
        EXPECT_EQ(parts[i].back(), '\n') << "part " << i << " does not end at a line";
      }
    }
    EXPECT_EQ(part_key("o31", 1, parts.size()), "o31.2");
  }
}

TEST(RouterSplit, NeverCutsInsideACharacterAndCountsSurrogatePairs) {
  std::string emoji = "\xF0\x9F\x98\x80";  // 😀: 4 bytes, 2 UTF-16 units
  std::string text;
  for (int i = 0; i < 3000; ++i) text += emoji;  // 6000 UTF-16 units, no spaces
  auto parts = split_text(text, {4096, TextUnit::Utf16});
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(text_length(parts[0], TextUnit::Utf16), 4096u);
  EXPECT_EQ(parts[0].size() % 4, 0u);
  EXPECT_EQ(joined(parts), text);
  // A limit on bytes cuts before a character that would not fit whole.
  auto bytes = split_text("ab\xE2\x82\xAC" "cd", {3, TextUnit::Bytes});
  EXPECT_EQ(bytes, (std::vector<std::string>{"ab", "\xE2\x82\xAC", "cd"}));
}

TEST(RouterSplit, PrefersWordEndsWhenThereIsNoLineEnd) {
  std::string text;
  while (text.size() < 5000) text += "word ";
  auto parts = split_text(text, {2000, TextUnit::CodePoints});
  EXPECT_EQ(joined(parts), text);
  for (size_t i = 0; i + 1 < parts.size(); ++i) EXPECT_EQ(parts[i].back(), ' ');
}
