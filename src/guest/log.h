#pragma once
// moat-init's log: one line per event, to the --log file or stderr. Never throws, never blocks for long.
#include <fmt/format.h>

#include <string_view>

namespace moat::guest {

// Sends later log lines to `path` (appended); returns false when it cannot be opened (stderr is kept).
bool open_log(const char* path);
void log_line(std::string_view line);

template <class... Args>
void logf(fmt::format_string<Args...> f, Args&&... args) {
  try {
    log_line(fmt::format(f, std::forward<Args>(args)...));
  } catch (...) {
  }
}

}  // namespace moat::guest
