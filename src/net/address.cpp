#include "net/address.h"

#include <ifaddrs.h>
#include <netinet/in.h>

#include <array>

#include <fmt/format.h>

namespace moat::net {

namespace {

using boost::asio::ip::address_v4;
using boost::asio::ip::address_v6;

// One inet_aton component: decimal, octal after a leading 0, hex after 0x/0X — exactly what glibc's
// strtoul(base 0) accepts after inet_aton's "must start with a digit" check. nullopt on anything else
// or on a value above 32 bits.
std::optional<uint32_t> parse_aton_part(std::string_view s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
  unsigned base = 10;
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s.remove_prefix(2);
    if (s.empty()) return std::nullopt;  // "0x": strtoul stops at the x, which is trailing junk
  } else if (s[0] == '0') {
    base = 8;
  }
  uint64_t v = 0;
  for (char c : s) {
    unsigned d;
    if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
    else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
    else return std::nullopt;
    if (d >= base) return std::nullopt;
    v = v * base + d;
    if (v > 0xffffffffull) return std::nullopt;
  }
  return static_cast<uint32_t>(v);
}

// inet_aton: "a.b.c.d", "a.b.c" (c is 16 bits), "a.b" (b is 24 bits), "a" (32 bits); the leading
// parts are one byte each.
std::optional<address_v4> parse_inet_aton(std::string_view s) {
  std::array<uint32_t, 4> parts{};
  size_t n = 0;
  while (true) {
    size_t dot = s.find('.');
    if (n == 4) return std::nullopt;
    auto part = parse_aton_part(s.substr(0, dot));
    if (!part) return std::nullopt;
    parts[n++] = *part;
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  static constexpr std::array<uint32_t, 4> kLastMax = {0xffffffffu, 0xffffffu, 0xffffu, 0xffu};
  for (size_t i = 0; i + 1 < n; ++i)
    if (parts[i] > 0xff) return std::nullopt;
  if (parts[n - 1] > kLastMax[n - 1]) return std::nullopt;
  uint32_t v = parts[n - 1];
  for (size_t i = 0; i + 1 < n; ++i) v |= parts[i] << (24 - 8 * i);
  return address_v4(v);
}

std::optional<address_v6> parse_inet6(std::string_view s) {
  if (s.empty() || s.find(':') == std::string_view::npos) return std::nullopt;
  boost::system::error_code ec;
  std::string z(s);
  auto a = boost::asio::ip::make_address_v6(z.c_str(), ec);
  if (ec) return std::nullopt;
  return a;
}

bool in_v4(uint32_t a, uint32_t net, unsigned prefix) {
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (a & mask) == net;
}

constexpr uint32_t v4(unsigned a, unsigned b, unsigned c, unsigned d) { return a << 24 | b << 16 | c << 8 | d; }

AddressClass classify_v4(address_v4 addr) {
  const uint32_t a = addr.to_uint();
  // Metadata before the ranges that contain them, so a refusal names the precise reason.
  if (a == v4(169, 254, 169, 254)) return AddressClass::Metadata;   // AWS, GCP, Azure, OpenStack, ...
  if (a == v4(100, 100, 100, 200)) return AddressClass::Metadata;   // Alibaba Cloud
  if (a == v4(168, 63, 129, 16)) return AddressClass::Metadata;     // Azure WireServer (public-looking)
  if (a == v4(255, 255, 255, 255)) return AddressClass::Broadcast;
  if (in_v4(a, v4(0, 0, 0, 0), 8)) return AddressClass::Unspecified;
  if (in_v4(a, v4(127, 0, 0, 0), 8)) return AddressClass::Loopback;
  if (in_v4(a, v4(10, 0, 0, 0), 8) || in_v4(a, v4(172, 16, 0, 0), 12) || in_v4(a, v4(192, 168, 0, 0), 16))
    return AddressClass::Private;
  if (in_v4(a, v4(169, 254, 0, 0), 16)) return AddressClass::LinkLocal;
  if (in_v4(a, v4(100, 64, 0, 0), 10)) return AddressClass::Cgnat;
  if (in_v4(a, v4(224, 0, 0, 0), 4)) return AddressClass::Multicast;
  if (in_v4(a, v4(240, 0, 0, 0), 4) ||        // future use
      in_v4(a, v4(192, 0, 0, 0), 24) ||       // IETF protocol assignments
      in_v4(a, v4(192, 0, 2, 0), 24) ||       // TEST-NET-1
      in_v4(a, v4(198, 51, 100, 0), 24) ||    // TEST-NET-2
      in_v4(a, v4(203, 0, 113, 0), 24) ||     // TEST-NET-3
      in_v4(a, v4(198, 18, 0, 0), 15) ||      // benchmarking
      in_v4(a, v4(192, 88, 99, 0), 24))       // deprecated 6to4 relay anycast
    return AddressClass::Reserved;
  return AddressClass::Public;
}

// bytes [from, from+len) of a v6 address equal `prefix`.
bool v6_has_prefix(const address_v6::bytes_type& b, std::initializer_list<uint8_t> prefix) {
  size_t i = 0;
  for (uint8_t p : prefix)
    if (b[i++] != p) return false;
  return true;
}

bool all_zero(const address_v6::bytes_type& b, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i)
    if (b[i] != 0) return false;
  return true;
}

address_v4 v4_at(const address_v6::bytes_type& b, size_t at, uint8_t xor_mask = 0) {
  return address_v4(address_v4::bytes_type{static_cast<uint8_t>(b[at] ^ xor_mask), static_cast<uint8_t>(b[at + 1] ^ xor_mask),
                                           static_cast<uint8_t>(b[at + 2] ^ xor_mask), static_cast<uint8_t>(b[at + 3] ^ xor_mask)});
}

AddressClass classify_v6(const address_v6& a) {
  const auto b = a.to_bytes();
  if (a.is_unspecified()) return AddressClass::Unspecified;
  if (a.is_loopback()) return AddressClass::Loopback;
  if (auto e = embedded_ipv4(a)) return classify_v4(*e);
  // fd00:ec2::254 — the AWS instance metadata service over IPv6, inside unique-local space.
  static const address_v6 kAwsMetadata = boost::asio::ip::make_address_v6("fd00:ec2::254");
  if (address_v6(b) == kAwsMetadata) return AddressClass::Metadata;
  if (b[0] == 0xff) return AddressClass::Multicast;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return AddressClass::LinkLocal;
  if ((b[0] & 0xfe) == 0xfc) return AddressClass::UniqueLocal;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return AddressClass::Reserved;  // deprecated site-local
  if (v6_has_prefix(b, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01})) return AddressClass::Reserved;  // local-use NAT64 /48
  if (v6_has_prefix(b, {0x01, 0x00}) && all_zero(b, 2, 8)) return AddressClass::Reserved;      // discard-only 100::/64
  if (v6_has_prefix(b, {0x20, 0x01, 0x0d, 0xb8})) return AddressClass::Reserved;               // documentation
  if (v6_has_prefix(b, {0x3f, 0xff}) && (b[2] & 0xf0) == 0) return AddressClass::Reserved;     // documentation 3fff::/20
  if (v6_has_prefix(b, {0x20, 0x01, 0x00, 0x02, 0x00, 0x00})) return AddressClass::Reserved;   // benchmarking 2001:2::/48
  if (v6_has_prefix(b, {0x20, 0x01, 0x00}) && ((b[3] >> 4) == 1 || (b[3] >> 4) == 2))           // ORCHID 2001:10::/28,
    return AddressClass::Reserved;                                                               // 2001:20::/28
  // Only 2000::/3 is allocated for global unicast; the rest is unassigned or special.
  if ((b[0] & 0xe0) != 0x20) return AddressClass::Reserved;
  return AddressClass::Public;
}

