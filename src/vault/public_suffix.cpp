#include "vault/public_suffix.h"

#include "base/fs.h"

namespace moat::vault {

PublicSuffixList PublicSuffixList::parse(std::string_view text) {
  PublicSuffixList list;
  while (!text.empty()) {
    auto end = text.find('\n');
    auto line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    // A rule is the line's first word; the rest of the line and comment lines are ignored.
    if (auto space = line.find_first_of(" \t\r"); space != std::string_view::npos) line = line.substr(0, space);
    if (line.empty() || line.starts_with("//")) continue;
    std::string rule(line);
    for (auto& c : rule) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (rule.starts_with('!'))
      list.exceptions_.insert(rule.substr(1));
    else if (rule.starts_with("*."))
      list.wildcards_.insert(rule.substr(2));
    else
      list.rules_.insert(std::move(rule));
  }
  return list;
}

Result<const PublicSuffixList*> PublicSuffixList::system() {
  static const Result<PublicSuffixList> loaded = []() -> Result<PublicSuffixList> {
    auto text = read_file(std::string(kSystemPath));
    if (!text)
      return fail(ErrorKind::Unavailable,
                  "cannot read the public suffix list {} ({}); install Debian's publicsuffix package "
                  "(scripts/install-deps does)",
                  kSystemPath, text.error().message);
    return parse(*text);
  }();
  if (!loaded) return std::unexpected(loaded.error());
  return &*loaded;
}

bool PublicSuffixList::listed(std::string_view name) const {
  std::string n(name);
  if (exceptions_.count(n)) return false;
  if (rules_.count(n)) return true;
  auto dot = n.find('.');
  return dot != std::string::npos && wildcards_.count(n.substr(dot + 1)) > 0;
}

bool PublicSuffixList::is_public_suffix(std::string_view name) const {
  return listed(name) || (name.find('.') == std::string_view::npos && !exceptions_.count(std::string(name)));
}

}  // namespace moat::vault
