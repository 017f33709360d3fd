// Real clients inside a real Debian sandbox, through the gateway: curl, Python's urllib, git and
// apt-get against local servers on the host (127.0.0.2, which the sandbox's NO_PROXY does not cover).
#include <gtest/gtest.h>

#include <fstream>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "support/moat_env.h"
#include "support/test_ca.h"
#include "support/upstream_server.h"

using namespace moat;
using namespace moat::testing;
namespace fs = std::filesystem;

namespace {

void sh(const std::string& script) {
  auto r = run_process({"/bin/sh", "-c", script});
  ASSERT_TRUE(r && r->exit_code == 0) << script << "\n" << (r ? r->err : r.error().message);
}

// Serves the files under `root` (GET and HEAD), 404 for anything else.
UpstreamServer::Handler file_handler(fs::path root) {
  return [root](const RecordedRequest& req, ResponseWriter& w) {
    auto rel = req.path();
    if (rel.find("..") != std::string::npos) return w.send(HttpResponse::text(400, "no\n"));
    auto file = root / rel.substr(1);
    auto data = read_file(file);
    if (rel.ends_with('/') || !data) return w.send(HttpResponse::text(404, "not found\n"));
    HttpResponse r{200, {{"Content-Type", "application/octet-stream"}}, *data, false};
    w.send(r);
  };
}

// A flat apt repository with one package, moat-hello, whose /usr/local/bin/moat-hello says hello.
void make_apt_repo(const fs::path& repo, const fs::path& scratch) {
  auto pkg = scratch / "pkg";
  fs::create_directories(pkg / "DEBIAN");
  fs::create_directories(pkg / "usr/local/bin");
  std::ofstream(pkg / "DEBIAN/control") << "Package: moat-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: moat tests <t@example.invalid>\n"
                                           "Description: says hello through the egress gateway\n";
  std::ofstream(pkg / "usr/local/bin/moat-hello") << "#!/bin/sh\necho hello from apt\n";
  fs::permissions(pkg / "usr/local/bin/moat-hello", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read |
                                                        fs::perms::group_exec | fs::perms::others_exec);
  fs::create_directories(repo);
  sh("dpkg-deb --root-owner-group -Zgzip --build " + pkg.string() + " " + (repo / "moat-hello_1.0_all.deb").string() + " >/dev/null");
  auto deb = *read_file(repo / "moat-hello_1.0_all.deb");
  std::string packages = fmt::format(
      "Package: moat-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: moat tests <t@example.invalid>\n"
      "Filename: ./moat-hello_1.0_all.deb\nSize: {}\nSHA256: {}\nDescription: says hello through the egress gateway\n\n",
      deb.size(), sha256_hex(deb));
  std::ofstream(repo / "Packages") << packages;
  std::ofstream(repo / "Release") << fmt::format(
      "Origin: moat-test\nLabel: moat-test\nSuite: stable\nCodename: moat\nDate: Thu, 01 Jan 2026 00:00:00 UTC\n"
      "Architectures: all amd64\nSHA256:\n {} {} Packages\n",
      sha256_hex(packages), packages.size());
}

}  // namespace

