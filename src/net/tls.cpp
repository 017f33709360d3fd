#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "net/address.h"
#include "net/tls_errors.h"

namespace moat::net {

Status configure_client_tls(SSL_CTX* ctx, const TlsSettings& settings) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (settings.system_store && SSL_CTX_set_default_verify_paths(ctx) != 1)
    return fail(ErrorKind::Unavailable, "TLS setup: cannot load the host's CA store");
  if (!settings.extra_ca_file.empty() && SSL_CTX_load_verify_locations(ctx, settings.extra_ca_file.c_str(), nullptr) != 1)
    return fail(ErrorKind::InvalidInput, "cannot load the CA file '{}': {}", settings.extra_ca_file.string(), tls_errors());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!settings.alpn.empty()) {
    if (settings.alpn.size() > 255) return fail(ErrorKind::InvalidInput, "TLS setup: the ALPN protocol name is too long");
    std::string wire(1, static_cast<char>(settings.alpn.size()));
    wire += settings.alpn;
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()), static_cast<unsigned>(wire.size()));
  }
  return {};
}

Status expect_peer_identity(SSL* ssl, const std::string& host) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (parse_ip_literal(host)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1)
      return fail(ErrorKind::Internal, "cannot set the expected address {}", host);
    return {};
  }
  if (SSL_set_tlsext_host_name(ssl, host.c_str()) != 1 || SSL_set1_host(ssl, host.c_str()) != 1)
    return fail(ErrorKind::Internal, "cannot set the expected host name {}", host);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return {};
}

std::string tls_failure_text(SSL* ssl, std::string fallback) {
  long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (vr != X509_V_OK) return fmt::format("certificate verification failed: {}", X509_verify_cert_error_string(vr));
  return fallback;
}

}  // namespace moat::net
