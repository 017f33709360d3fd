#pragma once
// Parsing TOML text with toml++ without handing it what it mishandles.
//
// toml++ 3.3 (Debian 12's, which moat links) reaches __builtin_unreachable — undefined behaviour —
// when it asks whether certain non-ASCII characters (U+00A1..U+0499, U+2C8E..U+3087,
// U+FB46..U+FEFE) are whitespace, which it does wherever it scans tokens and after backslashes
// (fixed upstream after 3.3; found by fuzz/fuzz_config). So toml++ never sees a non-ASCII byte: the
// text is checked to be UTF-8, each run of non-ASCII bytes is replaced by an ASCII placeholder of
// letters (lines stay where they are), and after parsing the original bytes are put back into every
// key and string, and into the error message.
#include <string_view>
#include <toml++/toml.h>

#include "base/result.h"

namespace moat {

// InvalidInput "ORIGIN:LINE: what is wrong" for text that is not UTF-8 or not TOML.
Result<toml::table> parse_toml_text(std::string_view text, std::string_view origin);

}  // namespace moat