TEST(EgressDebian, RealClientsGoThroughTheGatewayAndNothingElse) {
  MOAT_REQUIRE_ROOT();
  TempDir files("moat-egress-files");
  auto www = files.path() / "www";
  make_apt_repo(www / "apt", files.path() / "scratch");
  // A git repository served over git's "dumb" HTTP protocol (plain files).
  sh("cd " + files.path().string() + " && git init -q src && cd src && echo hi > README && git add README && "
     "git -c user.name=t -c user.email=t@example.invalid commit -q -m first && "
     "git clone -q --bare . " + (www / "repo.git").string() + " && cd " + (www / "repo.git").string() +
     " && git update-server-info");
  std::ofstream(www / "index.html") << "hello from the host\n";
  UpstreamServer web({.bind_address = "127.0.0.2", .handler = file_handler(www)});
  TestCa ca(files.path());
  auto cert = ca.issue("tls", {"127.0.0.2"});
  UpstreamServer tls({.bind_address = "127.0.0.2", .tls = UpstreamServer::TlsFiles{cert.cert_path, cert.key_path}});

  MoatEnv env(fmt::format("[sandbox]\nimage = \"default\"\ndisk = \"2GiB\"\nmemory = \"1GiB\"\n[egress]\nupstream_ca_file = \"{}\"\n",
                          ca.ca_cert_path().string()));
  auto build = env.moat({"image", "build", "default"}, {}, 900);
  ASSERT_EQ(build.code, 0) << build.err;
  env.ok({"sandbox", "create", "deb"});
  for (auto* up : {&web, &tls}) env.ok({"policy", "allow", "deb", fmt::format("127.0.0.2:{}", up->port())});
  const std::string value = "tok-" + std::to_string(::getpid()) + "-realclients";
  env.ok({"secret", "set", "TLS_TOKEN", "--host", fmt::format("127.0.0.2:{}", tls.port()), "--agent", "deb", "--header",
          "Authorization: Bearer {}", "--env", "TLS_TOKEN"},
         value);
  env.ok({"sandbox", "start", "deb"});
  std::string base = fmt::format("http://127.0.0.2:{}", web.port());

  // curl and Python's urllib honour the proxy variables moat sets.
  EXPECT_EQ(env.ok({"exec", "deb", "--", "curl", "-sS", base + "/index.html"}), "hello from the host\n");
  EXPECT_EQ(env.ok({"exec", "deb", "--", "python3", "-c",
                    "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())",
                    base + "/index.html"}),
            "hello from the host\n");
  // A denied destination: curl shows the gateway's 403 and its words.
  auto denied = env.moat({"exec", "deb", "--", "curl", "-sS", "http://127.0.0.2:1/"});
  EXPECT_NE(denied.out.find("refused"), std::string::npos) << denied.out << denied.err;
  auto denied_tls = env.moat({"exec", "deb", "--", "curl", "-sS", "https://example.com/"});
  EXPECT_NE(denied_tls.code, 0);
  EXPECT_NE(denied_tls.err.find("403"), std::string::npos) << denied_tls.err;

  // git clones through the proxy.
  EXPECT_EQ(env.ok({"exec", "deb", "--", "sh", "-c", "git clone -q " + base + "/repo.git /workspace/repo && cat /workspace/repo/README"}),
            "hi\n");
  // apt-get installs from a local repository through the proxy (only that source, so nothing leaves the host).
  auto apt = env.moat({"exec", "deb", "--", "sh", "-c",
                       "echo 'deb [trusted=yes] " + base + "/apt ./' > /etc/apt/sources.list.d/moat-test.list && "
                       "opts='-o Dir::Etc::sourcelist=/etc/apt/sources.list.d/moat-test.list -o Dir::Etc::sourceparts=- "
                       "-o APT::Get::List-Cleanup=0' && apt-get $opts -q update >/dev/null && "
                       "DEBIAN_FRONTEND=noninteractive apt-get $opts -q -y install moat-hello >/dev/null && moat-hello"},
                      {}, 300);
  EXPECT_EQ(apt.code, 0) << apt.err;
  EXPECT_EQ(apt.out, "hello from apt\n");

  // HTTPS with a credential binding: curl trusts the moat CA through the system bundle, sends the
  // placeholder from its environment, and the upstream receives the real value.
  auto via = env.moat({"exec", "deb", "--", "sh", "-c",
                       fmt::format("curl -sS -H \"Authorization: Bearer $TLS_TOKEN\" https://127.0.0.2:{}/", tls.port())});
  EXPECT_EQ(via.code, 0) << via.err;
  EXPECT_EQ(via.out, fmt::format("hello from upstream {}\n", tls.port()));
  ASSERT_TRUE(tls.wait_for_requests(1));
  EXPECT_EQ(tls.requests().back().header("authorization"), "Bearer " + value);
  // Python's ssl module trusts it too (SSL_CERT_FILE).
  EXPECT_EQ(env.ok({"exec", "deb", "--", "python3", "-c",
                    "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).status)",
                    fmt::format("https://127.0.0.2:{}/", tls.port())}),
            "200\n");

  // Ignoring the proxy reaches nothing, and names do not resolve inside.
  auto direct = env.moat({"exec", "deb", "--", "curl", "-sS", "--noproxy", "*", "--max-time", "5", base + "/index.html"});
  EXPECT_NE(direct.code, 0) << direct.out;
  auto dns = env.moat({"exec", "deb", "--", "python3", "-c", "import socket; socket.getaddrinfo('deb.debian.org', 443)"});
  EXPECT_NE(dns.code, 0);
  EXPECT_NE(dns.err.find("gaierror"), std::string::npos) << dns.err;
}
