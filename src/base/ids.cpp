#include "base/ids.h"

#include <sys/random.h>

namespace moat {
std::string random_hex_id(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0) got += n;
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(hex[c >> 4]);
    out.push_back(hex[c & 15]);
  }
  return out;
}

Status validate_name(std::string_view what, std::string_view name) {
  auto ok_char = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'; };
  bool ok = !name.empty() && name.size() <= 63 && name[0] != '-' && name[0] != '.' && name[0] != '_';
  for (char c : name) ok = ok && ok_char(c);
  if (!ok) {
    return fail(ErrorKind::InvalidInput,
                "invalid {} name '{}': use 1-63 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit",
                what, name);
  }
  return {};
}
}  // namespace moat
