// Secret names, header templates, host patterns and binding normalisation.
#include "vault/binding.h"

#include <gtest/gtest.h>

#include "vault/host_pattern.h"
#include "vault/public_suffix.h"

using namespace moat;
using namespace moat::vault;

namespace {

HostPattern pattern(std::string_view spec) {
  auto p = parse_host_pattern(spec);
  EXPECT_TRUE(p) << spec << ": " << p.error().message;
  return p.value_or(HostPattern{});
}

std::string error_of(const auto& r) { return r ? std::string("(no error)") : r.error().message; }

}  // namespace

TEST(VaultBinding, SecretNames) {
  for (const std::string& ok : std::vector<std::string>{"ANTHROPIC_API_KEY", "github-token", "openai.prod", "_x", "a",
                                                        std::string(64, 'k')})
    EXPECT_TRUE(validate_secret_name(ok)) << ok;
  for (const std::string& bad :
       std::vector<std::string>{"", "-x", ".x", "has space", "a/b", "a:b", "ключ", std::string(65, 'k')}) {
    auto st = validate_secret_name(bad);
    ASSERT_FALSE(st) << bad;
    EXPECT_EQ(st.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(st.error().message.find("1-64 letters"), std::string::npos) << st.error().message;
  }
}

TEST(VaultBinding, ValuesThatCannotTravelInAHeaderAreRefusedWithoutQuotingThem) {
  EXPECT_TRUE(validate_secret_value("sk-ant-api03-abc_DEF-123"));
  EXPECT_TRUE(validate_secret_value("with inner space"));
  for (std::string bad : {std::string(""), std::string("line\nbreak-SECRETX"), std::string("cr\rSECRETX"),
                          std::string("nul\0SECRETX", 11), std::string(" SECRETX"), std::string("SECRETX "),
                          std::string(16385, 'x')}) {
    auto st = validate_secret_value(bad);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().message.find("SECRETX"), std::string::npos) << st.error().message;
  }
}

TEST(VaultBinding, HeaderTemplates) {
  auto t = parse_header_template("x-api-key: {}");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->name, "x-api-key");
  EXPECT_EQ(t->prefix, "");
  EXPECT_EQ(t->suffix, "");
  t = parse_header_template("  Authorization :  Bearer {}  ");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->name, "Authorization");
  EXPECT_EQ(t->prefix, "Bearer ");
  t = parse_header_template("Cookie: session={}; theme=dark");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->suffix, "; theme=dark");

  for (auto bad : {"x-api-key {}", ": {}", "x api key: {}", "x-api-key: value", "x-api-key: {}{}", "x-a\"pi: {}",
                   "x-api-key: {}\r\nEvil: 1", "Host: {}", "content-length: {}", "Proxy-Authorization: Basic {}",
                   "x-api-key: {", "tr\xc3\xa9s: {}"}) {
    auto r = parse_header_template(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message.find("--header"), std::string::npos) << r.error().message;
  }
}

// No port means 443: a credential is bound to one service, not to every port of a host.
TEST(VaultBinding, HostPatternsParseToCanonicalText) {
  EXPECT_EQ(pattern("API.Example.com").text(), "api.example.com:443");
  EXPECT_EQ(pattern("api.example.com.").text(), "api.example.com:443");
  EXPECT_EQ(pattern("api.example.com:443").text(), "api.example.com:443");
  EXPECT_EQ(pattern("*.Example.com:8443").text(), "*.example.com:8443");
  EXPECT_EQ(pattern("10.1.2.3").text(), "10.1.2.3:443");
  EXPECT_EQ(pattern("10.1.2.3:5432").text(), "10.1.2.3:5432");
  EXPECT_EQ(pattern("[FD00:0::1]:80").text(), "[fd00::1]:80");
  EXPECT_EQ(pattern("fd00::1").text(), "[fd00::1]:443");
  EXPECT_EQ(pattern("[fd00::1]").text(), "[fd00::1]:443");
  EXPECT_EQ(pattern("localhost").text(), "localhost:443");
}

TEST(VaultBinding, HostPatternsRefused) {
  for (auto bad : {"", "*", "*:443", "*.com", "a.*.com", "api*.example.com", "10.0.0.0/8", "127.1", "2130706433",
                   "0x7f.0.0.1", "api.example.com:0", "api.example.com:65536", "api.example.com:http",
                   "api.example.com:", "[fd00::1", "[fd00::1]x", "[nothex]", "a..b", "-a.com", "a b.com",
                   "api.example.com/path", "user@api.example.com"}) {
    auto r = parse_host_pattern(bad);
    EXPECT_FALSE(r) << "'" << bad << "' was accepted as " << (r ? r->text() : "");
  }
  auto r = parse_host_pattern("*");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("every host"), std::string::npos) << r.error().message;
}

