#pragma once
// Human units in config and flags: sizes ("10GiB", "512M", "1073741824") and durations ("30m", "10s").
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat {

Result<uint64_t> parse_size(std::string_view text);
Result<std::chrono::milliseconds> parse_duration(std::string_view text);
std::string format_size(uint64_t bytes);
std::string format_duration(std::chrono::milliseconds d);

}  // namespace moat
