// make bench, egress part: the gateway measured against a direct connection to the same local
// upstream, in the same run, written to its own section of docs/benchmarks.md.
//
//   throughput   bytes through a CONNECT tunnel opened on a sandbox's gateway socket (the path
//                moat-init's relay takes) vs the same bytes over a direct TCP connection, both ways:
//                up = client -> raw sink upstream, down = GET /bytes/N from an HTTP upstream
//   CONNECT      connect to the gateway socket + CONNECT -> 200 (the gateway's policy check and its
//                own TCP connect upstream) vs a direct TCP connect to the same upstream
//   inside       (informational) busybox wget inside the sandbox through moat-init's relay and the
//                gateway's plain HTTP forwarding vs the same wget on the host straight to the upstream
//
// Gateway and direct runs alternate, so load from other programs on the machine falls on both alike.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "api/client.h"
#include "bench_support.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "support/temp_dir.h"
#include "support/upstream_server.h"

using namespace moat;
using namespace moat::bench;
using namespace std::chrono;
namespace fs = std::filesystem;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr size_t kIo = 256 * 1024;  // the client's read/write size, the same on both paths

// `moat exec` through the real CLI (its exit status is the command's); returns the wall time in ms.
double cli_exec(const Daemon& d, const std::string& name, std::vector<std::string> argv) {
  std::vector<std::string> cmd{(kBuild / "moat").string(), "--state-dir", d.state().string(), "exec", name, "--"};
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  auto t0 = steady_clock::now();
  auto r = must(run_process(cmd), "moat exec");
  double ms = ms_since(t0);
  if (!r.ok()) die(fmt::format("moat exec {} failed ({}): {}", argv.back(), r.exit_code, r.err));
  return ms;
}

// --- plain sockets, blocking, the same code for both paths ---

UniqueFd tcp_connect(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!fd || connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    die(fmt::format("connect 127.0.0.1:{}: {}", port, strerror(errno)));
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die(fmt::format("send: {}", strerror(errno)));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads up to and including the blank line that ends an HTTP head; bytes after it go to `rest`.
std::string read_head(int fd, std::string* rest = nullptr) {
  std::string got;
  char buf[4096];
  for (;;) {
    auto end = got.find("\r\n\r\n");
    if (end != std::string::npos) {
      if (rest) *rest = got.substr(end + 4);
      return got.substr(0, end + 4);
    }
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die(fmt::format("connection closed before an HTTP head; got {:?}", got));
    got.append(buf, static_cast<size_t>(n));
  }
}

// A tunnel through the sandbox's gateway socket: what moat-init's relay does for a process inside,
// with the relay's socket options (src/guest/proxy_listener.cpp: a 1 MiB send buffer).
UniqueFd gateway_tunnel(const fs::path& sock, uint16_t port) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int sndbuf = 1 << 20;
  if (fd) setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, sock.c_str(), sizeof a.sun_path - 1);
  if (!fd || connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    die(fmt::format("connect {}: {}", sock.string(), strerror(errno)));
  auto req = fmt::format("CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n", port);
  send_all(fd.get(), req.data(), req.size());
  std::string rest;
  auto head = read_head(fd.get(), &rest);
  if (!head.starts_with("HTTP/1.1 200")) die(fmt::format("CONNECT refused: {}", head));
  if (!rest.empty()) die("bytes after the CONNECT answer");
  return fd;
}

// Sends `bytes`, half-closes, and waits for the far end to close: every byte has reached the sink.
double upload(int fd, uint64_t bytes) {
  static const std::string block(kIo, 'x');  // not 0x16: the tunnel sees no TLS, which the rule allows
  auto t0 = steady_clock::now();
  for (uint64_t left = bytes; left > 0;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, block.size()));
    send_all(fd, block.data(), n);
    left -= n;
  }
  shutdown(fd, SHUT_WR);
  char c;
  ssize_t n;
  while ((n = recv(fd, &c, 1, 0)) < 0 && errno == EINTR) {
  }
  if (n != 0) die("the sink answered");
  return ms_since(t0);
}

// GET /bytes/N and read the whole body.
double download(int fd, uint64_t bytes) {
  std::vector<char> buf(kIo);
  auto t0 = steady_clock::now();
  auto req = fmt::format("GET /bytes/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", bytes);
  send_all(fd, req.data(), req.size());
  std::string rest;
  auto head = read_head(fd, &rest);
  if (!head.starts_with("HTTP/1.1 200")) die(fmt::format("GET /bytes: {}", head));
  uint64_t got = rest.size();
  while (got < bytes) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die(fmt::format("download ended after {} of {} bytes", got, bytes));
    got += static_cast<uint64_t>(n);
  }
  return ms_since(t0);
}

struct Pair {
  std::vector<double> gateway, direct;  // MiB/s per run
  double ratio() const { return median(gateway) / median(direct); }
};

}  // namespace

int run_bench(int argc, char** argv);

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  return run_reporting_failure(run_bench, argc, argv);
}

