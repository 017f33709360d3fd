#include "egress/policy.h"

#include <gtest/gtest.h>

using namespace moat;
using namespace moat::egress;
using namespace moat::net;
using boost::asio::ip::make_address;

namespace {

Rule rule(RuleAction a, std::string_view spec) {
  auto r = parse_rule(a, spec);
  EXPECT_TRUE(r) << spec << ": " << (r ? "" : r.error().message);
  return r ? *r : Rule{};
}
Rule allow(std::string_view spec) { return rule(RuleAction::Allow, spec); }
Rule deny(std::string_view spec) { return rule(RuleAction::Deny, spec); }

std::string parse_error(std::string_view spec) {
  auto r = parse_rule(RuleAction::Allow, spec);
  EXPECT_FALSE(r) << spec << " parsed as " << (r ? r->text() : "");
  if (r) return "";
  EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
  return r.error().message;
}

Policy policy(std::string preset, std::vector<Rule> rules = {}) {
  Policy p;
  p.preset = std::move(preset);
  p.rules = std::move(rules);
  return p;
}

Decision addr(const Policy& p, std::string_view a, uint16_t port, std::vector<IpAddress> own = {}) {
  return check_address(p, *parse_ip_literal(a), port, own);
}

}  // namespace

TEST(ParseRule, NamesAreCanonical) {
  auto r = allow("API.Example.COM.");
  EXPECT_EQ(r.kind, PatternKind::Exact);
  EXPECT_EQ(r.pattern, "api.example.com");
  EXPECT_FALSE(r.port);
  EXPECT_EQ(r.text(), "allow api.example.com");
  auto w = deny(" *.Example.com:443 ");
  EXPECT_EQ(w.kind, PatternKind::Wildcard);
  EXPECT_EQ(w.pattern, "*.example.com");
  EXPECT_EQ(w.port, 443);
  EXPECT_EQ(w.text(), "deny *.example.com:443");
  auto any = allow("*");
  EXPECT_EQ(any.kind, PatternKind::Any);
  EXPECT_EQ(allow("*:8080").text(), "allow *:8080");
  EXPECT_EQ(allow("my_service.internal-1.example:65535").spec(), "my_service.internal-1.example:65535");
}

TEST(ParseRule, AddressesAndRanges) {
  auto ip = allow("10.1.2.3:5432");
  EXPECT_EQ(ip.kind, PatternKind::Ip);
  EXPECT_EQ(ip.pattern, "10.1.2.3");
  EXPECT_EQ(ip.port, 5432);
  EXPECT_EQ(allow("0x7f.1:80").text(), "allow 127.0.0.1:80");
  EXPECT_EQ(allow("[::ffff:10.0.0.5]:80").text(), "allow 10.0.0.5:80");  // mapped = the IPv4 address
  auto v6 = allow("[FD00::1]:80");
  EXPECT_EQ(v6.kind, PatternKind::Ip);
  EXPECT_EQ(v6.pattern, "fd00::1");
  EXPECT_EQ(v6.spec(), "[fd00::1]:80");
  EXPECT_EQ(allow("fd00::1").spec(), "fd00::1");
  EXPECT_EQ(allow("[fd00::1]").spec(), "fd00::1");
  auto net = deny("10.0.0.0/8");
  EXPECT_EQ(net.kind, PatternKind::Cidr);
  EXPECT_EQ(net.prefix, 8u);
  EXPECT_EQ(net.text(), "deny 10.0.0.0/8");
  EXPECT_EQ(allow("10.0.0.0/8:443").spec(), "10.0.0.0/8:443");
  EXPECT_EQ(allow("fd00::/8").spec(), "fd00::/8");
  EXPECT_EQ(allow("[FD00::/8]:443").spec(), "[fd00::/8]:443");
  EXPECT_EQ(allow("0.0.0.0/0").spec(), "0.0.0.0/0");
  EXPECT_EQ(allow("::ffff:10.0.0.0/104").spec(), "10.0.0.0/8");
}

TEST(ParseRule, SpecRoundTrips) {
  for (std::string_view s : {"api.example.com", "*.example.com:443", "*", "*:22", "10.1.2.3:5432", "[fd00::1]:80",
                             "fd00::1", "10.0.0.0/8", "[fd00::/16]:443", "192.168.0.0/16:80"}) {
    auto r = allow(s);
    EXPECT_EQ(r.spec(), s);
    EXPECT_EQ(allow(r.spec()), r);
  }
}

