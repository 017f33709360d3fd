#include "egress/usage_meter.h"

#include <ctime>

#include "base/log.h"

namespace moat::egress {
namespace {

std::string utc_day() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

}  // namespace

UsageMeter::UsageMeter(Database& db) : db_(db) {
  auto day = utc_day();
  auto q = db_.prepare("SELECT agent, bytes FROM egress_usage WHERE day = ?");
  if (!q) {
    log::warn("egress: cannot read today's usage: {}", q.error().message);
    return;
  }
  q->bind(1, day);
  for (;;) {
    auto row = q->step();
    if (!row || !*row) break;
    auto& c = agents_[std::string(q->column_text(0))];
    c.day = day;
    c.bytes_today = static_cast<uint64_t>(q->column_int64(1));
  }
}

UsageMeter::Counters& UsageMeter::counters_locked(std::string_view agent) {
  auto it = agents_.find(agent);
  if (it == agents_.end()) it = agents_.emplace(std::string(agent), Counters{}).first;
  auto day = utc_day();
  if (it->second.day != day) {
    it->second.day = day;
    it->second.bytes_today = 0;
  }
  return it->second;
}

std::optional<std::string> UsageMeter::try_open(std::string_view agent, const AgentLimits& limits) {
  std::lock_guard g(mu_);
  auto& c = counters_locked(agent);
  if (limits.max_connections && c.open >= limits.max_connections)
    return fmt::format("agent '{}' already has {} egress connections open, its limit (max_connections); close some and retry",
                       agent, c.open);
  if (limits.max_bytes_per_day && c.bytes_today >= limits.max_bytes_per_day)
    return fmt::format("agent '{}' has used its egress budget for today ({} bytes, max_bytes_per_day); it resets at 00:00 UTC",
                       agent, limits.max_bytes_per_day);
  ++c.open;
  return std::nullopt;
}

void UsageMeter::close(std::string_view agent) {
  std::lock_guard g(mu_);
  auto& c = counters_locked(agent);
  if (c.open > 0) --c.open;
}

void UsageMeter::add_bytes(std::string_view agent, uint64_t bytes) {
  if (bytes == 0) return;
  std::lock_guard g(mu_);
  auto& c = counters_locked(agent);
  c.bytes_today += bytes;
  c.dirty = true;
}

bool UsageMeter::over_budget(std::string_view agent, const AgentLimits& limits) {
  std::lock_guard g(mu_);
  return limits.max_bytes_per_day && counters_locked(agent).bytes_today > limits.max_bytes_per_day;
}

Status UsageMeter::flush() {
  std::vector<std::tuple<std::string, std::string, uint64_t>> rows;
  {
    std::lock_guard g(mu_);
    for (auto& [agent, c] : agents_) {
      if (!c.dirty) continue;
      rows.emplace_back(agent, c.day, c.bytes_today);
      c.dirty = false;
    }
  }
  if (rows.empty()) return {};
  auto lock = db_.lock();
  auto up = db_.prepare(
      "INSERT INTO egress_usage(agent, day, bytes) VALUES(?, ?, ?) ON CONFLICT(agent, day) DO UPDATE SET bytes = excluded.bytes");
  if (!up) return std::unexpected(up.error());
  for (auto& [agent, day, bytes] : rows) {
    up->reset();
    up->bind(1, agent).bind(2, day).bind(3, bytes);
    if (auto st = up->step(); !st) return std::unexpected(st.error());
  }
  return {};
}

Json UsageMeter::snapshot(std::string_view agent) {
  std::lock_guard g(mu_);
  auto& c = counters_locked(agent);
  return Json{{"open_connections", c.open}, {"bytes_today", c.bytes_today}, {"day", c.day}};
}

}  // namespace moat::egress
