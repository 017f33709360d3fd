#include "router/pairing.h"

#include <sys/random.h>

#include <cctype>

namespace moat::router {

namespace {
constexpr std::string_view kAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";
}

std::string new_pairing_code() {
  // Reject bytes at or above the largest multiple of the alphabet size, so every letter is equally likely.
  constexpr unsigned kLimit = 256 - 256 % kAlphabet.size();
  std::string code;
  unsigned char buf[32];
  while (code.size() < 8) {
    ssize_t n = getrandom(buf, sizeof buf, 0);
    for (ssize_t i = 0; i < n && code.size() < 8; ++i)
      if (buf[i] < kLimit) code.push_back(kAlphabet[buf[i] % kAlphabet.size()]);
  }
  return code;
}

std::string normalize_pairing_code(std::string_view code) {
  std::string out;
  for (char c : code) {
    if (c == ' ' || c == '-') continue;
    out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return out;
}

}  // namespace moat::router