TEST(ParseRule, ErrorsNameTheSpecAndWhatIsExpected) {
  auto e = parse_error("example.com:0");
  EXPECT_NE(e.find("example.com:0"), std::string::npos) << e;
  EXPECT_NE(e.find("1 to 65535"), std::string::npos) << e;
  EXPECT_NE(parse_error("example.com:65536").find("1 to 65535"), std::string::npos);
  EXPECT_NE(parse_error("example.com:").find("1 to 65535"), std::string::npos);
  EXPECT_NE(parse_error("example.com:+80").find("1 to 65535"), std::string::npos);
  EXPECT_NE(parse_error("example.com:http").find("1 to 65535"), std::string::npos);
  EXPECT_NE(parse_error("").find("expected a host"), std::string::npos);
  EXPECT_NE(parse_error("   ").find("expected a host"), std::string::npos);
  EXPECT_NE(parse_error("https://api.example.com/v1").find("URL"), std::string::npos);
  EXPECT_NE(parse_error("foo.*.com").find("*.example.com"), std::string::npos);
  EXPECT_NE(parse_error("*example.com").find("*.example.com"), std::string::npos);
  EXPECT_NE(parse_error("**").find("*"), std::string::npos);
  EXPECT_NE(parse_error("*.").find("*.example.com"), std::string::npos);
  EXPECT_NE(parse_error("10.0.0.5/8").find("10.0.0.0/8"), std::string::npos);  // host bits: names what it got
  EXPECT_NE(parse_error("10.0.0.5/8").find("network address"), std::string::npos);
  EXPECT_NE(parse_error("10.0.0.0/33").find("0 to 32"), std::string::npos);
  EXPECT_NE(parse_error("fd00::/129").find("0 to 128"), std::string::npos);
  EXPECT_NE(parse_error("10/8").find("not an IP address"), std::string::npos);
  EXPECT_NE(parse_error("example.com/path").find("not an IP address"), std::string::npos);
  EXPECT_NE(parse_error("[10.0.0.1]:80").find("only for IPv6"), std::string::npos);
  EXPECT_NE(parse_error("[fd00::1").find("]"), std::string::npos);
  EXPECT_NE(parse_error("[fd00::1]x").find(":PORT"), std::string::npos);
  EXPECT_NE(parse_error("[example.com]:80").find("not an IPv6"), std::string::npos);
  EXPECT_NE(parse_error("fd00::zz").find("IPv6"), std::string::npos);
  EXPECT_NE(parse_error("2606:4700::/32:443").find("[2606:4700::/32]:443"), std::string::npos);  // port needs brackets
  EXPECT_NE(parse_error("999.1.1.1").find("neither a valid IP address"), std::string::npos);
  EXPECT_NE(parse_error("exa mple.com").find("space"), std::string::npos);
  EXPECT_NE(parse_error("a..b").find("empty label"), std::string::npos);
  EXPECT_NE(parse_error("ex!ample.com").find("'!'"), std::string::npos);
  EXPECT_NE(parse_error(std::string(64, 'a') + ".com").find("63"), std::string::npos);
  parse_error(std::string("exa\0mple.com", 12));
  parse_error("ex\xc3\xa4mple.com");
}

TEST(RuleMatch, WildcardsCoverSubdomainsAtAnyDepthButNotTheApex) {
  auto w = allow("*.example.com");
  EXPECT_TRUE(w.matches_host("a.example.com", 443));
  EXPECT_TRUE(w.matches_host("a.b.c.example.com", 443));
  EXPECT_TRUE(w.matches_host("A.EXAMPLE.COM.", 443));
  EXPECT_FALSE(w.matches_host("example.com", 443));
  EXPECT_FALSE(w.matches_host("badexample.com", 443));
  EXPECT_FALSE(w.matches_host("example.com.evil.net", 443));
  EXPECT_FALSE(w.matches_host(".example.com", 443));
  auto e = allow("example.com:443");
  EXPECT_TRUE(e.matches_host("Example.Com", 443));
  EXPECT_TRUE(e.matches_host("example.com.", 443));
  EXPECT_FALSE(e.matches_host("example.com", 80));
  EXPECT_FALSE(e.matches_host("www.example.com", 443));
  EXPECT_TRUE(allow("*").matches_host("anything.at.all", 1));
  EXPECT_TRUE(allow("*").matches_host("10.0.0.1", 1));
  EXPECT_FALSE(allow("*:443").matches_host("x.com", 80));
}

