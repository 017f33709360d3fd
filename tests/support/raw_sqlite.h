#pragma once
// The store as an attacker with the sqlite3 shell would touch it: a separate connection, no moat code.
#include <filesystem>
#include <string>

namespace moat::testing {

// Runs `sql` on the SQLite file at `path` (fails the running test when SQLite refuses it).
void raw_exec(const std::filesystem::path& path, const std::string& sql);

}  // namespace moat::testing
