#include "config/units.h"

#include <charconv>
#include <cmath>

namespace moat {
namespace {

struct Number {
  double value;
  std::string_view suffix;
};

Result<Number> split_number(std::string_view text, std::string_view what) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return fail(ErrorKind::InvalidInput, "invalid {} '{}': expected a number", what, text);
  double v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + i, v);
  if (ec != std::errc() || p != text.data() + i)
    return fail(ErrorKind::InvalidInput, "invalid {} '{}': expected a number", what, text);
  auto suffix = text.substr(i);
  while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
  return Number{v, suffix};
}

}  // namespace

Result<uint64_t> parse_size(std::string_view text) {
  auto n = split_number(text, "size");
  if (!n) return std::unexpected(n.error());
  static constexpr std::pair<std::string_view, uint64_t> units[] = {
      {"", 1},           {"B", 1},           {"K", 1ull << 10},   {"KB", 1000},      {"KiB", 1ull << 10},
      {"M", 1ull << 20}, {"MB", 1000000},    {"MiB", 1ull << 20}, {"G", 1ull << 30}, {"GB", 1000000000},
      {"GiB", 1ull << 30}, {"T", 1ull << 40}, {"TB", 1000000000000}, {"TiB", 1ull << 40}};
  for (auto& [suffix, mult] : units) {
    if (n->suffix == suffix) {
      double bytes = n->value * static_cast<double>(mult);
      if (bytes > 1.8e19) return fail(ErrorKind::InvalidInput, "size '{}' is too large", text);
      return static_cast<uint64_t>(std::llround(bytes));
    }
  }
  return fail(ErrorKind::InvalidInput, "invalid size '{}': use a number with an optional unit such as 512MiB, 2GiB or 10G",
              text);
}

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  auto n = split_number(text, "duration");
  if (!n) return std::unexpected(n.error());
  static constexpr std::pair<std::string_view, double> units[] = {
      {"ms", 1}, {"s", 1000}, {"", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  for (auto& [suffix, mult] : units) {
    if (n->suffix == suffix) return std::chrono::milliseconds(static_cast<int64_t>(std::llround(n->value * mult)));
  }
  return fail(ErrorKind::InvalidInput, "invalid duration '{}': use a number with a unit: ms, s, m, h or d (e.g. 30m)",
              text);
}

std::string format_size(uint64_t bytes) {
  static constexpr const char* names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int i = 0;
  while (v >= 1024 && i < 4) {
    v /= 1024;
    ++i;
  }
  if (i == 0) return fmt::format("{}B", bytes);
  return std::fmod(v, 1.0) == 0 ? fmt::format("{:.0f}{}", v, names[i]) : fmt::format("{:.1f}{}", v, names[i]);
}

std::string format_duration(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms == 0) return "0";
  if (ms % 86400000 == 0) return fmt::format("{}d", ms / 86400000);
  if (ms % 3600000 == 0) return fmt::format("{}h", ms / 3600000);
  if (ms % 60000 == 0) return fmt::format("{}m", ms / 60000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

}  // namespace moat
