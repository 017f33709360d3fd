#pragma once
// moatd's log: spdlog to stderr (journald/the terminal pick it up). Components log through these
// helpers so the sink is chosen in one place.
#include <spdlog/spdlog.h>

namespace moat::log {
using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;
void init(bool verbose);
}  // namespace moat::log
