#pragma once
// Sets an environment variable of this process (and so of the moatd it starts, e.g. MOAT_CRASH_AT)
// for one scope; the old value (or none) comes back at its end.
#include <cstdlib>
#include <optional>
#include <string>

namespace moat::testing {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace moat::testing
