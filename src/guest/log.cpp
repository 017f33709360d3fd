#include "guest/log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <string>

namespace moat::guest {
namespace {
int g_log_fd = STDERR_FILENO;
}

bool open_log(const char* path) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) return false;
  if (g_log_fd != STDERR_FILENO) ::close(g_log_fd);
  g_log_fd = fd;
  return true;
}

void log_line(std::string_view line) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm {};
  gmtime_r(&ts.tv_sec, &tm);
  char stamp[64];
  size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(stamp, n);
  char frac[32];
  snprintf(frac, sizeof frac, ".%03ldZ moat-init[%d]: ", ts.tv_nsec / 1000000, static_cast<int>(getpid()));
  out += frac;
  out += line;
  out += '\n';
  // One write() per line so lines from concurrent connection processes do not interleave.
  [[maybe_unused]] ssize_t r = ::write(g_log_fd, out.data(), out.size());
}

}  // namespace moat::guest
