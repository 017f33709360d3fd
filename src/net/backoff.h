#pragma once
// The one backoff policy: how long to wait before trying again after a failure, and when to stop.
// Used by everything that retries something remote or fallible — the model providers' HTTP calls,
// the router's turns and outbox deliveries — so each of those is a few numbers, not a loop of its own.
//
//   delay(n) = min(cap, initial * factor^(n-1)), minus a random share of up to `jitter` of it,
//
// for the n-th failure in a row (n >= 1). Jitter spreads out callers that failed together (many
// agents hitting one rate-limited provider); a policy without it (jitter 0) is exact, which the
// router's stored retry times rely on. Polling for a local condition (is moat-init listening yet?)
// is not a backoff and does not use this: it looks often until a deadline.
#include <chrono>
#include <cstdint>
#include <random>

namespace moat::net {

struct Backoff {
  std::chrono::milliseconds initial{500};  // the wait after the first failure (at least 1 ms)
  double factor = 2.0;                     // growth per further failure (at least 1)
  std::chrono::milliseconds cap{30000};    // no single wait is longer
  double jitter = 0.0;                     // 0..1: each wait is reduced by a random share up to this
  int max_attempts = 0;                    // attempts in all, the first included; 0 = no limit
  std::chrono::milliseconds deadline{0};   // time from the first attempt after which no retry starts; 0 = none

  // The wait after `failures` failures in a row (1 = after the first), jitter drawn from `rng`.
  std::chrono::milliseconds delay(int failures, std::mt19937_64& rng) const;
  // The same with a per-thread generator.
  std::chrono::milliseconds delay(int failures) const;
  // The wait before jitter: the longest delay() can return.
  std::chrono::milliseconds ceiling(int failures) const;

  // Whether another attempt may follow `failures` failed ones, `elapsed` after the first attempt
  // began, if it would start after `next_wait`: false once max_attempts attempts were made or the
  // retry would start after the deadline.
  bool allows_retry(int failures, std::chrono::milliseconds elapsed = {},
                    std::chrono::milliseconds next_wait = {}) const;
};

}  // namespace moat::net
