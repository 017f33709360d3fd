#include "support/test_ca.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

namespace moat::testing {
namespace fs = std::filesystem;

namespace {

// unique_ptr deleters for OpenSSL objects, so every early throw frees what was made so far.
template <auto Fn>
struct Free {
  template <class T>
  void operator()(T* p) const { Fn(p); }
};
using X509Ptr = std::unique_ptr<X509, Free<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, Free<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Free<BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Free<X509_EXTENSION_free>>;

// Throws with OpenSSL's own explanation appended: "ssl says: ..." is what one needs to debug a cert.
[[noreturn]] void throw_ssl(std::string_view what) {
  std::string detail;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    detail += detail.empty() ? "" : "; ";
    detail += buf;
  }
  throw std::runtime_error(fmt::format("test CA: {} failed{}{}", what, detail.empty() ? "" : ": ", detail));
}

void check(int ok, std::string_view what) {
  if (ok != 1) throw_ssl(what);
}

PkeyPtr make_key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) throw_ssl("EC P-256 key generation");
  return key;
}

bool is_ip_literal(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::string subject_alt_names(const std::vector<std::string>& sans) {
  std::string out;
  for (const auto& s : sans) {
    if (!out.empty()) out += ',';
    out += is_ip_literal(s) ? "IP:" : "DNS:";
    out += s;
  }
  return out;
}

// Adds one extension in openssl.cnf syntax; `issuer` is needed for authorityKeyIdentifier.
void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext) throw_ssl(fmt::format("extension {}={}", OBJ_nid2sn(nid), value));
  check(X509_add_ext(cert, ext.get(), -1), "X509_add_ext");
}

struct Validity {
  long not_before_s;  // seconds relative to now
  long not_after_s;
};
constexpr long kHour = 3600, kDay = 24 * kHour;
// An hour of slack before "now" so a clock a little behind the signer still accepts the cert.
constexpr Validity kValid{-kHour, 30 * kDay};

// Builds and signs one certificate. `issuer`/`issuer_key` null = self-signed with `key`.
X509Ptr make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, bool is_ca,
                  const std::vector<std::string>& sans, Validity validity) {
  X509Ptr cert(X509_new());
  if (!cert) throw_ssl("X509_new");
  check(X509_set_version(cert.get(), X509_VERSION_3), "X509_set_version");

  // Random 159-bit serials: two runs never issue the same (issuer, serial), which some
  // verifiers cache on.
  BnPtr serial(BN_new());
  if (!serial) throw_ssl("BN_new");
  check(BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY), "BN_rand");
  if (!BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) throw_ssl("serial number");

  if (!X509_time_adj_ex(X509_getm_notBefore(cert.get()), 0, validity.not_before_s, nullptr) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), 0, validity.not_after_s, nullptr))
    throw_ssl("validity dates");

  X509_NAME* subject = X509_get_subject_name(cert.get());
  check(X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("moat tests"),
                                   -1, -1, 0),
        "subject O");
  check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()),
                                   -1, -1, 0),
        "subject CN");
  X509* signer = issuer ? issuer : cert.get();
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)), "X509_set_issuer_name");
  check(X509_set_pubkey(cert.get(), key), "X509_set_pubkey");

  // Extensions a strict verifier (OpenSSL's X509_STRICT, Python 3.13's default) insists on: key
  // identifiers both ways, critical basicConstraints on CAs, key usage matching the role.
  add_ext(cert.get(), signer, NID_subject_key_identifier, "hash");
  add_ext(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  if (is_ca) {
    add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_ext(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    if (!sans.empty()) add_ext(cert.get(), signer, NID_subject_alt_name, subject_alt_names(sans));
  }

  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) <= 0) throw_ssl("X509_sign");
  return cert;
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string cert_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) throw_ssl("PEM_write_bio_X509");
  return bio_text(bio.get());
}

std::string key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw_ssl("PEM_write_bio_PrivateKey");
  return bio_text(bio.get());
}

void write_file(const fs::path& path, const std::string& text, fs::perms perms) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error(fmt::format("test CA: cannot write {}", path.string()));
  fs::permissions(path, perms);
}

CertFiles save(const fs::path& dir, std::string_view stem, X509* cert, EVP_PKEY* key) {
  CertFiles f{dir / fmt::format("{}.crt", stem), dir / fmt::format("{}.key", stem), cert_pem(cert), key_pem(key)};
  write_file(f.cert_path, f.cert_pem, fs::perms(0644));
  // 0600 like a real key, so code under test that refuses group/world-readable keys accepts it.
  write_file(f.key_path, f.key_pem, fs::perms(0600));
  return f;
}

}  // namespace

struct TestCa::Keys {
  X509Ptr cert;
  PkeyPtr key;
};

TestCa::TestCa(fs::path dir, std::string_view common_name) : dir_(std::move(dir)), keys_(std::make_unique<Keys>()) {
  keys_->key = make_key();
  // The CA outlives any test by far; 10 days is plenty and keeps it obviously throwaway.
  keys_->cert = make_cert(keys_->key.get(), std::string(common_name), nullptr, nullptr, true, {}, {-kHour, 10 * kDay});
  ca_ = save(dir_, "ca", keys_->cert.get(), keys_->key.get());
}

TestCa::~TestCa() = default;
TestCa::TestCa(TestCa&&) noexcept = default;
TestCa& TestCa::operator=(TestCa&&) noexcept = default;

CertFiles TestCa::issue(std::string_view stem, const std::vector<std::string>& sans) {
  if (sans.empty()) throw std::invalid_argument("test CA: a server certificate needs at least one SAN");
  PkeyPtr key = make_key();
  X509Ptr cert = make_cert(key.get(), sans.front(), keys_->cert.get(), keys_->key.get(), false, sans, kValid);
  return save(dir_, stem, cert.get(), key.get());
}

CertFiles TestCa::issue_bad(std::string_view stem, BadCert kind, const std::vector<std::string>& sans) {
  if (sans.empty()) throw std::invalid_argument("test CA: a server certificate needs at least one SAN");
  PkeyPtr key = make_key();
  X509Ptr cert;
  switch (kind) {
    case BadCert::Expired:
      cert = make_cert(key.get(), sans.front(), keys_->cert.get(), keys_->key.get(), false, sans, {-30 * kDay, -kDay});
      break;
    case BadCert::WrongHost: {
      const std::vector<std::string> wrong{"wrong-host.invalid"};
      cert = make_cert(key.get(), wrong.front(), keys_->cert.get(), keys_->key.get(), false, wrong, kValid);
      break;
    }
    case BadCert::SelfSigned:
      cert = make_cert(key.get(), sans.front(), nullptr, nullptr, false, sans, kValid);
      break;
    case BadCert::UntrustedCa: {
      // A second CA that exists only here: its certificate is never written, so nobody can trust it.
      PkeyPtr other_key = make_key();
      X509Ptr other = make_cert(other_key.get(), "moat untrusted CA", nullptr, nullptr, true, {}, {-kHour, 10 * kDay});
      cert = make_cert(key.get(), sans.front(), other.get(), other_key.get(), false, sans, kValid);
      break;
    }
  }
  return save(dir_, stem, cert.get(), key.get());
}

}  // namespace moat::testing
