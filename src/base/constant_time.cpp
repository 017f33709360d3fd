#include "base/constant_time.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>

namespace moat {

namespace {
std::array<unsigned char, SHA256_DIGEST_LENGTH> digest(std::string_view s) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> d{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}
}  // namespace

bool constant_time_equal(std::string_view a, std::string_view b) {
  auto da = digest(a), db = digest(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

}  // namespace moat
