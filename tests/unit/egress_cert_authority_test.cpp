// The interception CA: made once, kept across restarts, key file locked down, and leaves that real
// TLS verification (chain, purpose, host name or address) accepts.
#include "egress/cert_authority.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "base/fs.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::egress;
using moat::testing::TempDir;

namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr first_cert(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509Ptr x(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return x;
}

std::vector<X509Ptr> all_certs(std::string_view pem) {
  std::vector<X509Ptr> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();
  BIO_free(bio);
  return out;
}

mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(stat(p.c_str(), &st), 0);
  return st.st_mode & 07777;
}

// Verifies `leaf` against `ca` alone, for TLS server use, optionally for a host name or address.
// Returns X509_V_OK or OpenSSL's error code.
int verify(X509* leaf, X509* ca, const std::string& host = "", bool is_ip = false) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  if (!host.empty()) {
    if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    else X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  }
  int ok = X509_verify_cert(ctx);
  int err = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return err;
}

std::string verify_text(int err) { return X509_verify_cert_error_string(err); }

CertAuthority open_ca(const std::filesystem::path& dir) {
  auto ca = CertAuthority::open_or_create(dir);
  if (!ca) ADD_FAILURE() << ca.error().message;
  return std::move(*ca);
}

}  // namespace

TEST(EgressCertAuthority, MadeAtFirstStartWithLockedDownKey) {
  TempDir dir("moat-ca");
  auto ca = open_ca(dir / "ca");
  EXPECT_EQ(mode_of(dir / "ca" / "ca.key"), 0600);
  EXPECT_EQ(mode_of(dir / "ca" / "ca.crt"), 0644);
  EXPECT_EQ(ca.ca_cert_file(), dir / "ca" / "ca.crt");
  EXPECT_EQ(read_file(dir / "ca" / "ca.crt").value(), ca.ca_cert_pem());

  auto cert = first_cert(ca.ca_cert_pem());
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 1);
  EXPECT_EQ(X509_check_issued(cert.get(), cert.get()), X509_V_OK);  // self-signed
  EXPECT_EQ(X509_verify(cert.get(), X509_get0_pubkey(cert.get())), 1);
  EXPECT_LT(X509_cmp_current_time(X509_get0_notBefore(cert.get())), 0);
  EXPECT_GT(X509_cmp_current_time(X509_get0_notAfter(cert.get())), 0);
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn);
  EXPECT_TRUE(std::string(cn).starts_with("moat egress CA ")) << cn;
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_KEY_CERT_SIGN);
  EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(cert.get())), EVP_PKEY_EC);
  // About ten years.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())), 1);
  EXPECT_GE(days, 3650);
  // The key is not in the certificate file.
  EXPECT_EQ(ca.ca_cert_pem().find("PRIVATE KEY"), std::string::npos);
}

