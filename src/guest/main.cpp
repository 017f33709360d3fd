// moat-init: PID 1 inside every sandbox. Reaps zombies, forwards signals and serves the host over the
// framed protocol of wire/frame.h on a unix socket. Static; standard library + wire only.
// Called as newuidmap or newgidmap it is, on the host, runsc's id-mapping helper (guest/host_idmap.h).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "guest/host_idmap.h"
#include "guest/log.h"
#include "guest/server.h"

namespace {

int usage(const char* why) {
  if (why) fprintf(stderr, "moat-init: %s\n", why);
  fprintf(stderr, "usage: moat-init --listen /run/moat/init.sock [--log /run/moat/init.log] [--host-peers-only]\n"
                  "                 [--proxy-to /run/moat-gateway/gateway.sock [--proxy-max-connections N]]\n"
                  "  --proxy-to               relay TCP connections to 127.0.0.1:3128 to the host's egress gateway at this socket\n"
                  "  --proxy-max-connections  relays open at once (default 4096); more are refused with 503\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view called = argc > 0 ? argv[0] : "";
  if (auto slash = called.rfind('/'); slash != std::string_view::npos) called.remove_prefix(slash + 1);
  if (called == "newuidmap") return moat::guest::run_host_idmap(moat::guest::IdMapKind::Uid, argc, argv);
  if (called == "newgidmap") return moat::guest::run_host_idmap(moat::guest::IdMapKind::Gid, argc, argv);
  // The stdio numbers must be taken, so pipes created later never land on 0-2.
  for (int fd = 0; fd < 3; ++fd) {
    if (fcntl(fd, F_GETFD) < 0) {
      int n = open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) {
        dup2(n, fd);
        close(n);
      }
    }
  }
  moat::guest::ServerOptions opts;
  std::string log_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--listen") {
      const char* v = value();
      if (!v) return usage("--listen needs a path");
      opts.listen_path = v;
    } else if (a == "--log") {
      const char* v = value();
      if (!v) return usage("--log needs a path");
      log_path = v;
    } else if (a == "--proxy-to") {
      const char* v = value();
      if (!v) return usage("--proxy-to needs the gateway socket's path");
      opts.proxy.gateway_socket = v;
    } else if (a == "--proxy-max-connections") {
      const char* v = value();
      char* end = nullptr;
      unsigned long n = v ? strtoul(v, &end, 10) : 0;
      if (!v || *end != '\0' || n == 0 || n > 65536) return usage("--proxy-max-connections needs a number from 1 to 65536");
      opts.proxy.max_connections = n;
    } else if (a == "--host-peers-only") {
      opts.host_peers_only = true;
    } else if (a == "--help" || a == "-h") {
      usage(nullptr);
      return 0;
    } else {
      return usage(("unknown argument '" + a + "'").c_str());
    }
  }
  if (opts.listen_path.empty()) return usage("--listen is required");
  if (!log_path.empty() && !moat::guest::open_log(log_path.c_str()))
    fprintf(stderr, "moat-init: cannot open log '%s': %s; logging to stderr\n", log_path.c_str(), strerror(errno));
  return moat::guest::run_server(opts);
}
