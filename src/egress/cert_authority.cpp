#include "egress/cert_authority.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "base/fs.h"
#include "base/log.h"
#include "net/tls_errors.h"
#include "vault/private_file.h"

namespace moat::egress {

namespace {

constexpr std::string_view kKeyWhat = "the egress CA key";
constexpr int64_t kDay = 86400;
constexpr int64_t kCaValidity = 3653 * kDay;  // 10 years
constexpr int64_t kLeafValidity = 30 * kDay;
constexpr int64_t kLeafRenewBefore = 7 * kDay;
constexpr size_t kMaxCachedLeaves = 4096;

template <class T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using NamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;

// The failed step, with OpenSSL's reasons (net::tls_errors), as an internal error.
template <class... Args>
std::unexpected<Error> ssl_fail(fmt::format_string<Args...> f, Args&&... args) {
  return fail(ErrorKind::Internal, "{} ({})", fmt::format(f, std::forward<Args>(args)...), net::tls_errors());
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

Result<std::string> cert_pem(X509* x) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), x) != 1) return ssl_fail("cannot encode a certificate");
  return bio_text(bio.get());
}

Result<std::string> key_pem(EVP_PKEY* k) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return ssl_fail("cannot encode a private key");
  return bio_text(bio.get());
}

Result<PkeyPtr> new_p256_key() {
  PkeyPtr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!k) return ssl_fail("cannot generate an EC P-256 key");
  return k;
}

// Positive 128-bit random serial (RFC 5280 allows up to 20 octets; unpredictable serials matter).
Status set_random_serial(X509* x) {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) return ssl_fail("cannot draw a random serial number");
  raw[0] &= 0x7f;
  raw[0] |= 0x01;  // never zero, always 16 bytes
  BnPtr bn(BN_bin2bn(raw, sizeof raw, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x))) return ssl_fail("cannot set a serial number");
  return {};
}

Status add_ext(X509* x, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(x, ext.get(), -1) != 1) return ssl_fail("cannot add the extension {}", OBJ_nid2sn(nid));
  return {};
}

Status set_validity(X509* x, int64_t back, int64_t ahead) {
  if (!X509_gmtime_adj(X509_getm_notBefore(x), -back) || !X509_gmtime_adj(X509_getm_notAfter(x), ahead))
    return ssl_fail("cannot set a validity period");
  return {};
}

int64_t not_after_of(const X509* x) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

Result<X509Ptr> make_ca_cert(EVP_PKEY* key) {
  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) return ssl_fail("cannot make the CA certificate");
  if (auto st = set_random_serial(x.get()); !st) return std::unexpected(st.error());
  if (auto st = set_validity(x.get(), kDay, kCaValidity); !st) return std::unexpected(st.error());
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || !host[0]) std::strcpy(host, "localhost");
  std::string cn = fmt::format("moat egress CA {}", host).substr(0, 64);
  X509_NAME* name = X509_get_subject_name(x.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("moat"), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(x.get(), name) != 1 || X509_set_pubkey(x.get(), key) != 1)
    return ssl_fail("cannot make the CA certificate");
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (auto st = add_ext(x.get(), x.get(), nid, value); !st) return std::unexpected(st.error());
  }
  if (X509_sign(x.get(), key, EVP_sha256()) <= 0) return ssl_fail("cannot sign the CA certificate");
  return x;
}

Result<PkeyPtr> parse_key(std::string_view pem, const std::filesystem::path& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr k(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!k) {
    ERR_clear_error();
    return fail(ErrorKind::InvalidInput,
                "{} {} is not a PEM private key; move it away and restart moatd to make a new CA (sandboxes then "
                "trust the new certificate when they restart)",
                kKeyWhat, path.string());
  }
  return k;
}

Result<X509Ptr> parse_cert(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr x(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!x) {
    ERR_clear_error();
    return fail(ErrorKind::InvalidInput, "not a PEM certificate");
  }
  return x;
}

// A DNS name for a leaf: labels of letters, digits, '-' and '_', 253 characters at most.
bool valid_dns_name(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  size_t label = 0;
  for (char c : h) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
    if (++label > 63) return false;
  }
  return label > 0;
}

}  // namespace

Result<CertAuthority> CertAuthority::open_or_create(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return fail(ErrorKind::Unavailable, "cannot create the egress CA directory {}: {}", dir.string(), strerror(errno));
  auto key_path = dir / "ca.key";
  auto cert_path = dir / "ca.crt";

  PkeyPtr key;
  auto key_file = vault::read_private_file(key_path, kKeyWhat, 64 * 1024);
  if (!key_file && key_file.error().kind == ErrorKind::NotFound) {
    auto fresh = new_p256_key();
    if (!fresh) return std::unexpected(fresh.error());
    auto pem = key_pem(fresh->get());
    if (!pem) return std::unexpected(pem.error());
    auto st = vault::create_private_file(key_path, *pem, kKeyWhat);
    OPENSSL_cleanse(pem->data(), pem->size());
    if (st) {
      key = std::move(*fresh);
      log::info("created the egress CA key {}", key_path.string());
    } else if (st.error().kind == ErrorKind::Conflict) {
      key_file = vault::read_private_file(key_path, kKeyWhat, 64 * 1024);  // made by someone else first
    } else {
      return std::unexpected(st.error());
    }
  }
  if (!key) {
    if (!key_file) return std::unexpected(key_file.error());
    auto parsed = parse_key(key_file->view(), key_path);
    if (!parsed) return std::unexpected(parsed.error());
    key = std::move(*parsed);
  }

  // The certificate is public and derived: re-issue it when absent, unreadable, for another key, or
  // within a month of expiring.
  X509Ptr cert;
  std::string why;
  if (auto text = read_file(cert_path); !text) {
    why = text.error().kind == ErrorKind::NotFound ? "" : text.error().message;
  } else if (auto parsed = parse_cert(*text); !parsed) {
    why = fmt::format("{} is not a PEM certificate", cert_path.string());
  } else if (X509_check_private_key(parsed->get(), key.get()) != 1) {
    ERR_clear_error();
    why = fmt::format("{} does not belong to {}", cert_path.string(), key_path.string());
  } else if (not_after_of(parsed->get()) < std::time(nullptr) + 30 * kDay) {
    why = fmt::format("{} expires within a month", cert_path.string());
  } else {
    cert = std::move(*parsed);
  }
  if (!cert) {
    if (!why.empty()) log::warn("egress CA: {}; issuing a new CA certificate from the same key", why);
    auto made = make_ca_cert(key.get());
    if (!made) return std::unexpected(made.error());
    auto pem = cert_pem(made->get());
    if (!pem) return std::unexpected(pem.error());
    if (auto st = write_file_atomic(cert_path, *pem, 0644); !st) return std::unexpected(st.error());
    cert = std::move(*made);
  }

  CertAuthority ca;
  auto pem = cert_pem(cert.get());
  if (!pem) return std::unexpected(pem.error());
  ca.ca_pem_ = std::move(*pem);
  ca.key_ = std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free);
  ca.cert_ = std::shared_ptr<X509>(cert.release(), X509_free);
  ca.cert_file_ = cert_path;
  return ca;
}

