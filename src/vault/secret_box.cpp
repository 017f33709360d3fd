#include "vault/secret_box.h"

#include <sodium.h>

#include <cstring>
#include <utility>

#include "vault/private_file.h"

namespace moat::vault {

namespace {
constexpr std::string_view kWhat = "the vault key";
}

Status init_sodium() {
  if (sodium_init() < 0)
    return fail(ErrorKind::Unavailable, "libsodium failed to initialise (no usable random source?); the vault cannot start");
  return {};
}

Result<SecretKey> SecretKey::from_bytes(std::string_view bytes) {
  if (bytes.size() != kSize)
    return fail(ErrorKind::InvalidInput, "a vault key is {} bytes, not {}", kSize, bytes.size());
  if (auto st = init_sodium(); !st) return std::unexpected(st.error());
  SecretKey k;
  k.key_ = static_cast<unsigned char*>(sodium_malloc(kSize));
  if (!k.key_) return fail(ErrorKind::ResourceLimit, "cannot allocate locked memory for the vault key");
  std::memcpy(k.key_, bytes.data(), kSize);
  sodium_mprotect_readonly(k.key_);
  return k;
}

Result<SecretKey> SecretKey::generate() {
  if (auto st = init_sodium(); !st) return std::unexpected(st.error());
  SecretValue raw(kSize);
  randombytes_buf(raw.data(), raw.size());
  return from_bytes(raw.view());
}

SecretKey::SecretKey(SecretKey&& o) noexcept : key_(std::exchange(o.key_, nullptr)) {}

SecretKey& SecretKey::operator=(SecretKey&& o) noexcept {
  if (this != &o) {
    if (key_) sodium_free(key_);
    key_ = std::exchange(o.key_, nullptr);
  }
  return *this;
}

SecretKey::~SecretKey() {
  if (key_) sodium_free(key_);  // wipes, and checks the guard pages
}

Result<SecretKey> load_key_file(const std::filesystem::path& path) {
  // Read more than a key's size so that a wrong file gets the message below.
  auto bytes = read_private_file(path, kWhat, 4096);
  if (!bytes) return std::unexpected(bytes.error());
  if (bytes->size() != SecretKey::kSize)
    return fail(ErrorKind::InvalidInput,
                "the vault key {} is {} bytes, not {}: it is not a moat vault key (restore the right file from a "
                "backup; remove it only if no secret was ever stored)",
                path.string(), bytes->size(), SecretKey::kSize);
  return SecretKey::from_bytes(bytes->view());
}

Result<SecretKey> create_key_file(const std::filesystem::path& path) {
  if (auto st = init_sodium(); !st) return std::unexpected(st.error());
  SecretValue raw(SecretKey::kSize);
  randombytes_buf(raw.data(), raw.size());
  if (auto st = create_private_file(path, raw.view(), kWhat); !st) return std::unexpected(st.error());
  return SecretKey::from_bytes(raw.view());
}

Sealed seal(const SecretKey& key, std::string_view plaintext) {
  Sealed s;
  s.nonce.resize(crypto_secretbox_NONCEBYTES);
  randombytes_buf(s.nonce.data(), s.nonce.size());
  s.ciphertext.resize(crypto_secretbox_MACBYTES + plaintext.size());
  crypto_secretbox_easy(reinterpret_cast<unsigned char*>(s.ciphertext.data()),
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        reinterpret_cast<const unsigned char*>(s.nonce.data()), key.data());
  return s;
}

std::optional<SecretValue> open_sealed(const SecretKey& key, std::string_view nonce, std::string_view ciphertext) {
  if (nonce.size() != crypto_secretbox_NONCEBYTES || ciphertext.size() < crypto_secretbox_MACBYTES) return std::nullopt;
  SecretValue out(ciphertext.size() - crypto_secretbox_MACBYTES);
  if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(out.data()),
                                 reinterpret_cast<const unsigned char*>(ciphertext.data()), ciphertext.size(),
                                 reinterpret_cast<const unsigned char*>(nonce.data()), key.data()) != 0)
    return std::nullopt;
  return out;
}

}  // namespace moat::vault
