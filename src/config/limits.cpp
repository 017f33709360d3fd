#include "config/limits.h"

#include <cmath>

#include "config/units.h"

namespace moat {

namespace {

std::string show(const LimitRange& r, double v) {
  if (r.bytes && v >= 0 && v == std::floor(v) && v < 18446744073709551616.0) {
    auto s = format_size(static_cast<uint64_t>(v));
    // "976.6KiB" is rounded: say the exact number of bytes too.
    if (auto back = parse_size(s); !back || *back != static_cast<uint64_t>(v)) s += fmt::format(" ({} bytes)", static_cast<uint64_t>(v));
    return s;
  }
  return fmt::format("{}", v);
}

std::string prefix(std::string_view field) { return field.empty() ? std::string() : fmt::format("{}: ", field); }

}  // namespace

std::string limit_range_text(Limit which) {
  const auto& r = limit_range(which);
  auto text = fmt::format("{} to {}", show(r, r.min), show(r, r.max));
  if (!r.unit.empty()) text += fmt::format(" {}", r.unit);
  return text;
}

Status check_limit(Limit which, double value, std::string_view field) {
  const auto& r = limit_range(which);
  // Written so that NaN fails too.
  if (!(value >= r.min && value <= r.max))
    return fail(ErrorKind::InvalidInput, "{}{} is out of range; allowed {}", prefix(field), show(r, value),
                limit_range_text(which));
  if (r.whole && value != std::floor(value))
    return fail(ErrorKind::InvalidInput, "{}{} is not a whole number; allowed {}", prefix(field), show(r, value),
                limit_range_text(which));
  return {};
}

namespace {

Result<std::optional<double>> read_value(const Json& obj, std::string_view key, Limit which) {
  std::string k(key);
  if (!obj.is_object() || !obj.contains(k) || obj[k].is_null()) return std::optional<double>{};
  const auto& r = limit_range(which);
  const Json& v = obj[k];
  double value = 0;
  if (v.is_number_unsigned()) {
    value = static_cast<double>(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    value = static_cast<double>(v.get<int64_t>());
  } else if (v.is_number_float()) {
    value = v.get<double>();
  } else if (v.is_string() && r.bytes) {
    auto s = parse_size(v.get<std::string>());
    if (!s) return wrap(s.error(), k);
    value = static_cast<double>(*s);
  } else {
    return fail(ErrorKind::InvalidInput, "{}: expected {}; allowed {}", k,
                r.bytes ? "a size such as 2GiB or a number of bytes" : "a number", limit_range_text(which));
  }
  if (auto st = check_limit(which, value, k); !st) return std::unexpected(st.error());
  return std::optional<double>(value);
}

}  // namespace

Status read_limit(const Json& obj, std::string_view key, Limit which, std::optional<uint64_t>& out) {
  if (!limit_range(which).whole)
    return fail(ErrorKind::Internal, "{}: read as a whole number but the limit is fractional", key);
  auto v = read_value(obj, key, which);
  if (!v) return std::unexpected(v.error());
  if (*v) out = static_cast<uint64_t>(**v);  // checked: whole, in range, below 2^53
  return {};
}

Status read_limit(const Json& obj, std::string_view key, Limit which, std::optional<double>& out) {
  auto v = read_value(obj, key, which);
  if (!v) return std::unexpected(v.error());
  if (*v) out = **v;
  return {};
}

Status read_io_limits(const Json& obj, IoThrottle<std::optional<uint64_t>>& out) {
  for (const auto& f : io_fields<std::optional<uint64_t>>())
    if (auto st = read_limit(obj, limit_range(f.limit).name, f.limit, out.*f.field); !st) return st;
  return {};
}

void put_io_limits(Json& obj, const IoThrottle<std::optional<uint64_t>>& io) {
  for (const auto& f : io_fields<std::optional<uint64_t>>())
    if (io.*f.field) obj[std::string(limit_range(f.limit).name)] = *(io.*f.field);
}

void put_io_limits(Json& obj, const IoThrottle<uint64_t>& io) {
  for (const auto& f : io_fields<uint64_t>()) obj[std::string(limit_range(f.limit).name)] = io.*f.field;
}

IoThrottle<uint64_t> io_or(const IoThrottle<std::optional<uint64_t>>& given, const IoThrottle<uint64_t>& defaults) {
  return {given.read_bps.value_or(defaults.read_bps), given.write_bps.value_or(defaults.write_bps),
          given.read_iops.value_or(defaults.read_iops), given.write_iops.value_or(defaults.write_iops)};
}

}  // namespace moat
