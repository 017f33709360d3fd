#pragma once
// Wall-clock time as integers, the form the store keeps (Unix epoch, UTC).
#include <chrono>
#include <cstdint>

namespace moat::clock {

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace moat::clock
