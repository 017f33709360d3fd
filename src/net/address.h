#pragma once
// What an address is, before moatd connects to it: the gateway for a sandbox's traffic, the HTTP
// client for a webhook callback. A host string is an IP literal in whatever
// form the C library would accept (so "0177.0.0.1" and "2130706433" cannot slip past as "names"),
// and every address falls in one class; only Public addresses are reachable without an explicit rule.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace moat::net {

using IpAddress = boost::asio::ip::address;

// Parses a host as an IP literal the way the C library would: every inet_aton form for IPv4
// ("2130706433", "0177.0.0.1", "0x7f.1", "127.1"; one trailing dot tolerated, as URL parsers do) and
// inet_pton for IPv6, bare or bracketed ("[::ffff:127.0.0.1]", "::ffff:7f00:1"; a "%zone" suffix is
// accepted as the C library does). Anything else — including a literal with trailing junk or an
// embedded NUL — is nullopt, which means "a name".
std::optional<IpAddress> parse_ip_literal(std::string_view host);

enum class AddressClass {
  Public,
  Loopback,     // 127/8, ::1
  Private,      // RFC 1918: 10/8, 172.16/12, 192.168/16
  LinkLocal,    // 169.254/16, fe80::/10
  Cgnat,        // RFC 6598: 100.64/10
  Multicast,    // 224/4, ff00::/8
  UniqueLocal,  // fc00::/7
  Metadata,     // cloud instance metadata: 169.254.169.254, fd00:ec2::254, 100.100.100.200, 168.63.129.16
  Unspecified,  // 0/8, ::
  Broadcast,    // 255.255.255.255
  Reserved,     // 240/4, 192.0.0/24, benchmarking, documentation, discard, non-global IPv6, ...
  HostOwn,      // one of the gateway host's own addresses
};

// Short lower-case name: "loopback", "private (RFC 1918)", "cloud metadata", ...
std::string_view address_class_name(AddressClass c);
// As written in refusals: "loopback address", "private address (RFC 1918)", "cloud metadata address".
std::string_view address_class_phrase(AddressClass c);

// IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16) and
// Teredo (2001::/32, by its client address) IPv6 addresses are classified by the IPv4 address they
// embed. A loopback address stays Loopback even when listed in `own` (the host's addresses, from
// host_own_addresses()); any other address found in `own` (directly or embedded) is HostOwn.
AddressClass classify(const IpAddress& a, std::span<const IpAddress> own = {});

// The IPv4 address an IPv6 address embeds by one of the forms above, if any.
std::optional<boost::asio::ip::address_v4> embedded_ipv4(const boost::asio::ip::address_v6& a);

// An IPv4-mapped IPv6 address as the IPv4 address it maps; anything else unchanged. Used so that a
// rule "10.0.0.5" and a connection to "::ffff:10.0.0.5" are the same destination.
IpAddress unmap(const IpAddress& a);

// "localhost", or an IP literal (any form parse_ip_literal takes) in a loopback range: a host that
// names this machine without a lookup. Other names are false even if they resolve to 127.0.0.1
// (what matters for a connection is checked on the resolved address, with classify()).
bool is_loopback_host(std::string_view host);

// Every address configured on the host's interfaces (getifaddrs); empty if that fails.
std::vector<IpAddress> host_own_addresses();

// "10.0.0.5:80", "[fd00::1]:443" — how an address and port are written in messages and rules.
std::string format_endpoint(const IpAddress& a, uint16_t port);
// "10.0.0.5", "fd00::1" (no brackets, no zone).
std::string format_address(const IpAddress& a);

}  // namespace moat::net
