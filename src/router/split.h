#pragma once
// Long replies in parts a platform takes: Telegram allows 4096 UTF-16 code units per message, Discord
// 2000 characters, and a reply longer than that must arrive whole, in order, and never cut inside a
// character. Each part is delivered under its own key ("o31.1", "o31.2", ...), so a crash between two
// parts resumes with the next one instead of sending the first again.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace moat::router {

// How a platform counts a message's length.
enum class TextUnit { Bytes, CodePoints, Utf16 };

struct MessageLimit {
  size_t max = 0;  // 0: no limit
  TextUnit unit = TextUnit::Bytes;
};

// The length of UTF-8 `text` in `unit` (an invalid byte counts as one code point, one UTF-16 unit).
size_t text_length(std::string_view text, TextUnit unit);

// Splits UTF-8 `text` into parts of at most `limit.max` units, at code point boundaries, preferring
// to end a part after a newline, then after a space, in its last quarter; one part when it fits (or
// when there is no limit). Parts concatenated give `text` back exactly.
std::vector<std::string> split_text(std::string_view text, MessageLimit limit);

// The delivery key of part `index` (0-based) of `count` of the outbox row whose key is `row_key`:
// the row's own key when the reply is one part, else "<row_key>.<index + 1>".
std::string part_key(std::string_view row_key, size_t index, size_t count);

}  // namespace moat::router
