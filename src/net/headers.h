#pragma once
// HTTP header fields as the client and the server both carry them: the one list type, the one
// lookup, and the one ASCII case-insensitive compare. Field names are case-insensitive (RFC 9110
// 5.1), and so are the tokens read out of values ("Bearer", "chunked", "100-continue") and URL
// schemes; everything in net and above compares them with these.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moat::net {

// Fields in the order they were sent or are to be sent, names as written.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// ASCII only (no locale): "Content-Type" == "content-type".
bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);

// Case-insensitive lookup of the first header with this name.
std::optional<std::string> header_value(const HeaderList& headers, std::string_view name);

}  // namespace moat::net
