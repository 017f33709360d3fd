#pragma once
// Pairing codes: what an unknown sender is told to pass to the owner, who runs `moat approve CODE`.
#include <string>
#include <string_view>

namespace moat::router {

// 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), so a code read aloud or typed
// from a phone screen survives; 31^8 ≈ 8.5e11 codes, drawn with getrandom without modulo bias.
std::string new_pairing_code();
// Upper-cases and strips spaces and dashes, so "abcd-efgh" typed by the owner finds ABCDEFGH.
std::string normalize_pairing_code(std::string_view code);

}  // namespace moat::router
