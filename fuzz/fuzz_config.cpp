// moat.toml: any text must give a Config or one error, never a crash, a leak or undefined behaviour
// (this target found toml++ 3.3's U+FE7C..U+FEFE bug, now refused before parsing).
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  (void)moat::parse_config(s, "fuzz.toml");
  return 0;
}
