#include "vault/secret_value.h"

#include <sodium.h>

#include <cstring>
#include <utility>

namespace moat::vault {

SecretValue::SecretValue(std::string_view bytes) : SecretValue(bytes.size()) {
  if (!bytes.empty()) std::memcpy(data_.get(), bytes.data(), bytes.size());
}

SecretValue::SecretValue(size_t size) : data_(size ? std::make_unique<char[]>(size) : nullptr), size_(size) {}

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
