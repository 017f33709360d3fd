#pragma once
// A throwaway certificate authority for tests that need real TLS: it stands in for the public PKI
// that vouches for api.anthropic.com and web upstreams. Everything is made in-process with the
// OpenSSL 3 EVP API (EC P-256, SHA-256) and written as PEM files the code under test can load
// exactly as it would load a system trust bundle. Failures throw: a fixture that cannot build its
// certificates is a failed test, and tests read better without unwrapping each step.
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moat::testing {

// One certificate and its private key, as PEM text and as files.
struct CertFiles {
  std::filesystem::path cert_path;  // leaf certificate only (PEM)
  std::filesystem::path key_path;   // its private key (PEM, PKCS#8, mode 0600)
  std::string cert_pem;
  std::string key_pem;
};

// Ways a server certificate can be wrong, for "upstream certificate errors are refused" tests.
enum class BadCert {
  Expired,      // signed by the CA, right names, but notAfter is yesterday
  WrongHost,    // signed by the CA, valid dates, but names only "wrong-host.invalid"
  SelfSigned,   // right names and dates, but signs itself (not from any trusted CA)
  UntrustedCa,  // right names and dates, signed by a second CA that nobody trusts
};

class TestCa {
 public:
  // Makes a fresh CA (CN `common_name`, CA:TRUE, keyCertSign) and writes <dir>/ca.crt and
  // <dir>/ca.key. `dir` must exist (typically a TempDir); nothing is written elsewhere.
  explicit TestCa(std::filesystem::path dir, std::string_view common_name = "moat test upstream CA");
  ~TestCa();
  TestCa(TestCa&&) noexcept;
  TestCa& operator=(TestCa&&) noexcept;

  const std::filesystem::path& ca_cert_path() const { return ca_.cert_path; }
  const std::filesystem::path& ca_key_path() const { return ca_.key_path; }
  const std::string& ca_cert_pem() const { return ca_.cert_pem; }
  const std::filesystem::path& dir() const { return dir_; }

  // A server certificate signed by this CA, valid from an hour ago for 30 days, for `sans`: each
  // entry that parses as an IPv4/IPv6 literal becomes an IP SAN, anything else a DNS SAN. The CN is
  // the first SAN. Written to <dir>/<stem>.crt and <dir>/<stem>.key.
  CertFiles issue(std::string_view stem, const std::vector<std::string>& sans = {"localhost", "127.0.0.1"});

  // A deliberately bad server certificate (see BadCert); `sans` as in issue() except for WrongHost,
  // which ignores them.
  CertFiles issue_bad(std::string_view stem, BadCert kind,
                      const std::vector<std::string>& sans = {"localhost", "127.0.0.1"});

 private:
  struct Keys;  // the CA's X509 + EVP_PKEY, kept out of this header so tests need no OpenSSL includes
  std::filesystem::path dir_;
  CertFiles ca_;
  std::unique_ptr<Keys> keys_;
};

}  // namespace moat::testing
