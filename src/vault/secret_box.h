#pragma once
// The vault's cryptography, all libsodium: a 32-byte key kept in its own file apart from the store,
// and crypto_secretbox (XSalsa20-Poly1305) with a fresh random 24-byte nonce per sealed value. A
// wrong key or a modified nonce/ciphertext fails authentication: open() returns nothing rather than
// garbage.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "vault/secret_value.h"

namespace moat::vault {

// The key lives in sodium_malloc'd memory: guard pages, locked against swap, read-only after set-up,
// wiped when freed. Move-only.
class SecretKey {
 public:
  static constexpr size_t kSize = 32;
  static Result<SecretKey> from_bytes(std::string_view bytes);
  static Result<SecretKey> generate();

  SecretKey(SecretKey&& o) noexcept;
  SecretKey& operator=(SecretKey&& o) noexcept;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  ~SecretKey();

  const unsigned char* data() const { return key_; }

 private:
  SecretKey() = default;
  unsigned char* key_ = nullptr;
};

// Loads the key file (see private_file.h for what is refused). NotFound when it does not exist.
Result<SecretKey> load_key_file(const std::filesystem::path& path);
// Makes a new random key file (mode 0600, O_EXCL). Conflict when one already exists.
Result<SecretKey> create_key_file(const std::filesystem::path& path);

struct Sealed {
  std::string nonce;       // crypto_secretbox_NONCEBYTES
  std::string ciphertext;  // MAC + encrypted plaintext
};
Sealed seal(const SecretKey& key, std::string_view plaintext);
// nullopt when the key is not the one that sealed it or anything was modified.
std::optional<SecretValue> open_sealed(const SecretKey& key, std::string_view nonce, std::string_view ciphertext);

// sodium_init, once; Unavailable when libsodium cannot start (no entropy source).
Status init_sodium();

}  // namespace moat::vault
