#pragma once
// Files that hold key material on the host (the vault key, the egress CA's private key): readable by
// moatd's user only. Reading refuses anything that could have been swapped or shared — a symbolic
// link, something other than a regular file, a file owned by another user, a file group or others can
// read or write — with one error naming the path and the command that fixes it. Creating never
// replaces an existing file: the content is written to a fresh O_EXCL temporary (mode 0600),
// fsync'ed, then renamed into place without overwriting, so no reader ever sees a half-written key.
#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "base/result.h"
#include "vault/secret_value.h"

namespace moat::vault {

// Checks an open file is fit to hold a private key (see above); `what` ("the vault key") and `path`
// are for the message. The owner must be moatd's effective uid (root when moatd runs as it must).
Status check_private_file(int fd, const std::filesystem::path& path, std::string_view what);

// Reads a private file of at most `max_bytes` after check_private_file. NotFound when it is absent.
Result<SecretValue> read_private_file(const std::filesystem::path& path, std::string_view what, size_t max_bytes);

// Creates `path` (mode 0600) holding `data`. Conflict when it already exists (someone else made it
// first: read it instead). The parent directory must exist.
Status create_private_file(const std::filesystem::path& path, std::string_view data, std::string_view what);

}  // namespace moat::vault
