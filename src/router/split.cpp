#include "router/split.h"

#include <fmt/format.h>

namespace moat::router {
namespace {

// The byte length of the UTF-8 sequence starting at `s[i]` (1 for an invalid or cut sequence).
size_t sequence_length(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

size_t units_of(size_t bytes, TextUnit unit) {
  switch (unit) {
    case TextUnit::Bytes: return bytes;
    case TextUnit::CodePoints: return 1;
    case TextUnit::Utf16: return bytes == 4 ? 2 : 1;  // beyond the BMP: a surrogate pair
  }
  return bytes;
}

}  // namespace

size_t text_length(std::string_view text, TextUnit unit) {
  size_t n = 0;
  for (size_t i = 0; i < text.size();) {
    size_t len = sequence_length(text, i);
    n += units_of(len, unit);
    i += len;
  }
  return n;
}

std::vector<std::string> split_text(std::string_view text, MessageLimit limit) {
  std::vector<std::string> parts;
  if (limit.max == 0 || text_length(text, limit.unit) <= limit.max) {
    parts.emplace_back(text);
    return parts;
  }
  size_t start = 0;
  while (start < text.size()) {
    // Walk code points until the next one would not fit; remember good places to cut.
    size_t units = 0, end = start, after_newline = 0, after_space = 0;
    const size_t late = limit.max - limit.max / 4;  // a cut in the last quarter keeps parts full
    while (end < text.size()) {
      size_t len = sequence_length(text, end);
      size_t u = units_of(len, limit.unit);
      if (units + u > limit.max) break;
      units += u;
      end += len;
      if (units >= late) {
        if (text[end - 1] == '\n') after_newline = end;
        else if (text[end - 1] == ' ') after_space = end;
      }
    }
    if (end == start) end = start + sequence_length(text, start);  // a limit below one character
    size_t cut = end;
    if (end < text.size()) {
      if (after_newline > start) cut = after_newline;
      else if (after_space > start) cut = after_space;
    }
    parts.emplace_back(text.substr(start, cut - start));
    start = cut;
  }
  return parts;
}

std::string part_key(std::string_view row_key, size_t index, size_t count) {
  if (count <= 1) return std::string(row_key);
  return fmt::format("{}.{}", row_key, index + 1);
}

}  // namespace moat::router
