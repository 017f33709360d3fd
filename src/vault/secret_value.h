#pragma once
// Bytes that hold a secret (a credential value, a key). Move-only, never copied implicitly, and
// wiped (sodium_memzero) when destroyed, so a decrypted value lives only as long as the object the
// caller keeps. The bytes are in sodium_malloc'd memory: locked against swap (mlock), left out of
// core dumps (MADV_DONTDUMP), between guard pages. There is deliberately no formatter and no
// operator<<: a SecretValue cannot end up in a log line or an error message by accident; view() is the
// one, greppable, way to read it. Where its bytes are copied out (an HTTP header on its way
// upstream), the copy is the caller's to wipe; vault.h lists the copies that remain.
#include <cstddef>
#include <memory>
#include <string_view>

namespace moat::vault {

class SecretValue {
 public:
  SecretValue() = default;
  explicit SecretValue(std::string_view bytes);
  explicit SecretValue(size_t size);  // `size` zero bytes, to be filled through data()
  SecretValue(SecretValue&& o) noexcept;
  SecretValue& operator=(SecretValue&& o) noexcept;
  SecretValue(const SecretValue&) = delete;
  SecretValue& operator=(const SecretValue&) = delete;
  ~SecretValue() { wipe(); }

  std::string_view view() const { return {data_.get(), size_}; }
  char* data() { return data_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // A copy, for the rare caller that needs two (explicit so that it shows in review).
  SecretValue clone() const { return SecretValue(view()); }

 private:
  void wipe();
  struct SodiumFree {
    void operator()(char* p) const;
  };
  std::unique_ptr<char, SodiumFree> data_;  // sodium_malloc'd; null when empty
  size_t size_ = 0;
};

}  // namespace moat::vault
