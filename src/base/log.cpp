#include "base/log.h"

namespace moat::log {
void init(bool verbose) {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);
}
}  // namespace moat::log
