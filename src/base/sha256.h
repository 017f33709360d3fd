#pragma once
// SHA-256 for content-addressed images and the audit hash chain.
#include <filesystem>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view data);
  std::string hex_digest();  // finishes the hash; 64 lowercase hex characters

 private:
  void* ctx_;
};

std::string sha256_hex(std::string_view data);
Result<std::string> sha256_file_hex(const std::filesystem::path& path);

}  // namespace moat
