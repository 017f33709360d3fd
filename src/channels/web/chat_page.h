#pragma once
// The web chat's page, script and style, compiled in so moatd serves them with no files to install.
// The script renders every piece of agent text with textContent (never as HTML), and the page has no
// inline script or style, so the strict Content-Security-Policy holds.
#include <string_view>

namespace moat::channels {
std::string_view chat_html();
std::string_view chat_script();
std::string_view chat_style();
}  // namespace moat::channels
