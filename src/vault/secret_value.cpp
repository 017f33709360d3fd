#include "vault/secret_value.h"

#include <sodium.h>

#include <cstring>
#include <new>
#include <utility>

namespace moat::vault {

SecretValue::SecretValue(std::string_view bytes) : SecretValue(bytes.size()) {
  if (!bytes.empty()) std::memcpy(data_.get(), bytes.data(), bytes.size());
}

namespace {

// sodium_malloc needs sodium_init (its page size and canary); this is idempotent and thread-safe.
char* allocate(size_t size) {
  if (size == 0) return nullptr;
  static const int ready = sodium_init();
  void* p = ready < 0 ? nullptr : sodium_malloc(size);
  if (p == nullptr) throw std::bad_alloc();  // as operator new would: out of memory or mappings
  std::memset(p, 0, size);  // sodium_malloc fills with garbage bytes
  return static_cast<char*>(p);
}

}  // namespace

void SecretValue::SodiumFree::operator()(char* p) const { sodium_free(p); }  // wipes the whole region too

SecretValue::SecretValue(size_t size) : data_(allocate(size)), size_(size) {}

SecretValue::SecretValue(SecretValue&& o) noexcept : data_(std::move(o.data_)), size_(std::exchange(o.size_, 0)) {}

SecretValue& SecretValue::operator=(SecretValue&& o) noexcept {
  if (this != &o) {
    wipe();
    data_ = std::move(o.data_);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void SecretValue::wipe() {
  if (data_) sodium_memzero(data_.get(), size_);
  data_.reset();
  size_ = 0;
}

}  // namespace moat::vault