TEST(RuleMatch, LiteralsMatchAddressRulesOnly) {
  auto ip = allow("127.0.0.1:80");
  EXPECT_TRUE(ip.matches_host("127.0.0.1", 80));
  EXPECT_TRUE(ip.matches_host("2130706433", 80));
  EXPECT_TRUE(ip.matches_host("[::ffff:127.0.0.1]", 80));
  EXPECT_FALSE(ip.matches_host("127.0.0.2", 80));
  EXPECT_FALSE(ip.matches_host("127.0.0.1", 81));
  auto net = deny("10.0.0.0/8");
  EXPECT_TRUE(net.matches_host("10.200.3.4", 1));
  EXPECT_TRUE(net.matches_host("012.1", 1));  // 10.0.0.1 in octal
  EXPECT_FALSE(net.matches_host("11.0.0.1", 1));
  EXPECT_FALSE(allow("example.com").matches_host("93.184.216.34", 443));
  EXPECT_FALSE(allow("*.com").matches_host("1.2.3.4", 443));
  auto v6 = allow("fd00::/16");
  EXPECT_TRUE(v6.matches_address(make_address("fd00:1::5"), 1));
  EXPECT_FALSE(v6.matches_address(make_address("fd01::5"), 1));
  EXPECT_FALSE(v6.matches_address(make_address("10.0.0.1"), 1));
  EXPECT_TRUE(allow("0.0.0.0/0").matches_address(make_address("8.8.8.8"), 1));
  EXPECT_TRUE(allow("172.16.0.0/12").matches_address(make_address("172.31.255.255"), 1));
  EXPECT_FALSE(allow("172.16.0.0/12").matches_address(make_address("172.32.0.0"), 1));
}

TEST(Presets, BalancedListsRegistriesOnWebPortsOnly) {
  auto b = preset_rules("balanced");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size(), 30u);
  for (const auto& r : *b) {
    EXPECT_EQ(r.action, RuleAction::Allow);
    ASSERT_TRUE(r.port);
    EXPECT_TRUE(*r.port == 80 || *r.port == 443) << r.text();
  }
  auto p = policy("balanced");
  for (std::string_view h : {"api.anthropic.com", "api.openai.com", "deb.debian.org", "security.debian.org",
                             "ftp.debian.org", "registry.npmjs.org", "www.npmjs.com", "pypi.org",
                             "files.pythonhosted.org", "github.com", "api.github.com", "raw.githubusercontent.com",
                             "codeload.github.com"}) {
    EXPECT_TRUE(check_host(p, h, 443).allowed) << h;
    EXPECT_TRUE(check_host(p, h, 80).allowed) << h;
    EXPECT_FALSE(check_host(p, h, 22).allowed) << h;
  }
  EXPECT_FALSE(check_host(p, "example.com", 443).allowed);
  EXPECT_FALSE(check_host(p, "npmjs.com", 443).allowed);
  EXPECT_FALSE(check_host(p, "githubusercontent.com.evil.net", 443).allowed);
  auto d = check_host(p, "registry.npmjs.org", 443);
  EXPECT_EQ(d.rule, "preset balanced: allow registry.npmjs.org:443");
  EXPECT_EQ(check_host(p, "x.npmjs.org", 443).rule, "preset balanced: allow *.npmjs.org:443");
}

TEST(Presets, LockedAndOpenAndUnknown) {
  ASSERT_TRUE(preset_rules("locked"));
  EXPECT_TRUE(preset_rules("locked")->empty());
  EXPECT_FALSE(check_host(policy("locked"), "api.anthropic.com", 443).allowed);
  auto open = policy("open");
  EXPECT_TRUE(check_host(open, "example.com", 22).allowed);
  EXPECT_EQ(check_host(open, "example.com", 22).rule, "preset open: allow *");
  auto bad = preset_rules("lax");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("\"lax\""), std::string::npos);
  EXPECT_NE(bad.error().message.find("locked, balanced or open"), std::string::npos);
  auto unknown = check_host(policy("lax"), "api.anthropic.com", 443);
  EXPECT_FALSE(unknown.allowed);
  EXPECT_NE(unknown.reason.find("unknown preset"), std::string::npos);
  EXPECT_EQ(preset_names().size(), 3u);
}

