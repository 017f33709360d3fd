#pragma once
// A small blocking HTTP/1.1 client for the model providers: one request per connection (no pool:
// a model call lasts seconds, a handshake milliseconds), over TCP or TLS, no proxy. The response
// body is streamed to a callback as it arrives, chunked or Content-Length or ended by close, so
// server-sent events reach the agent loop as the provider sends them.
//
// TLS verifies the peer against the host's default store plus an optional extra CA file, sends SNI
// and checks the certificate names the host (or its IP address).
#include <chrono>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace moat::agent {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive lookup of the first header with this name.
std::optional<std::string> header_value(const HeaderList& headers, std::string_view name);

struct Url {
  bool tls = false;
  std::string host;  // without brackets for IPv6 literals
  uint16_t port = 0;
  std::string path;  // the base path without a trailing slash: "" or "/v1"

  // host:port as a Host header carries it (brackets for IPv6, port omitted when default).
  std::string authority() const;
};

// Accepts http:// and https:// URLs with an optional port and path; no query, fragment or userinfo.
Result<Url> parse_url(std::string_view url);

struct HttpRequest {
  std::string method = "POST";
  std::string target;  // origin-form: "/v1/messages"
  HeaderList headers;  // Host, Content-Length and Connection are added
  std::string body;
};

struct HttpResponseHead {
  int status = 0;
  std::string reason;
  HeaderList headers;
  std::optional<std::string> header(std::string_view name) const { return header_value(headers, name); }
};

struct HttpOptions {
  // Connect + TLS handshake + sending + the response head must finish within this; after that it
  // is an idle limit: each read of the body must bring bytes within it (a streamed answer may
  // legitimately last longer than any fixed total).
  std::chrono::milliseconds timeout{120000};
  std::filesystem::path extra_ca_file;
  std::function<bool()> cancelled;  // polled while waiting for the network; may be empty
};

// Why a request failed, so the caller can decide about retrying without parsing text.
struct HttpFailure {
  enum class Kind {
    Connect,    // no connection (refused, unreachable, DNS): safe to retry
    Tls,        // handshake or certificate failure: retrying will not help
    Io,         // the connection broke or timed out mid-exchange: retry if nothing was consumed
    Protocol,   // the server spoke something other than HTTP/1.x
    Cancelled,  // options.cancelled() said stop
    Aborted,    // the body callback returned false
  } kind;
  Error error;
};

// Called once with the response head, then with each piece of the decoded body in order; return
// false from on_body to stop reading (the request then fails with Kind::Aborted).
using HeadCallback = std::function<void(const HttpResponseHead&)>;
using BodyCallback = std::function<bool(std::string_view)>;

std::expected<HttpResponseHead, HttpFailure> http_send(const Url& url, const HttpRequest& request,
                                                       const HttpOptions& options, const HeadCallback& on_head,
                                                       const BodyCallback& on_body);

}  // namespace moat::agent