int run_bench(int argc, char** argv) {
  if (geteuid() != 0) die("run as root (make bench)");
  std::string out_path = argc > 1 ? argv[1] : "docs/benchmarks.md";
  auto env_int = [](const char* name, int dflt) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : dflt;
  };
  const uint64_t kTransferMiB = env_int("MOAT_BENCH_EGRESS_MIB", 1024);
  const int kRuns = env_int("MOAT_BENCH_EGRESS_RUNS", 5);
  const int kConnects = env_int("MOAT_BENCH_EGRESS_CONNECTS", 500);
  const uint64_t kInsideMiB = env_int("MOAT_BENCH_EGRESS_INSIDE_MIB", 256);
  const int kInsideRuns = 3;
  const uint64_t bytes = kTransferMiB << 20;

  testing::UpstreamServer::Options sink_opts;
  sink_opts.mode = testing::UpstreamServer::Mode::Sink;
  testing::UpstreamServer sink(sink_opts);
  testing::UpstreamServer::Options http_opts;
  http_opts.record_requests = false;
  testing::UpstreamServer web(http_opts);

  testing::TempDir state("moat-bench-egress-state");
  fs::permissions(state.path(), fs::perms(0711));
  auto tarball = state.path() / "tiny.tar.gz";
  testing::make_busybox_tarball(tarball);
  // Loopback is refused unless a rule names the address and port; naming the port also lets a
  // tunnel carry plain bytes (these upstreams speak no TLS). The byte budget must not end the run.
  auto config = fmt::format(
      "[daemon]\nidle_timeout = \"0\"\n[sandbox]\nimage = \"tiny\"\ndisk = \"64MiB\"\nmemory = \"128MiB\"\n"
      "[egress]\nallow = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nmax_bytes_per_day = {}\n",
      sink.port(), web.port(), uint64_t{1} << 50);
  Daemon d(state.path(), config);
  d.call("image.import", Json{{"name", "tiny"}, {"path", tarball.string()}});
  const std::string sandbox = "egress";
  d.call("sandbox.create", Json{{"name", sandbox}, {"start", true}});
  auto gw = state.path() / "sandboxes" / sandbox / "egress" / "gw.sock";
  for (int i = 0; i < 100 && !fs::exists(gw); ++i) std::this_thread::sleep_for(20ms);
  if (!fs::exists(gw)) die("no gateway socket at " + gw.string());

  // Throughput, each direction, gateway and direct alternating. One warm-up run of each first.
  Pair up, down;
  for (int i = -1; i < kRuns; ++i) {
    for (bool via_gateway : {true, false}) {
      UniqueFd u = via_gateway ? gateway_tunnel(gw, sink.port()) : tcp_connect(sink.port());
      double ms = upload(u.get(), bytes);
      UniqueFd g = via_gateway ? gateway_tunnel(gw, web.port()) : tcp_connect(web.port());
      double ms_down = download(g.get(), bytes);
      if (i < 0) continue;
      (via_gateway ? up.gateway : up.direct).push_back(kTransferMiB / (ms / 1000));
      (via_gateway ? down.gateway : down.direct).push_back(kTransferMiB / (ms_down / 1000));
      std::fprintf(stderr, "run %d %s: up %.0f MiB/s, down %.0f MiB/s\n", i, via_gateway ? "gateway" : "direct ",
                   kTransferMiB / (ms / 1000), kTransferMiB / (ms_down / 1000));
    }
  }
  std::fprintf(stderr, "throughput up: gateway %.0f, direct %.0f MiB/s (%.2fx); down: gateway %.0f, direct %.0f MiB/s (%.2fx)\n",
               median(up.gateway), median(up.direct), up.ratio(), median(down.gateway), median(down.direct), down.ratio());

  // CONNECT setup latency vs a direct TCP connect to the same upstream.
  std::vector<double> setup_gw, setup_direct;
  for (int i = -50; i < kConnects; ++i) {
    auto t0 = steady_clock::now();
    { UniqueFd t = gateway_tunnel(gw, sink.port()); }
    double gw_ms = ms_since(t0);
    t0 = steady_clock::now();
    { UniqueFd t = tcp_connect(sink.port()); }
    double direct_ms = ms_since(t0);
    // Apart, so that one tunnel's teardown (its audit record, written by another thread) does not
    // overlap the next setup: the figure is the latency of one setup, not of a stream of them.
    std::this_thread::sleep_for(2ms);
    if (i < 0) continue;
    setup_gw.push_back(gw_ms);
    setup_direct.push_back(direct_ms);
  }
  double added_p50 = percentile(setup_gw, 0.5) - percentile(setup_direct, 0.5);
  std::fprintf(stderr, "CONNECT setup p50 %.3f ms (p99 %.3f), direct connect p50 %.3f ms (p99 %.3f): added %.3f ms\n",
               percentile(setup_gw, 0.5), percentile(setup_gw, 0.99), percentile(setup_direct, 0.5),
               percentile(setup_direct, 0.99), added_p50);

  // Informational: a real client inside the sandbox (busybox wget through HTTP_PROXY, so moat-init's
  // relay and the gateway's plain HTTP forwarding) vs the same binary on the host, straight to the
  // upstream. Each figure has the cost of starting the command (an exec of `true`) taken off.
  auto url = fmt::format("http://127.0.0.1:{}/bytes/{}", web.port(), kInsideMiB << 20);
  std::vector<std::string> wget{"wget", "-q", "-O", "/dev/null", url};
  std::vector<double> exec_true, inside, host_true, host;
  for (int i = 0; i < 5; ++i) {
    exec_true.push_back(cli_exec(d, sandbox, {"true"}));
    auto t0 = steady_clock::now();
    must(run_checked({"env", "-u", "http_proxy", "-u", "HTTP_PROXY", "/bin/busybox", "true"}), "busybox true");
    host_true.push_back(ms_since(t0));
  }
  for (int i = 0; i < kInsideRuns; ++i) {
    inside.push_back(kInsideMiB / ((cli_exec(d, sandbox, wget) - median(exec_true)) / 1000));
    auto t0 = steady_clock::now();
    must(run_checked({"env", "-u", "http_proxy", "-u", "HTTP_PROXY", "/bin/busybox", "wget", "-q", "-O", "/dev/null", url}),
         "host wget");
    host.push_back(kInsideMiB / ((ms_since(t0) - median(host_true)) / 1000));
  }
  std::fprintf(stderr, "inside the sandbox: wget %.0f MiB/s through the relay, %.0f MiB/s on the host directly\n",
               median(inside), median(host));

  std::string section = fmt::format(
      "## Egress gateway\n\n"
      "Measured by `make bench` (`moat-bench-egress docs/benchmarks.md`), {}: a real moatd and one running\n"
      "sandbox, whose gateway socket a host client uses exactly as moat-init's relay does; upstreams are\n"
      "local servers on 127.0.0.1. Gateway and direct runs alternate in the same run.\n\n"
      "| figure | through the gateway | direct (baseline) | ratio | target | |\n"
      "| --- | --- | --- | --- | --- | --- |\n"
      "| throughput up: {} MiB into a CONNECT tunnel to a raw sink (median of {}) | {:.0f} MiB/s | {:.0f} MiB/s | {:.2f}× | ≥ 0.8× | {} |\n"
      "| throughput down: GET of {} MiB through a CONNECT tunnel (median of {}) | {:.0f} MiB/s | {:.0f} MiB/s | {:.2f}× | ≥ 0.8× | {} |\n"
      "| CONNECT setup: socket connect + `CONNECT` to `200` (p50 of {}) | {:.3f} ms (p99 {:.3f}) | TCP connect {:.3f} ms (p99 {:.3f}) | added {:.3f} ms | added p50 ≤ 0.5 ms | {} |\n"
      "| informational: busybox `wget` of {} MiB inside the sandbox, via moat-init's relay and HTTP forwarding (median of {}) | {:.0f} MiB/s | `wget` on the host {:.0f} MiB/s | {:.2f}× | | |\n\n"
      "Notes:\n"
      "- Throughput counts from the first byte sent to the last byte received (up: until the sink, having\n"
      "  read everything, closed, which the tunnel passes back as a half-close). The client reads and writes\n"
      "  {} KiB at a time on both paths; on the gateway socket it sets the send buffer moat-init's relay\n"
      "  sets (1 MiB). The tunnel carries plain bytes because the rule allowing the upstream names its\n"
      "  port; the ClientHello check still runs on the first bytes. Through the gateway three busy threads\n"
      "  (client, gateway, upstream) share the cores where a direct connection has two, and uploads make the\n"
      "  gateway do the loopback TCP send the direct client does, so the up ratio falls as other load rises.\n"
      "- CONNECT setup includes the gateway's policy check and its own TCP connect to the upstream; the\n"
      "  baseline is the bare TCP handshake to the same upstream. Samples are 2 ms apart, so that one\n"
      "  tunnel's teardown and audit record do not overlap the next setup.\n"
      "- The in-sandbox figure has the cost of starting the command (`moat exec … true`, `busybox true`)\n"
      "  taken off. It adds a second loopback hop (wget to moat-init's relay, inside the sandbox's 1-CPU\n"
      "  quota) and goes through the gateway's plain HTTP forwarding rather than a tunnel.\n",
      machine_line(), kTransferMiB, kRuns,
      median(up.gateway), median(up.direct), up.ratio(), verdict(up.ratio() >= 0.8), kTransferMiB, kRuns,
      median(down.gateway), median(down.direct), down.ratio(), verdict(down.ratio() >= 0.8), kConnects,
      percentile(setup_gw, 0.5), percentile(setup_gw, 0.99), percentile(setup_direct, 0.5),
      percentile(setup_direct, 0.99), added_p50, verdict(added_p50 <= 0.5), kInsideMiB, kInsideRuns,
      median(inside), median(host), median(inside) / median(host), kIo / 1024);

  write_section(out_path, "## Egress gateway", section);
  std::printf("%s", section.c_str());
  return 0;
}