TEST(CheckHost, DenyWinsThenAllowThenDefaultDeny) {
  auto p = policy("open", {allow("api.evil.com:443"), deny("*.evil.com")});
  auto d = check_host(p, "api.evil.com", 443);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "deny *.evil.com");
  EXPECT_EQ(d.reason, "egress to api.evil.com:443 refused by rule `deny *.evil.com`");
  EXPECT_TRUE(check_host(p, "evil.com", 443).allowed);  // the apex is not covered by *.evil.com
  auto locked = policy("locked", {allow("api.example.com:443")});
  auto a = check_host(locked, "API.example.com.", 443);
  EXPECT_TRUE(a.allowed);
  EXPECT_EQ(a.rule, "allow api.example.com:443");
  EXPECT_EQ(a.reason, "egress to api.example.com:443 allowed by rule `allow api.example.com:443`");
  auto none = check_host(locked, "api.example.com", 80);
  EXPECT_FALSE(none.allowed);
  EXPECT_EQ(none.rule, "default deny");
  EXPECT_EQ(none.reason,
            "egress to api.example.com:80 refused: no rule allows it (preset locked, default deny); allow it with "
            "`moat policy allow AGENT api.example.com:80`");
  locked.agent = "dev";
  EXPECT_NE(check_host(locked, "x.org", 80).reason.find("`moat policy allow dev x.org:80`"), std::string::npos);
}

TEST(CheckHost, UserAllowRulesComeBeforeThePreset) {
  auto p = policy("balanced", {allow("*.github.com:443")});
  EXPECT_EQ(check_host(p, "api.github.com", 443).rule, "allow *.github.com:443");
  EXPECT_EQ(check_host(p, "api.github.com", 80).rule, "preset balanced: allow *.github.com:80");
  auto d = policy("balanced", {deny("github.com")});
  EXPECT_FALSE(check_host(d, "github.com", 443).allowed);
  EXPECT_TRUE(check_host(d, "api.github.com", 443).allowed);
}

TEST(CheckHost, LiteralsMatchAddressRulesAndStar) {
  auto p = policy("locked", {allow("10.0.0.5:80"), deny("192.168.0.0/16"), allow("*.internal")});
  EXPECT_TRUE(check_host(p, "10.0.0.5", 80).allowed);
  EXPECT_TRUE(check_host(p, "012.0.0.5", 80).allowed);
  EXPECT_TRUE(check_host(p, "[::ffff:10.0.0.5]", 80).allowed);
  EXPECT_FALSE(check_host(p, "10.0.0.5", 81).allowed);
  EXPECT_FALSE(check_host(p, "10.0.0.6", 80).allowed);
  auto ipv6 = check_host(p, "[fd00::1]", 443);
  EXPECT_FALSE(ipv6.allowed);
  EXPECT_NE(ipv6.reason.find("[fd00::1]:443"), std::string::npos) << ipv6.reason;
  auto open = policy("open", {deny("192.168.0.0/16")});
  EXPECT_TRUE(check_host(open, "8.8.8.8", 53).allowed);
  EXPECT_FALSE(check_host(open, "192.168.1.1", 80).allowed);
  EXPECT_EQ(check_host(open, "0300.0250.1.1", 80).rule, "deny 192.168.0.0/16");
}

TEST(CheckHost, HostilHostsAreSafeInMessages) {
  auto d = check_host(policy("locked"), "evil\r\nX-Injected: 1", 80);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason.find('\n'), std::string::npos);
  EXPECT_EQ(d.reason.find('\r'), std::string::npos);
  auto big = check_host(policy("locked"), std::string(5000, 'a'), 80);
  EXPECT_LT(big.reason.size(), 700u);
}

TEST(CheckAddress, NonPublicNeedsAnExplicitAddressRuleWithPort) {
  auto p = policy("open");
  auto d = addr(p, "10.0.0.5", 80);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "private address (RFC 1918)");
  EXPECT_EQ(d.reason,
            "egress to 10.0.0.5:80 refused: private address (RFC 1918); allow it explicitly with `moat policy allow "
            "AGENT 10.0.0.5:80`");
  EXPECT_TRUE(addr(p, "93.184.216.34", 443).allowed);
  EXPECT_EQ(addr(p, "93.184.216.34", 443).rule, "public address");

  auto ok = policy("locked", {allow("10.0.0.5:80")});
  auto a = addr(ok, "10.0.0.5", 80);
  EXPECT_TRUE(a.allowed);
  EXPECT_EQ(a.rule, "allow 10.0.0.5:80");
  EXPECT_TRUE(addr(ok, "::ffff:10.0.0.5", 80).allowed);
  EXPECT_FALSE(addr(ok, "10.0.0.5", 81).allowed);
  EXPECT_FALSE(addr(ok, "10.0.0.6", 80).allowed);

  // A rule without a port, a name rule, or "*" never opens a non-public address.
  EXPECT_FALSE(addr(policy("locked", {allow("10.0.0.5")}), "10.0.0.5", 80).allowed);
  EXPECT_FALSE(addr(policy("locked", {allow("10.0.0.0/8")}), "10.0.0.5", 80).allowed);
  EXPECT_FALSE(addr(policy("locked", {allow("*:80")}), "10.0.0.5", 80).allowed);
  EXPECT_FALSE(addr(policy("locked", {allow("internal.example:80")}), "10.0.0.5", 80).allowed);
  EXPECT_TRUE(addr(policy("locked", {allow("10.0.0.0/8:80")}), "10.9.9.9", 80).allowed);
  EXPECT_TRUE(addr(policy("locked", {allow("[fd00::/8]:443")}), "fd12::1", 443).allowed);
}

