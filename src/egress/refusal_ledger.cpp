#include "egress/refusal_ledger.h"

#include <fmt/format.h>

namespace moat::egress {

namespace {

AuditEntry egress_record(const std::string& agent, Json data) { return AuditEntry{"egress", agent, agent, std::move(data)}; }

}  // namespace

int64_t utc_day() {
  return std::chrono::duration_cast<std::chrono::days>(std::chrono::system_clock::now().time_since_epoch()).count();
}

AuditEntry RefusalLedger::unrecorded_record(const std::string& agent, const Agent& a) {
  return egress_record(agent, Json{{"mode", "summary"},
                                   {"decision", "deny"},
                                   {"rule", "refusal cap"},
                                   {"day", a.day},
                                   {"unrecorded", a.unrecorded_today},
                                   {"reason", fmt::format("{} refusal(s) after the day's cap of {} records were counted, "
                                                          "not recorded one by one",
                                                          a.unrecorded_today, a.rows_today)}});
}

void RefusalLedger::count_row(Agent& a, const std::string& agent, std::vector<AuditEntry>& out) {
  ++a.rows_today;
  if (a.rows_today != limits_.rows_per_day) return;
  out.push_back(egress_record(
      agent, Json{{"mode", "summary"},
                  {"decision", "deny"},
                  {"rule", "refusal cap"},
                  {"day", a.day},
                  {"reason", fmt::format("{} refusal records today: the daily cap is reached; until the UTC day ends "
                                         "this agent's refusals are counted and reported in one record",
                                         limits_.rows_per_day)}}));
}

std::vector<AuditEntry> RefusalLedger::note(const std::string& agent, Json refusal, Time, int64_t day) {
  std::vector<AuditEntry> out;
  auto& a = agents_[agent];
  if (a.day != day) {
    if (a.unrecorded_today > 0) out.push_back(unrecorded_record(agent, a));
    a.day = day;
    a.rows_today = 0;
    a.unrecorded_today = 0;
  }
  if (a.rows_today >= limits_.rows_per_day) {
    ++a.unrecorded_today;
    return out;
  }
  Kind kind{refusal.value("mode", ""), refusal.value("host", ""), refusal.value("port", uint16_t{0}),
            refusal.value("rule", "")};
  auto it = a.kinds.find(kind);
  if (it == a.kinds.end() && a.kinds.size() >= limits_.kinds_per_agent) {
    // An agent varying names to dodge coalescing shares one pooled kind past the limit.
    kind = Kind{"*", "*", 0, "*"};
    it = a.kinds.find(kind);
  }
  if (it != a.kinds.end()) {
    ++it->second.count;
    it->second.last = std::move(refusal);
    return out;
  }
  a.kinds.emplace(kind, Repeat{Json(), 0});
  out.push_back(egress_record(agent, std::move(refusal)));
  count_row(a, agent, out);
  return out;
}

std::chrono::nanoseconds RefusalLedger::admit(const std::string& agent, Time now) {
  auto& a = agents_[agent];
  if (!a.seeded) {
    a.tokens = limits_.burst;
    a.refilled = now;
    a.seeded = true;
  }
  double elapsed = std::chrono::duration<double>(now - a.refilled).count();
  if (elapsed > 0) {
    a.tokens = std::min(limits_.burst, a.tokens + elapsed * limits_.per_second);
    a.refilled = now;
  }
  // A token is taken even when none is free: the bucket goes into debt, and the debt is the wait, so
  // concurrent refusals queue behind each other instead of all waking at once.
  // Debt is bounded: past max_wait a refusal is not queued at all (the caller closes it unanswered),
  // so a flood that stops is answered normally again within max_wait.
  if (a.tokens - 1 < -limits_.per_second * std::chrono::duration<double>(limits_.max_wait).count())
    return std::chrono::duration_cast<std::chrono::nanoseconds>(limits_.max_wait) + std::chrono::nanoseconds(1);
  a.tokens -= 1;
  if (a.tokens >= 0) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(static_cast<int64_t>(-a.tokens / limits_.per_second * 1e9));
}

std::vector<AuditEntry> RefusalLedger::roll(int64_t day, bool final) {
  std::vector<AuditEntry> out;
  for (auto& [agent, a] : agents_) {
    for (auto& [kind, repeat] : a.kinds) {
      if (repeat.count == 0) continue;
      if (a.rows_today >= limits_.rows_per_day) {
        a.unrecorded_today += repeat.count;
        continue;
      }
      Json data = std::move(repeat.last);
      data["repeats"] = repeat.count;
      data["interval_s"] = limits_.interval.count();
      out.push_back(egress_record(agent, std::move(data)));
      count_row(a, agent, out);
    }
    a.kinds.clear();
    if ((a.day != day || final) && a.unrecorded_today > 0) {
      out.push_back(unrecorded_record(agent, a));
      a.unrecorded_today = 0;
    }
  }
  return out;
}

}  // namespace moat::egress