Result<LeafCert> CertAuthority::leaf_for(std::string_view asked) {
  std::string host(asked);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (!host.empty() && host.back() == '.') host.pop_back();
  std::transform(host.begin(), host.end(), host.begin(), [](unsigned char c) { return std::tolower(c); });
  bool is_ip = false;
  {
    unsigned char buf[sizeof(in6_addr)];
    is_ip = inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
  }
  if (!is_ip && !valid_dns_name(host))
    return fail(ErrorKind::InvalidInput, "cannot make a certificate for '{}': not a host name or IP address", asked);

  std::lock_guard g(cache_->mu);
  if (auto it = cache_->leaves.find(host);
      it != cache_->leaves.end() && it->second.not_after - kLeafRenewBefore > std::time(nullptr))
    return it->second;
  auto leaf = mint(host, is_ip);
  if (!leaf) return leaf;
  if (cache_->leaves.size() >= kMaxCachedLeaves) cache_->leaves.clear();  // bound memory; minting is cheap
  cache_->leaves[host] = *leaf;
  return leaf;
}

Result<LeafCert> CertAuthority::mint(const std::string& host, bool is_ip) {
  auto key = new_p256_key();
  if (!key) return std::unexpected(key.error());
  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) return ssl_fail("cannot make a certificate for {}", host);
  if (auto st = set_random_serial(x.get()); !st) return std::unexpected(st.error());
  if (auto st = set_validity(x.get(), kDay, kLeafValidity); !st) return std::unexpected(st.error());
  // CN is limited to 64 characters; the SAN is what clients check, and it is critical when the
  // subject is empty (RFC 5280 4.2.1.6).
  bool with_cn = host.size() <= 64;
  X509_NAME* name = X509_get_subject_name(x.get());
  if (with_cn && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                            reinterpret_cast<const unsigned char*>(host.c_str()), -1, -1, 0) != 1)
    return ssl_fail("cannot name the certificate for {}", host);
  if (X509_set_issuer_name(x.get(), X509_get_subject_name(cert_.get())) != 1 || X509_set_pubkey(x.get(), key->get()) != 1)
    return ssl_fail("cannot make a certificate for {}", host);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "serverAuth"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (auto st = add_ext(x.get(), cert_.get(), nid, value); !st) return std::unexpected(st.error());
  }
  // The SAN is built from the validated host directly, never through the config-string parser
  // (where ',' or ':' in a name would be syntax).
  NamesPtr names(GENERAL_NAMES_new());
  GENERAL_NAME* gn = GENERAL_NAME_new();
  if (!names || !gn) return ssl_fail("cannot make a certificate for {}", host);
  if (is_ip) {
    ASN1_OCTET_STRING* ip = a2i_IPADDRESS(host.c_str());
    if (!ip) {
      GENERAL_NAME_free(gn);
      return ssl_fail("cannot encode the address {}", host);
    }
    GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
  } else {
    ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
    if (!dns || ASN1_STRING_set(dns, host.data(), static_cast<int>(host.size())) != 1) {
      ASN1_IA5STRING_free(dns);
      GENERAL_NAME_free(gn);
      return ssl_fail("cannot encode the name {}", host);
    }
    GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
  }
  if (sk_GENERAL_NAME_push(names.get(), gn) == 0) {
    GENERAL_NAME_free(gn);
    return ssl_fail("cannot make a certificate for {}", host);
  }
  if (X509_add1_ext_i2d(x.get(), NID_subject_alt_name, names.get(), with_cn ? 0 : 1, X509V3_ADD_DEFAULT) != 1)
    return ssl_fail("cannot add the subjectAltName for {}", host);
  if (X509_sign(x.get(), key_.get(), EVP_sha256()) <= 0) return ssl_fail("cannot sign the certificate for {}", host);

  LeafCert leaf;
  auto leaf_pem = cert_pem(x.get());
  if (!leaf_pem) return std::unexpected(leaf_pem.error());
  auto kpem = key_pem(key->get());
  if (!kpem) return std::unexpected(kpem.error());
  leaf.cert_pem = *leaf_pem + ca_pem_;
  leaf.key_pem = std::move(*kpem);
  leaf.not_after = not_after_of(x.get());
  return leaf;
}

}  // namespace moat::egress
