#pragma once
// What refusals cost, and who pays. A sandbox can make refused requests as fast as it likes; if each
// became a durable audit row, a flood would fill the state disk and starve every other agent. The
// ledger makes the attacker pay instead:
//   - a token bucket per agent: past `per_second` (with `burst`), the refusal's answer waits for a
//     token, so a flooding sandbox is slowed down and nobody else is;
//   - repeats of one refusal (agent, mode, host, port, rule) within `interval` are one record: the
//     first is recorded at once, the rest as one record with a count when the interval ends;
//   - a cap of `rows_per_day` refusal records per agent and UTC day, with one record saying it was
//     reached; what is refused after it is counted and reported in one record when the day ends.
// Allowed connections never pass through here: they are always recorded (see AuditQueue::saturated).
// Used on the gateway's event loop only; pure bookkeeping with the time passed in, so tests can drive it.
#include <chrono>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "audit/event.h"

namespace moat::egress {

class RefusalLedger {
 public:
  using Time = std::chrono::steady_clock::time_point;
  struct Limits {
    // Far above what a working agent is refused (a few a minute), low enough that a flooding sandbox's
    // own relay and connection churn leave the host's other sandboxes their share of 2 cores (measured:
    // at 1,000/s a neighbour's exec p50 rose 1.00-1.56x across runs, at 2,000/s 1.74x).
    double per_second = 500;
    double burst = 500;
    std::chrono::seconds interval{10};
    // The most a refusal waits; beyond it, admit() says more and takes nothing (the caller closes it
    // unanswered). A safety valve: the gateway's per-agent connection cap bounds how many refusals can
    // wait at once (320 by default: 0.64 s of debt), so it is reached only with a very large cap.
    std::chrono::seconds max_wait{5};
    uint64_t rows_per_day = 10000;
    size_t kinds_per_agent = 256;  // distinct refusals tracked per interval; more are pooled as one kind
  };

  explicit RefusalLedger(Limits limits) : limits_(limits) {}

  // Notes one refusal by `agent` (its egress record's data: mode, host, port, rule, reason...) on UTC
  // day `day`. Returns the records to append now: the refusal itself when it is the first of its kind
  // this interval, the cap record when this one reaches the day's cap, or nothing.
  std::vector<AuditEntry> note(const std::string& agent, Json refusal, Time now, int64_t day);

  // Takes a token for `agent`'s refusal; how long its answer must wait first (zero while under the rate).
  // More than max_wait means: not queued, close it unanswered.
  std::chrono::nanoseconds admit(const std::string& agent, Time now);

  // Ends the interval: one record per kind repeated since its first record ("repeats": n), and for
  // agents whose cap day has passed, one record of what was refused unrecorded. Call every
  // `interval` and at shutdown (with `final`, everything counted is reported).
  std::vector<AuditEntry> roll(int64_t day, bool final = false);

  const Limits& limits() const { return limits_; }

 private:
  using Kind = std::tuple<std::string, std::string, uint16_t, std::string>;  // mode, host, port, rule
  struct Repeat {
    Json last;  // the latest refusal of this kind, reported with the count
    uint64_t count = 0;
  };
  struct Agent {
    double tokens = 0;
    Time refilled{};
    bool seeded = false;
    std::map<Kind, Repeat> kinds;  // this interval's
    int64_t day = 0;
    uint64_t rows_today = 0;
    uint64_t unrecorded_today = 0;  // refused after the cap
  };

  void count_row(Agent& a, const std::string& agent, std::vector<AuditEntry>& out);
  static AuditEntry unrecorded_record(const std::string& agent, const Agent& a);

  Limits limits_;
  std::map<std::string, Agent> agents_;
};

// Today's UTC day number (days since the Unix epoch), the ledger's unit for its daily cap.
int64_t utc_day();

}  // namespace moat::egress