bool same_address(const IpAddress& x, const IpAddress& y) {
  // Compare bytes, not scope ids: fe80::1%eth0 is the host's own address whatever zone was written.
  if (x.is_v4() && y.is_v4()) return x.to_v4() == y.to_v4();
  if (x.is_v6() && y.is_v6()) return x.to_v6().to_bytes() == y.to_v6().to_bytes();
  return false;
}

}  // namespace

std::optional<IpAddress> parse_ip_literal(std::string_view host) {
  if (host.empty() || host.size() > 256 || host.find('\0') != std::string_view::npos) return std::nullopt;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    auto inner = host.substr(1, host.size() - 2);
    if (auto a6 = parse_inet6(inner)) return IpAddress(*a6);
    // "[127.0.0.1]" is no valid URL host, but it is unmistakably an address: treat it as one so it is
    // classified rather than looked up as a name.
    if (auto a4 = parse_inet_aton(inner)) return IpAddress(*a4);
    return std::nullopt;
  }
  if (auto a6 = parse_inet6(host)) return IpAddress(*a6);
  // URL parsers (WHATWG, curl) accept one trailing dot after an IPv4 literal.
  if (host.size() > 1 && host.back() == '.') host.remove_suffix(1);
  if (auto a4 = parse_inet_aton(host)) return IpAddress(*a4);
  return std::nullopt;
}

