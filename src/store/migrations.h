#pragma once
// Versioned schema migrations. The store's schema version is SQLite's `PRAGMA user_version`; each
// migration moves it from N-1 to N inside its own transaction, so a crash leaves the store at a
// version boundary. Migrations are append-only: never edit one that has shipped, add the next.
#include <cstdint>
#include <span>
#include <string_view>

#include "base/result.h"

namespace moat {

class Database;

struct Migration {
  int64_t version;         // 1, 2, 3... strictly increasing, no gaps
  std::string_view name;   // what it does, for error messages
  std::string_view sql;    // one or more statements
};

// The schema this build knows, in order.
std::span<const Migration> builtin_migrations();
// The newest schema version this build knows.
int64_t latest_schema_version();

// Applies every migration newer than the store's user_version. A store whose version is newer than
// the last migration in `migrations` is refused (Conflict): it was written by a newer moat.
Status apply_migrations(Database& db, std::span<const Migration> migrations);

}  // namespace moat
