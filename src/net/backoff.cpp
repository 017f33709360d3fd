#include "net/backoff.h"

#include <algorithm>
#include <cmath>

namespace moat::net {

std::chrono::milliseconds Backoff::ceiling(int failures) const {
  double first = static_cast<double>(std::max<int64_t>(initial.count(), 1));
  double top = static_cast<double>(std::max<int64_t>(cap.count(), 1));
  // Computed in double and clamped before converting: factor^n overflows any integer long before
  // anyone waits that long.
  double d = first * std::pow(std::max(factor, 1.0), std::clamp(failures - 1, 0, 1000));
  return std::chrono::milliseconds(static_cast<int64_t>(std::min(d, top)));
}

std::chrono::milliseconds Backoff::delay(int failures, std::mt19937_64& rng) const {
  auto top = ceiling(failures);
  double share = std::clamp(jitter, 0.0, 1.0);
  if (share == 0.0) return top;
  std::uniform_real_distribution<double> cut(0.0, share);
  return std::chrono::milliseconds(static_cast<int64_t>(static_cast<double>(top.count()) * (1.0 - cut(rng))));
}

std::chrono::milliseconds Backoff::delay(int failures) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return delay(failures, rng);
}

bool Backoff::allows_retry(int failures, std::chrono::milliseconds elapsed, std::chrono::milliseconds next_wait) const {
  if (max_attempts > 0 && failures >= max_attempts) return false;
  if (deadline.count() > 0 && elapsed + next_wait > deadline) return false;
  return true;
}

}  // namespace moat::net
