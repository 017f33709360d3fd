// Self-test of the syslog server double (tests/support/syslog_server.h): before the checkpoint
// tests trust it, check that it parses what a real client sends (util-linux's logger speaking RFC
// 5424 over TCP with octet counting), keeps it in its capture file, and refuses a stream that is
// not octet-counted.
#include "support/syslog_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "base/subprocess.h"
#include "support/temp_dir.h"
#include "support/test_ca.h"
#include "support/wait.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

UniqueFd connect_to(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << strerror(errno);
  return fd;
}

}  // namespace

TEST(SyslogServerDouble, ParsesWhatLoggerSendsOverTcpWithOctetCounting) {
  if (!find_program("logger")) GTEST_SKIP() << "logger (util-linux bsdutils) is not installed";
  TempDir dir("moat-syslog-double");
  SyslogServer server(dir / "capture.log");
  std::string body = R"({"type":"checkpoint","seq":1})";
  auto r = run_process({"logger", "--tcp", "--octet-count", "--rfc5424", "-n", "127.0.0.1", "-P",
                        std::to_string(server.port()), "-t", "moat", "--msgid", "checkpoint", "-p", "local0.notice",
                        body},
                       RunOptions{.timeout = 10s});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->exit_code, 0) << r->err;
  ASSERT_TRUE(wait_until([&] { return !server.messages().empty(); }, 10s));
  auto m = server.messages().at(0);
  EXPECT_EQ(m.facility, 16);  // local0
  EXPECT_EQ(m.severity, 5);   // notice
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.app_name, "moat");
  EXPECT_EQ(m.msgid, "checkpoint");
  EXPECT_EQ(m.msg, body);
  EXPECT_NE(m.structured_data, "") << "logger sends [timeQuality ...]: " << m.raw;
  EXPECT_EQ(server.bad_frames(), 0u);
  // The capture holds the message as one line, header first, as rsyslog stores it.
  auto captured = read_text(server.capture());
  EXPECT_EQ(captured, m.raw + "\n");
  EXPECT_TRUE(captured.ends_with(body + "\n")) << captured;
}

TEST(SyslogServerDouble, SplitFramesAreJoinedAndAStreamWithoutOctetCountsIsRefused) {
  TempDir dir("moat-syslog-double");
  SyslogServer server(dir / "capture.log");
  std::string msg = "<109>1 2026-12-07T20:37:47.123456Z host moat 42 checkpoint - hello";
  std::string frames = fmt::format("{} {}{} {}", msg.size(), msg, msg.size(), msg);
  {
    auto fd = connect_to(server.port());
    for (char c : frames) ASSERT_EQ(::send(fd.get(), &c, 1, MSG_NOSIGNAL), 1);  // a byte at a time
    ASSERT_TRUE(wait_until([&] { return server.messages().size() == 2; }, 5s));
  }
  EXPECT_EQ(server.messages()[1].msg, "hello");
  EXPECT_EQ(server.messages()[1].hostname, "host");
  {
    auto fd = connect_to(server.port());
    std::string plain = msg + "\n";  // non-transparent framing: not what the double (or moatd) speaks
    ASSERT_EQ(::send(fd.get(), plain.data(), plain.size(), MSG_NOSIGNAL), static_cast<ssize_t>(plain.size()));
    ASSERT_TRUE(wait_until([&] { return server.bad_frames() == 1; }, 5s));
  }
  EXPECT_EQ(server.messages().size(), 2u);
  EXPECT_FALSE(parse_rfc5424("<109>1 2026-12-07T20:37:47Z host moat 42 checkpoint [unclosed x=\"]\"").has_value());
  EXPECT_FALSE(parse_rfc5424("<999>1 - - - - - -").has_value());
  EXPECT_TRUE(parse_rfc5424("<13>1 - - - - - -").has_value());
}

TEST(SyslogServerDouble, StopClosesConnectionsAndStartListensOnTheSamePort) {
  TempDir dir("moat-syslog-double");
  SyslogServer server(dir / "capture.log");
  uint16_t port = server.port();
  auto fd = connect_to(port);
  ASSERT_TRUE(wait_until([&] { return server.connections() == 1; }, 5s));
  server.stop();
  char c;
  EXPECT_EQ(::recv(fd.get(), &c, 1, 0), 0) << "the client sees the server close";
  server.start();
  EXPECT_EQ(server.port(), port);
  auto again = connect_to(port);
  EXPECT_TRUE(wait_until([&] { return server.connections() == 2; }, 5s));
}

// Over TLS the double takes the same frames inside TLS (RFC 5425); checked with the openssl client.
TEST(SyslogServerDouble, OverTlsTakesFramesFromTheOpensslClient) {
  if (!find_program("openssl")) GTEST_SKIP() << "the openssl command is not installed";
  TempDir dir("moat-syslog-double");
  TestCa ca(dir.path());
  SyslogServer server(dir / "capture.log", 0, ca.issue("syslog", {"127.0.0.1"}));
  EXPECT_TRUE(server.url().starts_with("syslog+tls://127.0.0.1:")) << server.url();
  std::string msg = "<109>1 2026-12-07T20:37:47.123456Z host moat 42 checkpoint - over-tls";
  auto r = run_process({"openssl", "s_client", "-connect", fmt::format("127.0.0.1:{}", server.port()), "-CAfile",
                        ca.ca_cert_path().string(), "-verify_return_error", "-quiet", "-no_ign_eof"},
                       RunOptions{.stdin_data = fmt::format("{} {}", msg.size(), msg), .timeout = 10s});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_TRUE(wait_until([&] { return server.messages().size() == 1; }, 10s)) << r->err;
  EXPECT_EQ(server.messages()[0].msg, "over-tls");
  EXPECT_EQ(server.failed_handshakes(), 0u);
}
