#pragma once
// The gateway's TLS contexts: one client context for upstreams (verifying against the host's trust
// store plus [egress] upstream_ca_file, HTTP/1.1 by ALPN), and server contexts for interception, one
// per destination host, each holding a leaf the installation's CA minted for that host.
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <utility>  // before asio: boost 1.74's awaitable.hpp uses std::exchange without including it
#include <boost/asio/ssl.hpp>

#include "base/result.h"

namespace moat::egress {

class CertAuthority;

class TlsContexts {
 public:
  static Result<std::unique_ptr<TlsContexts>> create(const std::filesystem::path& extra_ca_file, CertAuthority& ca);

  boost::asio::ssl::context& upstream() { return upstream_; }
  // The interception context for `host`, made on first use. Event-loop thread only.
  Result<std::shared_ptr<boost::asio::ssl::context>> server_for(const std::string& host);

 private:
  TlsContexts(CertAuthority& ca) : ca_(ca), upstream_(boost::asio::ssl::context::tls_client) {}
  CertAuthority& ca_;
  boost::asio::ssl::context upstream_;
  std::map<std::string, std::shared_ptr<boost::asio::ssl::context>> servers_;
};

}  // namespace moat::egress
