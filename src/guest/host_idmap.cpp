#include "guest/host_idmap.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace moat::guest {
namespace {

std::optional<uint64_t> number(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

int refuse(const char* name, const std::string& why) {
  fprintf(stderr, "%s (moat-init): %s\n", name, why.c_str());
  return 1;
}

}  // namespace

int run_host_idmap(IdMapKind kind, int argc, char** argv) {
  const char* name = kind == IdMapKind::Uid ? "newuidmap" : "newgidmap";
  const char* env_name = kind == IdMapKind::Uid ? "MOAT_IDMAP_UID_RANGE" : "MOAT_IDMAP_GID_RANGE";
  if (argc < 5 || (argc - 2) % 3 != 0) return refuse(name, "usage: PID INSIDE OUTSIDE COUNT [INSIDE OUTSIDE COUNT]...");
  const char* allowed_text = getenv(env_name);
  if (!allowed_text) return refuse(name, std::string(env_name) + " is not set: only moatd starts runsc with this helper");
  std::string_view allowed(allowed_text);
  auto colon = allowed.find(':');
  auto first = colon == std::string_view::npos ? std::nullopt : number(allowed.substr(0, colon));
  auto count = colon == std::string_view::npos ? std::nullopt : number(allowed.substr(colon + 1));
  if (!first || !count || *count == 0) return refuse(name, std::string(env_name) + " is not FIRST:COUNT");
  auto pid = number(argv[1]);
  if (!pid || *pid == 0 || *pid > 4194304) return refuse(name, std::string("not a process id: ") + argv[1]);

  std::string map;
  for (int i = 2; i + 2 < argc; i += 3) {
    auto inside = number(argv[i]), outside = number(argv[i + 1]), n = number(argv[i + 2]);
    if (!inside || !outside || !n || *n == 0 || *inside + *n > (1ull << 32) || *outside + *n > (1ull << 32))
      return refuse(name, std::string("not a mapping: ") + argv[i] + " " + argv[i + 1] + " " + argv[i + 2]);
    // The whole point: the sandbox's namespaces may hold its own ids and nothing else of the host's.
    if (*outside < *first || *outside + *n > *first + *count)
      return refuse(name, std::string("host ids ") + argv[i + 1] + "+" + argv[i + 2] + " are outside the sandbox's " +
                              allowed_text);
    map += std::string(argv[i]) + " " + argv[i + 1] + " " + argv[i + 2] + "\n";
  }
  std::string path = "/proc/" + std::to_string(*pid) + (kind == IdMapKind::Uid ? "/uid_map" : "/gid_map");
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return refuse(name, "open " + path + ": " + strerror(errno));
  // The kernel takes a map in one write only.
  ssize_t w = write(fd, map.data(), map.size());
  int err = errno;
  close(fd);
  if (w != static_cast<ssize_t>(map.size())) return refuse(name, "write " + path + ": " + strerror(err));
  return 0;
}

}  // namespace moat::guest