TEST(EgressCertAuthority, LeafVerifiesForItsHostOnly) {
  TempDir dir("moat-ca");
  auto ca = open_ca(dir.path());
  auto ca_cert = first_cert(ca.ca_cert_pem());

  auto leaf = ca.leaf_for("API.Example.com.");
  ASSERT_TRUE(leaf) << leaf.error().message;
  auto chain = all_certs(leaf->cert_pem);
  ASSERT_EQ(chain.size(), 2u);  // leaf, then the CA
  EXPECT_EQ(X509_cmp(chain[1].get(), ca_cert.get()), 0);
  X509* x = chain[0].get();

  EXPECT_EQ(verify(x, ca_cert.get()), X509_V_OK) << verify_text(verify(x, ca_cert.get()));
  EXPECT_EQ(verify(x, ca_cert.get(), "api.example.com"), X509_V_OK);
  EXPECT_EQ(verify(x, ca_cert.get(), "evil.example.com"), X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(X509_check_host(x, "api.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(x, "example.com", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ca(x), 0);
  EXPECT_TRUE(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
  EXPECT_FALSE(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
  ASSERT_NE(X509_get0_subject_key_id(x), nullptr);
  ASSERT_NE(X509_get0_authority_key_id(x), nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x), X509_get0_subject_key_id(ca_cert.get())), 0);
  // Serial: random, 128 bits with the top bit clear (positive).
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr);
  EXPECT_GE(BN_num_bits(serial), 100);
  EXPECT_LE(BN_num_bits(serial), 127);
  BN_free(serial);
  // From a day back to 30 days ahead.
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
  EXPECT_EQ(days, 31);
  EXPECT_GT(leaf->not_after, time(nullptr) + 29 * 86400);

  // A leaf signed by another CA does not verify against ours.
  TempDir other_dir("moat-ca-other");
  auto other = open_ca(other_dir.path());
  auto foreign = first_cert(other.leaf_for("api.example.com")->cert_pem);
  EXPECT_NE(verify(foreign.get(), ca_cert.get()), X509_V_OK);
}

TEST(EgressCertAuthority, LeavesForAddresses) {
  TempDir dir("moat-ca");
  auto ca = open_ca(dir.path());
  auto ca_cert = first_cert(ca.ca_cert_pem());

  auto v4 = ca.leaf_for("10.1.2.3");
  ASSERT_TRUE(v4) << v4.error().message;
  auto x4 = first_cert(v4->cert_pem);
  EXPECT_EQ(X509_check_ip_asc(x4.get(), "10.1.2.3", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(x4.get(), "10.1.2.4", 0), 0);
  // An IP SAN, not a DNS name (the CN is only a label).
  EXPECT_EQ(X509_check_host(x4.get(), "10.1.2.3", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr), 0);
  EXPECT_EQ(verify(x4.get(), ca_cert.get(), "10.1.2.3", true), X509_V_OK);

  auto v6 = ca.leaf_for("[FD00::1]");
  ASSERT_TRUE(v6) << v6.error().message;
  auto x6 = first_cert(v6->cert_pem);
  EXPECT_EQ(X509_check_ip_asc(x6.get(), "fd00::1", 0), 1);
  EXPECT_EQ(verify(x6.get(), ca_cert.get(), "fd00:0::1", true), X509_V_OK);
}

TEST(EgressCertAuthority, ReopeningKeepsTheSameCa) {
  TempDir dir("moat-ca");
  std::string pem, key;
  std::string leaf_pem;
  {
    auto ca = open_ca(dir.path());
    pem = ca.ca_cert_pem();
    key = read_file(dir / "ca.key").value();
  }
  auto ca = open_ca(dir.path());
  EXPECT_EQ(ca.ca_cert_pem(), pem);
  EXPECT_EQ(read_file(dir / "ca.key").value(), key);
  auto leaf = first_cert(ca.leaf_for("api.example.com")->cert_pem);
  EXPECT_EQ(verify(leaf.get(), first_cert(pem).get(), "api.example.com"), X509_V_OK);

  // A lost certificate is issued again from the same key; old leaves still verify against it.
  std::filesystem::remove(dir / "ca.crt");
  auto again = open_ca(dir.path());
  EXPECT_EQ(read_file(dir / "ca.key").value(), key);
  auto new_cert = first_cert(again.ca_cert_pem());
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(new_cert.get()), X509_get0_pubkey(first_cert(pem).get())), 1);
  EXPECT_EQ(X509_verify(leaf.get(), X509_get0_pubkey(new_cert.get())), 1);
}

TEST(EgressCertAuthority, KeyFileReadableByOthersIsRefused) {
  TempDir dir("moat-ca");
  { auto ca = open_ca(dir.path()); }
  ASSERT_EQ(chmod((dir / "ca.key").c_str(), 0644), 0);
  auto ca = CertAuthority::open_or_create(dir.path());
  ASSERT_FALSE(ca);
  EXPECT_NE(ca.error().message.find((dir / "ca.key").string()), std::string::npos) << ca.error().message;
  EXPECT_NE(ca.error().message.find("chmod 600"), std::string::npos) << ca.error().message;

  ASSERT_EQ(chmod((dir / "ca.key").c_str(), 0600), 0);
  ASSERT_TRUE(write_file_atomic(dir / "ca.key", "garbage", 0600));
  ca = CertAuthority::open_or_create(dir.path());
  ASSERT_FALSE(ca);
  EXPECT_NE(ca.error().message.find("not a PEM private key"), std::string::npos) << ca.error().message;
}

TEST(EgressCertAuthority, BadHostsAreRefused) {
  TempDir dir("moat-ca");
  auto ca = open_ca(dir.path());
  for (auto bad : {"", "a b", "x/y", "a,DNS:evil.com", "evil.com\nx", "a..b", ".", "*.example.com", "[::1"}) {
    auto leaf = ca.leaf_for(bad);
    EXPECT_FALSE(leaf) << "'" << bad << "'";
    if (!leaf) {
      EXPECT_EQ(leaf.error().kind, ErrorKind::InvalidInput);
    }
  }
  // A very long (but valid) name gets no CN and still verifies by its SAN.
  std::string longname = std::string(60, 'a') + "." + std::string(60, 'b') + ".example.com";
  auto leaf = ca.leaf_for(longname);
  ASSERT_TRUE(leaf) << leaf.error().message;
  auto x = first_cert(leaf->cert_pem);
  EXPECT_EQ(verify(x.get(), first_cert(ca.ca_cert_pem()).get(), longname), X509_V_OK);
}

TEST(EgressCertAuthority, CachedPerHostAndThreadSafe) {
  TempDir dir("moat-ca");
  auto ca = open_ca(dir.path());
  auto a1 = ca.leaf_for("a.example.com");
  auto a2 = ca.leaf_for("A.example.com");
  auto b = ca.leaf_for("b.example.com");
  ASSERT_TRUE(a1 && a2 && b);
  EXPECT_EQ(a1->cert_pem, a2->cert_pem);
  EXPECT_EQ(a1->key_pem, a2->key_pem);
  EXPECT_NE(a1->cert_pem, b->cert_pem);
  EXPECT_NE(a1->key_pem, b->key_pem);  // a key per leaf

  auto ca_cert = first_cert(ca.ca_cert_pem());
  std::vector<std::thread> threads;
  std::vector<std::vector<std::string>> seen(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        auto leaf = ca.leaf_for(fmt::format("h{}.example.com", i));
        seen[t].push_back(leaf ? leaf->cert_pem : "");
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < 20; ++i) {
    std::set<std::string> distinct;
    for (auto& s : seen) distinct.insert(s[i]);
    ASSERT_EQ(distinct.size(), 1u) << i;
    auto x = first_cert(*distinct.begin());
    ASSERT_TRUE(x);
    EXPECT_EQ(verify(x.get(), ca_cert.get(), fmt::format("h{}.example.com", i)), X509_V_OK);
  }
}

TEST(EgressCertAuthority, TlsHandshakeWithALeaf) {
  TempDir dir("moat-ca");
  auto ca = open_ca(dir.path());
  auto leaf = ca.leaf_for("api.example.com");
  ASSERT_TRUE(leaf);

  SSL_CTX* sctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  auto chain = all_certs(leaf->cert_pem);
  ASSERT_EQ(SSL_CTX_use_certificate(sctx, chain[0].get()), 1);
  ASSERT_EQ(SSL_CTX_add1_chain_cert(sctx, chain[1].get()), 1);
  BIO* kb = BIO_new_mem_buf(leaf->key_pem.data(), static_cast<int>(leaf->key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  ASSERT_NE(key, nullptr);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(sctx, key), 1);
  EVP_PKEY_free(key);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), first_cert(ca.ca_cert_pem()).get());
  SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, nullptr);

  SSL* server = SSL_new(sctx);
  SSL* client = SSL_new(cctx);
  SSL_set1_host(client, "api.example.com");
  SSL_set_tlsext_host_name(client, "api.example.com");
  BIO *cb = nullptr, *sb = nullptr;
  ASSERT_EQ(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
  SSL_set_bio(client, cb, cb);
  SSL_set_bio(server, sb, sb);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);
  int crc = 0, src = 0;
  for (int i = 0; i < 20 && (crc != 1 || src != 1); ++i) {
    if (crc != 1) crc = SSL_do_handshake(client);
    if (src != 1) src = SSL_do_handshake(server);
  }
  EXPECT_EQ(crc, 1) << ERR_error_string(ERR_get_error(), nullptr);
  EXPECT_EQ(src, 1);
  EXPECT_EQ(SSL_get_verify_result(client), X509_V_OK);
  SSL_free(client);
  SSL_free(server);
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
}
