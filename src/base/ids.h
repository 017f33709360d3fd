#pragma once
#include <string>

#include "base/result.h"

namespace moat {
// A random lowercase hex id of `bytes` random bytes (from getrandom).
std::string random_hex_id(size_t bytes = 8);
// Names of sandboxes, images, agents: 1-63 of [a-z0-9_.-], starting with a letter or digit.
// These names become directory and cgroup names, so they are checked before any use.
Status validate_name(std::string_view what, std::string_view name);
}  // namespace moat
