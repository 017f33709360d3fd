#pragma once
// The per-installation CA the gateway uses to intercept TLS — only toward destinations that have a
// credential binding (every other destination is tunnelled untouched). Its certificate is trusted
// inside every sandbox; its private key never leaves moatd's state directory.
//
// Files, in the directory given to open_or_create():
//   ca.key  PKCS#8 PEM, EC P-256, mode 0600, owned by moatd's user (root); refused otherwise, with the
//           fix named (vault/private_file.h). Created with O_EXCL and never overwritten.
//   ca.crt  PEM, mode 0644: what sandboxes trust. Re-issued from ca.key when missing or not matching it.
// The CA: self-signed, 10 years, CN "moat egress CA <hostname>", basicConstraints critical CA:TRUE
// pathlen:0, keyUsage critical keyCertSign+cRLSign, subject/authority key identifiers.
//
// Leaves: minted on first use per host and cached in memory (re-minted a week before they expire).
// EC P-256, valid from 1 day back to 30 days ahead, random 128-bit serial, SAN DNS:<host> or
// IP:<address>, basicConstraints CA:FALSE, keyUsage digitalSignature, extendedKeyUsage serverAuth,
// SKI/AKI. Thread-safe.
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::egress {

struct LeafCert {
  std::string cert_pem;  // the leaf followed by the CA certificate (ready for use_certificate_chain)
  std::string key_pem;   // the leaf's private key, PKCS#8 PEM
  int64_t not_after = 0; // Unix seconds
};

class CertAuthority {
 public:
  static Result<CertAuthority> open_or_create(const std::filesystem::path& dir);

  CertAuthority(CertAuthority&&) noexcept = default;
  CertAuthority& operator=(CertAuthority&&) noexcept = default;

  // The CA certificate, PEM: what sandboxes add to their trust store.
  const std::string& ca_cert_pem() const { return ca_pem_; }
  // <dir>/ca.crt, for bind-mounting into sandboxes.
  const std::filesystem::path& ca_cert_file() const { return cert_file_; }

  // A leaf for `host`: a DNS name, or an IP literal (IPv6 with or without brackets). Names are
  // lowercased and lose a trailing dot. InvalidInput for anything that is neither.
  Result<LeafCert> leaf_for(std::string_view host);

 private:
  struct Cache {
    std::mutex mu;
    std::map<std::string, LeafCert, std::less<>> leaves;
  };
  CertAuthority() = default;
  Result<LeafCert> mint(const std::string& host, bool is_ip);

  std::shared_ptr<EVP_PKEY> key_;
  std::shared_ptr<X509> cert_;
  std::string ca_pem_;
  std::filesystem::path cert_file_;
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

}  // namespace moat::egress
