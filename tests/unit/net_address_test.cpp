#include "net/address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <random>

using namespace moat::net;
using boost::asio::ip::make_address;

namespace {

std::string parsed(std::string_view host) {
  auto a = parse_ip_literal(host);
  return a ? format_address(*a) : "name";
}

AddressClass cls(std::string_view literal, std::vector<IpAddress> own = {}) {
  auto a = parse_ip_literal(literal);
  EXPECT_TRUE(a) << literal;
  return a ? classify(*a, own) : AddressClass::Public;
}

}  // namespace

TEST(ParseIpLiteral, AcceptsEveryInetAtonForm) {
  EXPECT_EQ(parsed("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(parsed("2130706433"), "127.0.0.1");
  EXPECT_EQ(parsed("0177.0.0.1"), "127.0.0.1");
  EXPECT_EQ(parsed("0x7f000001"), "127.0.0.1");
  EXPECT_EQ(parsed("0X7F000001"), "127.0.0.1");
  EXPECT_EQ(parsed("0x7f.1"), "127.0.0.1");
  EXPECT_EQ(parsed("127.1"), "127.0.0.1");
  EXPECT_EQ(parsed("10.1"), "10.0.0.1");
  EXPECT_EQ(parsed("192.168.257"), "192.168.1.1");
  EXPECT_EQ(parsed("0300.0250.1.1"), "192.168.1.1");
  EXPECT_EQ(parsed("0xa9.0xfe.0xa9.0xfe"), "169.254.169.254");
  EXPECT_EQ(parsed("0"), "0.0.0.0");
  EXPECT_EQ(parsed("00000000000000177.1"), "127.0.0.1");
  EXPECT_EQ(parsed("4294967295"), "255.255.255.255");
  EXPECT_EQ(parsed("127.0.0.1."), "127.0.0.1");  // one trailing dot, as URL parsers allow
}

TEST(ParseIpLiteral, AcceptsIpv6BareAndBracketed) {
  EXPECT_EQ(parsed("::1"), "::1");
  EXPECT_EQ(parsed("[::1]"), "::1");
  EXPECT_EQ(parsed("[::ffff:127.0.0.1]"), "::ffff:127.0.0.1");
  EXPECT_EQ(parsed("::ffff:7f00:1"), "::ffff:127.0.0.1");
  EXPECT_EQ(parsed("[FD00:EC2::254]"), "fd00:ec2::254");
  EXPECT_EQ(parsed("0:0:0:0:0:0:0:1"), "::1");
  EXPECT_EQ(parsed("[127.0.0.1]"), "127.0.0.1");  // not a URL host, but unmistakably an address
}

TEST(ParseIpLiteral, RejectsGarbageAndTrailingJunkAndNames) {
  for (std::string_view s :
       {"", "localhost", "example.com", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "1.2.65536", "1.16777216",
        "4294967296", "08", "0x", "0x1g", "1..2", ".1.2.3", "127.0.0.1 ", " 127.0.0.1", "127.0.0.1 junk",
        "127.0.0.1..", "127.0.0.1/8", "127.0.0.1:80", "+1", "-1", "0x7f.0x100.1", "[::1", "::1]", "[]", "[::1]:80",
        ":::", "1:2:3:4:5:6:7:8:9", "[example.com]", "1e3", "0b101"})
    EXPECT_EQ(parsed(s), "name") << '"' << s << '"';
  EXPECT_EQ(parsed(std::string_view("127.0.0.1\0.evil.com", 19)), "name");
  EXPECT_EQ(parsed(std::string_view("::1\0", 4)), "name");
}

// The point of parsing like the C library: any string inet_aton takes as an address, we do too, and to
// the same address. Random strings over the characters that matter.
TEST(ParseIpLiteral, AgreesWithInetAtonOnRandomStrings) {
  std::mt19937 rng(7);
  const std::string alphabet = "0123456789.xXaAfFg.0.1";
  int agreed = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string s;
    size_t n = 1 + rng() % 14;
    for (size_t j = 0; j < n; ++j) s.push_back(alphabet[rng() % alphabet.size()]);
    std::string ref = s;
    if (ref.size() > 1 && ref.back() == '.') ref.pop_back();
    in_addr want{};
    bool c_ok = inet_aton(ref.c_str(), &want) != 0;
    auto got = parse_ip_literal(s);
    ASSERT_EQ(c_ok, got.has_value()) << s;
    if (c_ok) {
      ASSERT_TRUE(got->is_v4());
      ASSERT_EQ(got->to_v4().to_uint(), ntohl(want.s_addr)) << s;
      ++agreed;
    }
  }
  EXPECT_GT(agreed, 1000);
}

TEST(ParseIpLiteral, AgreesWithInetPtonForIpv6) {
  std::mt19937 rng(11);
  const std::string alphabet = "0123456789abcdefABF::::..";
  for (int i = 0; i < 100000; ++i) {
    std::string s;
    size_t n = 2 + rng() % 20;
    for (size_t j = 0; j < n; ++j) s.push_back(alphabet[rng() % alphabet.size()]);
    if (s.find(':') == std::string::npos) continue;
    in6_addr want{};
    bool c_ok = inet_pton(AF_INET6, s.c_str(), &want) == 1;
    auto got = parse_ip_literal(s);
    ASSERT_EQ(c_ok, got.has_value()) << s;
    if (c_ok) {
      ASSERT_EQ(0, memcmp(got->to_v6().to_bytes().data(), want.s6_addr, 16)) << s;
    }
  }
}

TEST(Classify, Ipv4Ranges) {
  EXPECT_EQ(cls("8.8.8.8"), AddressClass::Public);
  EXPECT_EQ(cls("1.1.1.1"), AddressClass::Public);
  EXPECT_EQ(cls("127.0.0.1"), AddressClass::Loopback);
  EXPECT_EQ(cls("127.255.255.254"), AddressClass::Loopback);
  EXPECT_EQ(cls("10.0.0.5"), AddressClass::Private);
  EXPECT_EQ(cls("172.16.0.1"), AddressClass::Private);
  EXPECT_EQ(cls("172.31.255.255"), AddressClass::Private);
  EXPECT_EQ(cls("172.32.0.1"), AddressClass::Public);
  EXPECT_EQ(cls("172.15.255.255"), AddressClass::Public);
  EXPECT_EQ(cls("192.168.1.1"), AddressClass::Private);
  EXPECT_EQ(cls("169.254.1.1"), AddressClass::LinkLocal);
  EXPECT_EQ(cls("169.254.169.254"), AddressClass::Metadata);
  EXPECT_EQ(cls("100.100.100.200"), AddressClass::Metadata);
  EXPECT_EQ(cls("168.63.129.16"), AddressClass::Metadata);
  EXPECT_EQ(cls("100.64.0.1"), AddressClass::Cgnat);
  EXPECT_EQ(cls("100.127.255.255"), AddressClass::Cgnat);
  EXPECT_EQ(cls("100.128.0.1"), AddressClass::Public);
  EXPECT_EQ(cls("224.0.0.1"), AddressClass::Multicast);
  EXPECT_EQ(cls("239.255.255.250"), AddressClass::Multicast);
  EXPECT_EQ(cls("0.0.0.0"), AddressClass::Unspecified);
  EXPECT_EQ(cls("0.1.2.3"), AddressClass::Unspecified);
  EXPECT_EQ(cls("255.255.255.255"), AddressClass::Broadcast);
  EXPECT_EQ(cls("240.0.0.1"), AddressClass::Reserved);
  EXPECT_EQ(cls("192.0.0.8"), AddressClass::Reserved);
  EXPECT_EQ(cls("198.18.0.1"), AddressClass::Reserved);
  EXPECT_EQ(cls("198.19.255.255"), AddressClass::Reserved);
  EXPECT_EQ(cls("198.20.0.1"), AddressClass::Public);
  EXPECT_EQ(cls("192.0.2.1"), AddressClass::Reserved);
  EXPECT_EQ(cls("198.51.100.1"), AddressClass::Reserved);
  EXPECT_EQ(cls("203.0.113.1"), AddressClass::Reserved);
}

TEST(Classify, Ipv6Ranges) {
  EXPECT_EQ(cls("2606:4700::1111"), AddressClass::Public);
  EXPECT_EQ(cls("::1"), AddressClass::Loopback);
  EXPECT_EQ(cls("::"), AddressClass::Unspecified);
  EXPECT_EQ(cls("fe80::1"), AddressClass::LinkLocal);
  EXPECT_EQ(cls("febf::1"), AddressClass::LinkLocal);
  EXPECT_EQ(cls("fc00::1"), AddressClass::UniqueLocal);
  EXPECT_EQ(cls("fd12:3456::1"), AddressClass::UniqueLocal);
  EXPECT_EQ(cls("fd00:ec2::254"), AddressClass::Metadata);
  EXPECT_EQ(cls("ff02::1"), AddressClass::Multicast);
  EXPECT_EQ(cls("2001:db8::1"), AddressClass::Reserved);
  EXPECT_EQ(cls("100::1"), AddressClass::Reserved);
  EXPECT_EQ(cls("fec0::1"), AddressClass::Reserved);
  EXPECT_EQ(cls("4000::1"), AddressClass::Reserved);  // outside 2000::/3
  EXPECT_EQ(cls("2001:2::1"), AddressClass::Reserved);
  EXPECT_EQ(cls("2001:10::1"), AddressClass::Reserved);
  EXPECT_EQ(cls("2001:20::1"), AddressClass::Reserved);
  EXPECT_EQ(cls("2001:30::1"), AddressClass::Public);
}

TEST(Classify, EmbeddedIpv4IsClassifiedByTheIpv4) {
  EXPECT_EQ(cls("[::ffff:127.0.0.1]"), AddressClass::Loopback);
  EXPECT_EQ(cls("::ffff:7f00:1"), AddressClass::Loopback);
  EXPECT_EQ(cls("::ffff:10.0.0.1"), AddressClass::Private);
  EXPECT_EQ(cls("::ffff:169.254.169.254"), AddressClass::Metadata);
  EXPECT_EQ(cls("::ffff:8.8.8.8"), AddressClass::Public);
  EXPECT_EQ(cls("::127.0.0.1"), AddressClass::Loopback);       // IPv4-compatible
  EXPECT_EQ(cls("::10.1.2.3"), AddressClass::Private);
  EXPECT_EQ(cls("::8.8.8.8"), AddressClass::Public);
  EXPECT_EQ(cls("64:ff9b::10.0.0.1"), AddressClass::Private);  // NAT64
  EXPECT_EQ(cls("64:ff9b::a9fe:a9fe"), AddressClass::Metadata);
  EXPECT_EQ(cls("64:ff9b::8.8.8.8"), AddressClass::Public);
  EXPECT_EQ(cls("64:ff9b:1::1"), AddressClass::Reserved);       // local-use NAT64
  EXPECT_EQ(cls("2002:7f00:1::1"), AddressClass::Loopback);      // 6to4
  EXPECT_EQ(cls("2002:c0a8:101::1"), AddressClass::Private);
  EXPECT_EQ(cls("2002:808:808::1"), AddressClass::Public);
  EXPECT_EQ(cls("2001:0:4136:e378:8000:63bf:80ff:fffe"), AddressClass::Loopback);  // Teredo, client 127.0.0.1
  EXPECT_EQ(cls("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), AddressClass::Public);    // client 8.8.8.8
  ASSERT_TRUE(embedded_ipv4(make_address("2002:c0a8:101::1").to_v6()));
  EXPECT_EQ(embedded_ipv4(make_address("2002:c0a8:101::1").to_v6())->to_string(), "192.168.1.1");
  EXPECT_FALSE(embedded_ipv4(make_address("2606:4700::1111").to_v6()));
}

TEST(Classify, HostOwnAddresses) {
  std::vector<IpAddress> own = {make_address("203.0.114.7"), make_address("127.0.0.1"), make_address("10.0.0.2"),
                                make_address("fe80::1%1"), make_address("2a01:4f8::5")};
  EXPECT_EQ(cls("203.0.114.7", own), AddressClass::HostOwn);
  EXPECT_EQ(cls("::ffff:203.0.114.7", own), AddressClass::HostOwn);
  EXPECT_EQ(cls("2002:cb00:7207::1", own), AddressClass::HostOwn);  // 6to4 of 203.0.114.7
  EXPECT_EQ(cls("10.0.0.2", own), AddressClass::HostOwn);
  EXPECT_EQ(cls("10.0.0.3", own), AddressClass::Private);
  EXPECT_EQ(cls("127.0.0.1", own), AddressClass::Loopback);  // loopback stays loopback
  EXPECT_EQ(cls("fe80::1", own), AddressClass::HostOwn);     // whatever the zone
  EXPECT_EQ(cls("2a01:4f8::5", own), AddressClass::HostOwn);
  EXPECT_EQ(cls("2a01:4f8::6", own), AddressClass::Public);
}

TEST(Classify, HostOwnAddressesIncludeLoopback) {
  auto own = host_own_addresses();
  bool has_loopback = false;
  for (const auto& a : own) has_loopback |= a.is_loopback();
  EXPECT_TRUE(has_loopback);
}

TEST(Classify, NamesAreStable) {
  EXPECT_EQ(address_class_name(AddressClass::Private), "private (RFC 1918)");
  EXPECT_EQ(address_class_name(AddressClass::Loopback), "loopback");
  EXPECT_EQ(address_class_phrase(AddressClass::Private), "private address (RFC 1918)");
  EXPECT_EQ(address_class_phrase(AddressClass::Metadata), "cloud metadata address");
}

TEST(Format, Endpoints) {
  EXPECT_EQ(format_endpoint(make_address("10.0.0.5"), 80), "10.0.0.5:80");
  EXPECT_EQ(format_endpoint(make_address("fd00::1"), 443), "[fd00::1]:443");
  EXPECT_EQ(format_endpoint(make_address("fe80::1%1"), 443), "[fe80::1]:443");
  EXPECT_EQ(unmap(make_address("::ffff:10.0.0.5")).to_string(), "10.0.0.5");
  EXPECT_EQ(unmap(make_address("fd00::1")).to_string(), "fd00::1");
}

TEST(Address, LoopbackHostsAreLiteralsOrLocalhost) {
  for (auto h : {"localhost", "127.0.0.1", "127.1", "2130706433", "0177.0.0.1", "::1", "[::1]", "::ffff:127.0.0.1"})
    EXPECT_TRUE(is_loopback_host(h)) << h;
  for (auto h : {"example.com", "localhost.example.com", "10.0.0.1", "169.254.169.254", "128.0.0.1", ""})
    EXPECT_FALSE(is_loopback_host(h)) << h;
}
