#pragma once
// The one comparison of a secret against what a caller presented: bearer tokens, a platform's
// secret-token header (Telegram's X-Telegram-Bot-Api-Secret-Token), an HMAC a webhook request
// carries. A plain == stops at the first differing byte and at a length mismatch, so its timing
// tells an attacker how much of a guess was right.
#include <string_view>

namespace moat {

// True when a and b are the same bytes. Both are hashed (SHA-256) and the digests compared with
// CRYPTO_memcmp, so the time taken depends neither on where they differ nor on whether their
// lengths match — only on the lengths themselves (hashing time), and those of the presented value
// are the presenter's own. Empty strings compare equal to each other: callers that must refuse an
// empty secret (an unset token) check for that themselves.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace moat
