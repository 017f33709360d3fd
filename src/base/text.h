#pragma once
// The few text helpers every layer needs, in one place: ASCII lower-casing (host names, header
// tokens: no locale may change what a name matches), trimming whitespace, and reading a whole string
// as a number (no sign games, no trailing junk, no empty string read as zero).
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace moat {

// 'A'-'Z' to 'a'-'z'; every other byte as it is.
std::string ascii_lower(std::string_view s);

// Without the spaces, tabs, CRs and LFs at either end.
std::string_view trim_space(std::string_view s);

// `s` in full as a number of type T (integers in `base`; for floating point, base is ignored);
// nullopt when empty, out of T's range or followed by anything.
template <class T>
std::optional<T> parse_number(std::string_view s, int base = 10) {
  if (s.empty()) return std::nullopt;
  T v{};
  std::from_chars_result r;
  if constexpr (std::is_floating_point_v<T>)
    r = std::from_chars(s.data(), s.data() + s.size(), v);
  else
    r = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace moat