std::string_view address_class_name(AddressClass c) {
  switch (c) {
    case AddressClass::Public: return "public";
    case AddressClass::Loopback: return "loopback";
    case AddressClass::Private: return "private (RFC 1918)";
    case AddressClass::LinkLocal: return "link-local";
    case AddressClass::Cgnat: return "carrier-grade NAT (RFC 6598)";
    case AddressClass::Multicast: return "multicast";
    case AddressClass::UniqueLocal: return "unique-local IPv6";
    case AddressClass::Metadata: return "cloud metadata";
    case AddressClass::Unspecified: return "unspecified";
    case AddressClass::Broadcast: return "broadcast";
    case AddressClass::Reserved: return "reserved";
    case AddressClass::HostOwn: return "host's own";
  }
  return "unknown";
}

std::string_view address_class_phrase(AddressClass c) {
  switch (c) {
    case AddressClass::Public: return "public address";
    case AddressClass::Loopback: return "loopback address";
    case AddressClass::Private: return "private address (RFC 1918)";
    case AddressClass::LinkLocal: return "link-local address";
    case AddressClass::Cgnat: return "carrier-grade NAT address (RFC 6598)";
    case AddressClass::Multicast: return "multicast address";
    case AddressClass::UniqueLocal: return "unique-local IPv6 address";
    case AddressClass::Metadata: return "cloud metadata address";
    case AddressClass::Unspecified: return "unspecified address";
    case AddressClass::Broadcast: return "broadcast address";
    case AddressClass::Reserved: return "reserved or special-purpose address";
    case AddressClass::HostOwn: return "address of this host";
  }
  return "unknown address";
}

std::optional<address_v4> embedded_ipv4(const address_v6& a) {
  const auto b = a.to_bytes();
  if (a.is_v4_mapped()) return v4_at(b, 12);
  // IPv4-compatible ::a.b.c.d (deprecated); :: and ::1 are themselves, not 0.0.0.0 and 0.0.0.1.
  if (all_zero(b, 0, 12) && !a.is_unspecified() && !a.is_loopback()) return v4_at(b, 12);
  if (v6_has_prefix(b, {0x00, 0x64, 0xff, 0x9b}) && all_zero(b, 4, 12)) return v4_at(b, 12);  // NAT64 64:ff9b::/96
  if (v6_has_prefix(b, {0x20, 0x02})) return v4_at(b, 2);                                      // 6to4 2002::/16
  if (v6_has_prefix(b, {0x20, 0x01, 0x00, 0x00})) return v4_at(b, 12, 0xff);                   // Teredo client
  return std::nullopt;
}

AddressClass classify(const IpAddress& a, std::span<const IpAddress> own) {
  AddressClass c = a.is_v4() ? classify_v4(a.to_v4()) : classify_v6(a.to_v6());
  if (c == AddressClass::Loopback) return c;
  std::optional<IpAddress> embedded;
  if (a.is_v6())
    if (auto e = embedded_ipv4(a.to_v6())) embedded = IpAddress(*e);
  for (const auto& o : own) {
    IpAddress ou = unmap(o);
    if (same_address(a, ou) || same_address(a, o) || (embedded && same_address(*embedded, ou)))
      return AddressClass::HostOwn;
  }
  return c;
}

IpAddress unmap(const IpAddress& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return IpAddress(v4_at(a.to_v6().to_bytes(), 12));
  return a;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  auto a = parse_ip_literal(host);
  return a && classify(*a) == AddressClass::Loopback;
}

std::vector<IpAddress> host_own_addresses() {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      out.emplace_back(address_v4(ntohl(sin->sin_addr.s_addr)));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      address_v6::bytes_type bytes;
      std::copy(std::begin(sin6->sin6_addr.s6_addr), std::end(sin6->sin6_addr.s6_addr), bytes.begin());
      out.emplace_back(address_v6(bytes, sin6->sin6_scope_id));
    }
  }
  freeifaddrs(list);
  return out;
}

std::string format_address(const IpAddress& a) {
  if (a.is_v4()) return a.to_v4().to_string();
  return address_v6(a.to_v6().to_bytes()).to_string();  // drop the zone
}

std::string format_endpoint(const IpAddress& a, uint16_t port) {
  if (a.is_v4()) return fmt::format("{}:{}", format_address(a), port);
  return fmt::format("[{}]:{}", format_address(a), port);
}

}  // namespace moat::net
