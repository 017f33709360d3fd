// The one backoff policy (src/net/backoff.h): exact without jitter, bounded with it, and the stop
// conditions (attempts, deadline).
#include "net/backoff.h"

#include <gtest/gtest.h>

using namespace moat::net;
using std::chrono::milliseconds;

TEST(Backoff, GrowsByItsFactorUpToTheCap) {
  Backoff b{.initial = milliseconds(500), .factor = 2.0, .cap = milliseconds(60000)};
  EXPECT_EQ(b.delay(1), milliseconds(500));
  EXPECT_EQ(b.delay(2), milliseconds(1000));
  EXPECT_EQ(b.delay(3), milliseconds(2000));
  EXPECT_EQ(b.delay(8), milliseconds(60000));  // 500 * 2^7 = 64000, capped
  EXPECT_EQ(b.delay(100000), milliseconds(60000));  // no overflow however long it fails
  Backoff slow{.initial = milliseconds(100), .factor = 1.5, .cap = milliseconds(1000)};
  EXPECT_EQ(slow.delay(3), milliseconds(225));
  // Nonsense is made safe rather than a busy loop: at least 1 ms, a factor below 1 is taken as 1.
  Backoff zero{.initial = milliseconds(0), .factor = 0.5, .cap = milliseconds(0)};
  EXPECT_EQ(zero.delay(1), milliseconds(1));
  EXPECT_EQ(zero.delay(5), milliseconds(1));
}

TEST(Backoff, JitterOnlyShortensAndStaysWithinItsShare) {
  Backoff b{.initial = milliseconds(1000), .factor = 2.0, .cap = milliseconds(30000), .jitter = 0.5};
  std::mt19937_64 rng(42);
  milliseconds lo = milliseconds::max(), hi = milliseconds::zero();
  for (int i = 0; i < 2000; ++i) {
    auto d = b.delay(2, rng);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_GE(lo, milliseconds(1000));  // never below half of 2000
  EXPECT_LE(hi, milliseconds(2000));  // never above the ceiling
  EXPECT_LT(lo, milliseconds(1100));  // and it does spread over the range
  EXPECT_GT(hi, milliseconds(1900));
  EXPECT_EQ(b.ceiling(2), milliseconds(2000));
}

TEST(Backoff, StopsAfterMaxAttemptsOrTheDeadline) {
  Backoff b{.initial = milliseconds(100), .max_attempts = 3};
  EXPECT_TRUE(b.allows_retry(1));
  EXPECT_TRUE(b.allows_retry(2));
  EXPECT_FALSE(b.allows_retry(3));  // three attempts made: the first and two retries
  Backoff unlimited{};
  EXPECT_TRUE(unlimited.allows_retry(1000000));
  Backoff timed{.initial = milliseconds(100), .deadline = milliseconds(1000)};
  EXPECT_TRUE(timed.allows_retry(5, milliseconds(800), milliseconds(200)));
  EXPECT_FALSE(timed.allows_retry(5, milliseconds(800), milliseconds(201)));  // would start too late
}
