#pragma once
// The Public Suffix List (Debian's `publicsuffix` package: both its ICANN and its private sections):
// names under which anyone can register their own (co.uk, github.io, *.ck). A credential bound to
// such a suffix, or to every name below it, would go to every tenant there; bindings refuse them.
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_set>

#include "base/result.h"

namespace moat::vault {

class PublicSuffixList {
 public:
  static constexpr std::string_view kSystemPath = "/usr/share/publicsuffix/public_suffix_list.dat";

  // Parses the list's text format (rules, "*." wildcards, "!" exceptions, "//" comments).
  static PublicSuffixList parse(std::string_view text);
  // The system's list, read once; an error when it cannot be read (install Debian's publicsuffix).
  static Result<const PublicSuffixList*> system();

  // Whether `name` (lower-case ASCII, no trailing dot) is a public suffix by an explicit rule.
  bool listed(std::string_view name) const;
  // listed(), or a single label: the list's implicit "*" rule (every top-level name is a suffix).
  bool is_public_suffix(std::string_view name) const;

 private:
  std::unordered_set<std::string> rules_, wildcards_, exceptions_;  // wildcards_ keep what follows "*."
};

}  // namespace moat::vault
