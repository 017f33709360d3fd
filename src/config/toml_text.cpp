#include "config/toml_text.h"

#include <map>
#include <type_traits>
#include <string>
#include <vector>

#include "base/ids.h"

namespace moat {
namespace {

// The length of the UTF-8 sequence starting at text[i], or 0 when it is not valid UTF-8 (overlong
// forms, surrogates and code points past U+10FFFF included).
size_t utf8_sequence(std::string_view text, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char c = b(i);
  size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
  if (n == 0 || c >= 0xF5 || i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
  if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogate
  if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
  if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // past U+10FFFF
  return n;
}

struct StandIns {
  std::string ascii;                        // the text toml++ parses
  std::map<std::string, std::string> back;  // placeholder -> original bytes
  std::string prefix;
};

Result<StandIns> stand_in(std::string_view text, std::string_view origin) {
  StandIns s;
  // A prefix the text does not contain, so no placeholder can be confused with the user's own text.
  do s.prefix = "moatU" + random_hex_id(4) + "x";
  while (text.find(s.prefix) != std::string_view::npos);
  s.ascii.reserve(text.size());
  int line = 1;
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      if (text[i] == '\n') ++line;
      s.ascii.push_back(text[i++]);
      continue;
    }
    size_t start = i;
    while (i < text.size() && static_cast<unsigned char>(text[i]) >= 0x80) {
      size_t n = utf8_sequence(text, i);
      if (n == 0) return fail(ErrorKind::InvalidInput, "{}:{}: the file is not valid UTF-8", origin, line);
      i += n;
    }
    std::string placeholder = s.prefix + std::to_string(s.back.size()) + "x";
    s.back.emplace(placeholder, std::string(text.substr(start, i - start)));
    s.ascii += placeholder;
  }
  return s;
}

void restore(std::string& str, const StandIns& s) {
  if (s.back.empty()) return;
  for (size_t at = str.find(s.prefix); at != std::string::npos; at = str.find(s.prefix, at)) {
    size_t end = str.find('x', at + s.prefix.size());
    auto it = end == std::string::npos ? s.back.end() : s.back.find(str.substr(at, end + 1 - at));
    if (it == s.back.end()) {
      at += s.prefix.size();
      continue;
    }
    str.replace(at, it->first.size(), it->second);
    at += it->second.size();
  }
}

void restore(toml::node& node, const StandIns& s);

void restore(toml::table& t, const StandIns& s) {
  std::vector<std::string> renamed;
  for (auto& [key, value] : t) {
    restore(value, s);
    if (key.str().find(s.prefix) != std::string_view::npos) renamed.emplace_back(key.str());
  }
  for (auto& old_key : renamed) {
    std::string new_key = old_key;
    restore(new_key, s);
    auto it = t.find(old_key);
    toml::source_region src = it->first.source();
    // Re-keyed by moving the concrete value out, then erasing the old entry (not used after that).
    it->second.visit([&](auto&& n) {
      std::remove_cvref_t<decltype(n)> moved(std::move(n));
      t.erase(it);
      t.insert_or_assign(toml::key(new_key, std::move(src)), std::move(moved));
    });
  }
}

void restore(toml::node& node, const StandIns& s) {
  if (auto* t = node.as_table()) {
    restore(*t, s);
  } else if (auto* a = node.as_array()) {
    for (auto& element : *a) restore(element, s);
  } else if (auto* str = node.as_string()) {
    restore(str->get(), s);
  }
}

}  // namespace

Result<toml::table> parse_toml_text(std::string_view text, std::string_view origin) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a byte-order mark, as toml++ would skip it
  auto s = stand_in(text, origin);
  if (!s) return std::unexpected(s.error());
  toml::table root;
  try {
    root = toml::parse(s->ascii, origin);
  } catch (const toml::parse_error& e) {
    std::string what(e.description());
    restore(what, *s);
    return fail(ErrorKind::InvalidInput, "{}:{}: {}", origin, e.source().begin.line, what);
  }
  restore(root, *s);
  return root;
}

}  // namespace moat
