// constant_time_equal (src/base/constant_time.h), the one comparison of a presented secret with the
// real one: equal exactly when the bytes are, whatever the lengths and contents.
#include "base/constant_time.h"

#include <gtest/gtest.h>

#include <string>

namespace moat {
namespace {

TEST(ConstantTime, EqualExactlyWhenTheBytesAre) {
  EXPECT_TRUE(constant_time_equal("s3cret-token", "s3cret-token"));
  EXPECT_TRUE(constant_time_equal("", ""));
  std::string a(4096, 'k');
  EXPECT_TRUE(constant_time_equal(a, std::string(4096, 'k')));

  EXPECT_FALSE(constant_time_equal("s3cret-token", "S3cret-token"));  // first byte
  EXPECT_FALSE(constant_time_equal("s3cret-token", "s3cret-tokeN"));  // last byte
  EXPECT_FALSE(constant_time_equal("s3cret-token", "s3cret-toke"));   // a prefix
  EXPECT_FALSE(constant_time_equal("s3cret-toke", "s3cret-token"));
  EXPECT_FALSE(constant_time_equal("", "x"));
  EXPECT_FALSE(constant_time_equal("x", ""));
  std::string b = a;
  b[2048] = 'j';
  EXPECT_FALSE(constant_time_equal(a, b));
}

// Bytes, not C strings: NULs count and nothing stops at them.
TEST(ConstantTime, NulAndHighBytesAreComparedLikeAnyOther) {
  using namespace std::string_literals;
  EXPECT_TRUE(constant_time_equal("a\0b"s, "a\0b"s));
  EXPECT_FALSE(constant_time_equal("a\0b"s, "a\0c"s));
  EXPECT_FALSE(constant_time_equal("a\0"s, "a"s));
  EXPECT_FALSE(constant_time_equal("\0"s, ""s));
  EXPECT_TRUE(constant_time_equal("\xff\x00\x80"s, "\xff\x00\x80"s));
  EXPECT_FALSE(constant_time_equal("\xff\x00\x80"s, "\xff\x00\x81"s));
}

}  // namespace
}  // namespace moat
