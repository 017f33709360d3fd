#include "egress/tls_contexts.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "net/address.h"
#include "egress/cert_authority.h"

namespace moat::egress {
namespace ssl = boost::asio::ssl;

namespace {

// Interception parses HTTP/1.1; a client offering h2 is answered in HTTP/1.1 (every client falls back).
int select_http11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

Result<std::unique_ptr<TlsContexts>> TlsContexts::create(const std::filesystem::path& extra_ca_file, CertAuthority& ca) {
  std::unique_ptr<TlsContexts> t(new TlsContexts(ca));
  boost::system::error_code ec;
  auto& c = t->upstream_;
  c.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  c.set_default_verify_paths(ec);
  if (ec) return fail(ErrorKind::Unavailable, "cannot load the host's CA store for upstream TLS: {}", ec.message());
  if (!extra_ca_file.empty()) {
    c.load_verify_file(extra_ca_file.string(), ec);
    if (ec)
      return fail(ErrorKind::InvalidInput, "egress.upstream_ca_file '{}': cannot load it ({}); it must be PEM certificates",
                  extra_ca_file.string(), ec.message());
  }
  c.set_verify_mode(ssl::verify_peer);
  static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(c.native_handle(), kAlpn, sizeof kAlpn);
  return t;
}

Result<std::shared_ptr<ssl::context>> TlsContexts::server_for(const std::string& host) {
  if (auto it = servers_.find(host); it != servers_.end()) return it->second;
  auto leaf = ca_.leaf_for(host);
  if (!leaf) return std::unexpected(leaf.error());
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  ctx->use_certificate_chain(boost::asio::buffer(leaf->cert_pem), ec);
  if (!ec) ctx->use_private_key(boost::asio::buffer(leaf->key_pem), ssl::context::pem, ec);
  if (ec) return fail(ErrorKind::Internal, "cannot load the interception certificate for {}: {}", host, ec.message());
  SSL_CTX_set_alpn_select_cb(ctx->native_handle(), select_http11, nullptr);
  if (servers_.size() > 4096) servers_.clear();  // bound memory; leaves are cheap to load again
  servers_[host] = ctx;
  return ctx;
}

}  // namespace moat::egress