// A public suffix (Debian's list, ICANN and private sections alike) is a place where anyone registers
// names: a credential bound to it, or below it by wildcard, would go to every tenant there.
TEST(VaultBinding, PublicSuffixesAreRefused) {
  for (auto bad : {"*.github.io", "github.io", "*.co.uk", "co.uk", "com", "*.herokuapp.com", "foo.ck", "*.foo.ck",
                   "*.localhost"}) {
    auto r = parse_host_pattern(bad);
    ASSERT_FALSE(r) << "'" << bad << "' was accepted as " << r->text();
    if (std::string_view(bad) != "*.localhost") {
      EXPECT_NE(r.error().message.find("public suffix"), std::string::npos) << r.error().message;
    }
  }
  // Names someone registered below a suffix, and the list's exceptions, are fine.
  for (auto good : {"myproject.github.io", "*.myproject.github.io", "api.example.co.uk", "www.ck", "localhost", "*.example.com"})
    EXPECT_TRUE(parse_host_pattern(good)) << good << ": " << parse_host_pattern(good).error().message;
  // The list's own grammar: rules, wildcards, exceptions, comments.
  auto list = PublicSuffixList::parse("// comment\ncom\n*.ck\n!www.ck\nco.uk extra words\n\n");
  EXPECT_TRUE(list.listed("com"));
  EXPECT_TRUE(list.listed("co.uk"));
  EXPECT_TRUE(list.listed("any.ck"));
  EXPECT_FALSE(list.listed("www.ck"));
  EXPECT_FALSE(list.listed("ck.com"));
  EXPECT_TRUE(list.is_public_suffix("unlisted"));  // the implicit "*" rule
  EXPECT_FALSE(list.listed("unlisted"));
}

TEST(VaultBinding, HostPatternMatching) {
  auto exact = pattern("api.example.com");
  EXPECT_TRUE(exact.matches("api.example.com", 443));
  EXPECT_TRUE(exact.matches("API.EXAMPLE.COM.", 443));
  EXPECT_FALSE(exact.matches("api.example.com", 80));  // no port in the pattern means 443 only
  EXPECT_FALSE(exact.matches("example.com", 443));
  EXPECT_FALSE(exact.matches("x.api.example.com", 443));
  EXPECT_FALSE(exact.matches("api.example.com.evil.com", 443));
  EXPECT_FALSE(exact.matches("evilapi.example.com", 443));

  auto port = pattern("api.example.com:443");
  EXPECT_TRUE(port.matches("api.example.com", 443));
  EXPECT_FALSE(port.matches("api.example.com", 8443));

  auto wild = pattern("*.example.com");
  EXPECT_TRUE(wild.matches("a.example.com", 443));
  EXPECT_TRUE(wild.matches("a.b.example.com", 443));
  EXPECT_FALSE(wild.matches("a.b.example.com", 1));
  EXPECT_FALSE(wild.matches("example.com", 443));
  EXPECT_FALSE(wild.matches("badexample.com", 443));
  EXPECT_FALSE(wild.matches("a.example.com.evil.net", 443));
  EXPECT_FALSE(wild.matches(".example.com", 443));

  auto v6 = pattern("[fd00::1]:80");
  EXPECT_TRUE(v6.matches("[fd00:0:0::1]", 80));
  EXPECT_TRUE(v6.matches("fd00::1", 80));
  EXPECT_FALSE(v6.matches("fd00::2", 80));
  EXPECT_FALSE(v6.matches("fd00::1", 81));

  auto v4 = pattern("10.1.2.3:5432");
  EXPECT_TRUE(v4.matches("10.1.2.3", 5432));
  EXPECT_FALSE(v4.matches("10.1.2.33", 5432));
}

TEST(VaultBinding, NormalizeSortsDeduplicatesAndDefaults) {
  SecretBinding b;
  b.agents = {"zed", "alpha", "zed"};
  b.hosts = {"B.example.com", "a.example.com:443", "b.example.com"};
  b.header = "x-api-key:{}";
  b.env = "OPENAI_API_KEY";
  auto n = normalize_binding(b);
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_EQ(n->agents, (std::vector<std::string>{"alpha", "zed"}));
  EXPECT_EQ(n->hosts, (std::vector<std::string>{"a.example.com:443", "b.example.com:443"}));
  EXPECT_EQ(n->header, "x-api-key: {}");

  b.agents = {"alpha", "*"};
  EXPECT_EQ(normalize_binding(b)->agents, std::vector<std::string>{"*"});
  b.agents = {};
  EXPECT_EQ(normalize_binding(b)->agents, std::vector<std::string>{"*"});

  SecretBinding d;
  d.hosts = {"api.openai.com"};
  EXPECT_EQ(normalize_binding(d)->header, "Authorization: Bearer {}");

  auto no_host = normalize_binding(SecretBinding{});
  ASSERT_FALSE(no_host);
  EXPECT_NE(no_host.error().message.find("--host"), std::string::npos);

  b.agents = {"Bad Agent"};
  EXPECT_NE(error_of(normalize_binding(b)).find("agent"), std::string::npos);
  b.agents = {"*"};
  for (auto env : {"1ABC", "A-B", "HTTPS_PROXY", "https_proxy", "LD_PRELOAD", "PATH", "SSL_CERT_FILE"}) {
    b.env = env;
    EXPECT_NE(error_of(normalize_binding(b)).find("--env"), std::string::npos) << env;
  }
}

TEST(VaultBinding, JsonRoundTrip) {
  SecretBinding b;
  b.agents = {"a", "b"};
  b.hosts = {"*.example.com:443"};
  b.header = "x-api-key: {}";
  b.env = "K";
  auto back = binding_from_json(binding_to_json(b));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, b);
  EXPECT_FALSE(binding_from_json(Json{{"hosts", "not-a-list"}}));
  EXPECT_FALSE(binding_from_json(Json{{"hosts", {1, 2}}}));
  EXPECT_FALSE(binding_from_json(Json::array()));
  EXPECT_EQ(placeholder_for("ANTHROPIC_API_KEY"), "moat-placeholder-ANTHROPIC_API_KEY");
}
