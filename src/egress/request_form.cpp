#include "egress/request_form.h"

#include <fmt/format.h>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include "net/url.h"

namespace moat::egress {

namespace http = boost::beast::http;

namespace {

// Header values and targets are the sandbox's text: quoted, bounded, in refusals and audit records.
std::string quoted(boost::beast::string_view s) {
  std::string_view v(s.data(), std::min<size_t>(s.size(), 200));
  return fmt::format("'{}'{}", v, s.size() > 200 ? "..." : "");
}

}  // namespace

std::optional<std::string> credential_request_refusal(const http::request_header<>& req,
                                                      const CredentialDestination& dest) {
  auto where = net::authority_text(dest.host, dest.port);
  if (req.method() == http::verb::connect)
    return fmt::format("a CONNECT inside the session to {} (a tunnel within a tunnel)", where);
  auto target = req.target();
  // "//host/x" is origin-form to a parser and a network-path reference to some front ends.
  bool origin_form = !target.empty() && target.front() == '/' && !target.starts_with("//");
  bool asterisk = req.method() == http::verb::options && target == "*";
  if (!origin_form && !asterisk)
    return fmt::format("request target {} to {} is not origin-form ('/path'): an absolute or authority target "
                       "could send the credential elsewhere",
                       quoted(target), where);
  auto hosts = req.equal_range(http::field::host);
  size_t host_count = static_cast<size_t>(std::distance(hosts.first, hosts.second));
  if (host_count != 1)
    return fmt::format("a request to {} with {} Host headers (exactly one is allowed)", where, host_count);
  if (dest.host_must_match) {
    auto value = req[http::field::host];
    auto named = net::parse_authority(std::string_view(value.data(), value.size()), dest.port);
    if (!named || named->host != dest.host || named->port != dest.port)
      return fmt::format("a request inside the session to {} named Host {}", where, quoted(value));
  }
  auto lengths = req.equal_range(http::field::content_length);
  size_t length_count = static_cast<size_t>(std::distance(lengths.first, lengths.second));
  if (length_count > 1) return fmt::format("a request to {} with {} Content-Length headers", where, length_count);
  if (length_count == 1 && req.count(http::field::transfer_encoding) > 0)
    return fmt::format("a request to {} framed by both Content-Length and Transfer-Encoding", where);
  if (req.count(http::field::transfer_encoding) > 0) {
    auto te = req[http::field::transfer_encoding];
    if (req.count(http::field::transfer_encoding) > 1 || !boost::beast::iequals(te, "chunked"))
      return fmt::format("a request to {} with Transfer-Encoding {} (only a single 'chunked' is relayed)", where,
                         quoted(te));
  }
  // Connection names headers to drop at this hop; naming the framing or the Host would change the
  // message after it was checked.
  for (auto token : http::token_list(req[http::field::connection])) {
    auto named = http::string_to_field(token);
    if (named == http::field::host || named == http::field::content_length || named == http::field::transfer_encoding)
      return fmt::format("a request to {} whose Connection header names {} (hop-by-hop only)", where,
                         quoted(token));
  }
  return std::nullopt;
}

}  // namespace moat::egress
