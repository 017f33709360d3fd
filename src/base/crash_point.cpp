#include "base/crash_point.h"

#include <atomic>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace moat {

namespace {

struct Armed {
  std::string point;  // empty: not armed
  long nth = 1;
  std::atomic<long> seen{0};
};

Armed& armed() {
  static Armed* a = [] {
    auto* x = new Armed;  // never freed: read until the process ends
    const char* env = std::getenv("MOAT_CRASH_AT");
    if (env == nullptr || *env == '\0') return x;
    std::string_view v(env);
    if (auto colon = v.rfind(':'); colon != std::string_view::npos) {
      long n = 0;
      auto tail = v.substr(colon + 1);
      if (auto [p, ec] = std::from_chars(tail.data(), tail.data() + tail.size(), n);
          ec == std::errc() && p == tail.data() + tail.size() && n > 0) {
        x->nth = n;
        v = v.substr(0, colon);
      }
    }
    x->point = std::string(v);
    return x;
  }();
  return *a;
}

}  // namespace

void crash_point(std::string_view point) {
  Armed& a = armed();
  if (a.point.empty() || a.point != point) return;
  if (a.seen.fetch_add(1) + 1 != a.nth) return;
  static constexpr char kMsg[] = "moatd: MOAT_CRASH_AT reached, killing this process\n";
  [[maybe_unused]] auto n = ::write(2, kMsg, sizeof kMsg - 1);
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();
}

}  // namespace moat
