#include "egress/injection.h"

#include <sodium.h>

namespace moat::egress {

void swap_placeholders(std::string& header_value, const Credentials& creds, std::vector<std::string>& used) {
  for (const auto& c : creds) {
    if (c.placeholder.empty()) continue;
    bool any = false;
    for (size_t at = header_value.find(c.placeholder); at != std::string::npos;
         at = header_value.find(c.placeholder, at + c.value.size())) {
      header_value.replace(at, c.placeholder.size(), c.value.view());
      any = true;
    }
    if (any) used.push_back(c.name);
  }
}

void wipe_string(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
  s.clear();
}

}  // namespace moat::egress
