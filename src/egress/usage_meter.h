#pragma once
// Per-agent egress accounting for the limits: connections open now, and bytes (up + down) moved in
// the current UTC day. Counted in memory on the gateway's loop; flush() writes the day's totals to
// the store (table egress_usage) so a restart does not reset an agent's budget.
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "base/json.h"
#include "egress/policy_book.h"
#include "store/database.h"

namespace moat::egress {

class UsageMeter {
 public:
  explicit UsageMeter(Database& db);

  // Opens a connection for `agent` within its limits; otherwise returns why not (one sentence).
  std::optional<std::string> try_open(std::string_view agent, const AgentLimits& limits);
  void close(std::string_view agent);
  void add_bytes(std::string_view agent, uint64_t bytes);
  bool over_budget(std::string_view agent, const AgentLimits& limits);

  Status flush();
  Json snapshot(std::string_view agent);

 private:
  struct Counters {
    uint64_t open = 0;
    uint64_t bytes_today = 0;
    std::string day;  // YYYY-MM-DD (UTC) the bytes belong to
    bool dirty = false;
  };
  Counters& counters_locked(std::string_view agent);

  Database& db_;
  std::mutex mu_;
  std::map<std::string, Counters, std::less<>> agents_;
};

}  // namespace moat::egress