TEST(CheckAddress, EveryRefusedClassIsRefused) {
  auto p = policy("open");
  std::vector<IpAddress> own = {make_address("203.0.114.7")};
  for (std::string_view a :
       {"127.0.0.1", "0177.0.0.1", "2130706433", "0x7f.1", "127.1", "::1", "[::ffff:127.0.0.1]", "::ffff:7f00:1",
        "10.1.2.3", "172.16.5.4", "192.168.0.1", "169.254.1.1", "fe80::1", "100.64.1.1", "224.0.0.251", "ff02::fb",
        "fc00::1", "fd12::1", "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "::", "255.255.255.255",
        "240.1.1.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.1.1", "2001:db8::1", "100::1",
        "::ffff:10.0.0.1", "::10.0.0.1", "64:ff9b::10.0.0.1", "2002:a00:1::1", "::ffff:169.254.169.254",
        "203.0.114.7", "::ffff:203.0.114.7"}) {
    auto d = addr(p, a, 443, own);
    EXPECT_FALSE(d.allowed) << a << " " << d.reason;
    EXPECT_NE(d.reason.find("refused"), std::string::npos) << d.reason;
  }
}

TEST(CheckAddress, MetadataIsNamedPreciselyWithoutAHint) {
  auto d = addr(policy("open"), "169.254.169.254", 80);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "cloud metadata address");
  EXPECT_EQ(d.reason, "egress to 169.254.169.254:80 refused: cloud metadata address");
  EXPECT_TRUE(addr(policy("locked", {allow("169.254.169.254:80")}), "169.254.169.254", 80).allowed);
}

TEST(CheckAddress, DenyRulesApplyToResolvedAddressesAndEmbeddedIpv4) {
  auto p = policy("open", {deny("93.184.216.0/24"), allow("10.0.0.5:80"), deny("10.0.0.5")});
  auto d = addr(p, "93.184.216.34", 443);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "deny 93.184.216.0/24");
  EXPECT_EQ(d.reason, "egress to 93.184.216.34:443 refused by rule `deny 93.184.216.0/24`");
  EXPECT_FALSE(addr(p, "::ffff:93.184.216.34", 443).allowed);
  EXPECT_FALSE(addr(p, "2002:5db8:d822::1", 443).allowed);  // 6to4 of 93.184.216.34
  EXPECT_FALSE(addr(p, "64:ff9b::5db8:d822", 443).allowed);  // NAT64
  EXPECT_FALSE(addr(p, "10.0.0.5", 80).allowed);             // deny wins over the explicit allow
  EXPECT_TRUE(addr(p, "93.184.217.1", 443).allowed);
  EXPECT_FALSE(addr(policy("open", {deny("[2606:4700::/32]:443")}), "2606:4700::1111", 443).allowed);
  EXPECT_TRUE(addr(policy("open", {deny("[2606:4700::/32]:443")}), "2606:4700::1111", 80).allowed);
}

TEST(CheckAddress, HintUsesBracketsForIpv6AndTheAgentName) {
  Policy p = policy("open");
  p.agent = "coder";
  auto d = addr(p, "fd12::7", 8443);
  EXPECT_EQ(d.reason,
            "egress to [fd12::7]:8443 refused: unique-local IPv6 address; allow it explicitly with `moat policy allow "
            "coder [fd12::7]:8443`");
  auto m = addr(p, "::ffff:10.1.1.1", 22);
  EXPECT_NE(m.reason.find("`moat policy allow coder 10.1.1.1:22`"), std::string::npos) << m.reason;
}

TEST(NormalizeHost, CanonicalForms) {
  EXPECT_EQ(normalize_host("Example.COM."), "example.com");
  EXPECT_EQ(normalize_host("0x7f.1"), "127.0.0.1");
  EXPECT_EQ(normalize_host("[::1]"), "::1");
  EXPECT_EQ(normalize_host("."), ".");
}
