#pragma once
// Matches an envelope to the first RouteRule that takes it, in O(1)-ish time however many agents are
// registered: rules whose chats are exact names are indexed by that name, rules for every chat of a
// channel by the channel, and only rules with a '*' in a chat pattern are scanned (the fallback list).
// Candidates from all of these are merged in rule order, so "first rule wins" holds exactly.
//
// Memory: 10,000 rules are 10,000 small structs plus the index; a std::regex is large (the compiled
// automaton), so identical trigger patterns share one compiled regex.
#include <memory>
#include <regex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "router/envelope.h"
#include "router/route_rule.h"

namespace moat::router {

// '*' matches any run of characters (including none); everything else matches itself.
bool glob_match(std::string_view pattern, std::string_view text);

struct MatchResult {
  enum class Kind { Queued, Held, Dropped } kind = Kind::Dropped;
  std::string agent;
  std::string reason;  // Dropped
};

class RuleMatcher {
 public:
  // Invalid trigger regexes are reported here (one error naming the agent and the pattern).
  static Result<RuleMatcher> build(std::vector<RouteRule> rules);
  RuleMatcher() = default;

  // `approved(agent)` says whether the owner approved this envelope's sender for that agent.
  template <class Approved>
  MatchResult match(const Envelope& e, const Approved& approved) const;

  bool has_agent(const std::string& agent) const { return by_agent_.contains(agent); }
  size_t size() const { return rules_.size(); }
  std::vector<std::string> agents() const {
    std::vector<std::string> out;
    for (const auto& [a, v] : by_agent_) out.push_back(a);
    return out;
  }

 private:
  struct Compiled {
    RouteRule rule;
    std::shared_ptr<const std::regex> trigger;  // null = no trigger
    std::vector<std::string> exact_chats, glob_chats;
    bool any_sender = false;
  };
  enum class Verdict { No, NoTrigger, SenderUnknown, Yes };
  Verdict check(const Compiled& c, const Envelope& e) const;
  bool sender_listed(const Compiled& c, const Envelope& e) const;
  template <class F>
  void for_candidates(const Envelope& e, F&& f) const;

  std::vector<Compiled> rules_;
  std::unordered_map<std::string, std::vector<uint32_t>> by_exact_chat_;   // pattern -> rules, ascending
  std::unordered_map<std::string, std::vector<uint32_t>> by_channel_;      // rules with no chats; "" = any channel
  std::unordered_map<std::string, std::vector<uint32_t>> by_agent_;        // a channel that names the agent
  std::vector<uint32_t> glob_rules_;
};

template <class Approved>
MatchResult RuleMatcher::match(const Envelope& e, const Approved& approved) const {
  MatchResult out;
  std::string first_reason;
  bool done = false;
  for_candidates(e, [&](uint32_t idx) {
    if (done) return;
    const Compiled& c = rules_[idx];
    switch (check(c, e)) {
      case Verdict::No: return;
      case Verdict::NoTrigger:
        if (first_reason.empty())
          first_reason = fmt::format("not addressed to agent {} (no mention and no match for its trigger)", c.rule.agent);
        return;
      case Verdict::SenderUnknown:
        if (approved(c.rule.agent)) break;
        if (c.rule.unknown_senders == UnknownSenders::Hold) {
          out.kind = MatchResult::Kind::Held;
          out.agent = c.rule.agent;
          done = true;
          return;
        }
        if (first_reason.empty())
          first_reason = fmt::format("sender {}:{} is not allowed to message agent {}", e.channel, e.sender, c.rule.agent);
        return;
      case Verdict::Yes: break;
    }
    out.kind = MatchResult::Kind::Queued;
    out.agent = c.rule.agent;
    done = true;
  });
  if (!done) {
    out.kind = MatchResult::Kind::Dropped;
    out.reason = first_reason.empty()
                     ? (e.agent.empty() ? fmt::format("no route rule matches channel {} chat {}", e.channel, e.chat)
                                        : fmt::format("no route rule of agent {} matches channel {} chat {}", e.agent,
                                                      e.channel, e.chat))
                     : std::move(first_reason);
  }
  return out;
}

template <class F>
void RuleMatcher::for_candidates(const Envelope& e, F&& f) const {
  static const std::vector<uint32_t> kNone;
  auto find = [](const auto& map, const std::string& key) -> const std::vector<uint32_t>& {
    auto it = map.find(key);
    return it == map.end() ? kNone : it->second;
  };
  if (!e.agent.empty()) {  // the channel named the agent: only its rules, each still checked in full
    for (uint32_t i : find(by_agent_, e.agent)) f(i);
    return;
  }
  const std::vector<uint32_t>* lists[5] = {&find(by_exact_chat_, e.channel + ":" + e.chat),
                                           &find(by_exact_chat_, e.chat), &find(by_channel_, e.channel),
                                           &find(by_channel_, std::string()), &glob_rules_};
  size_t pos[5] = {};
  uint32_t last = UINT32_MAX;
  for (;;) {  // k-way merge of ascending lists, each rule once
    int best = -1;
    for (int k = 0; k < 5; ++k)
      if (pos[k] < lists[k]->size() && (best < 0 || (*lists[k])[pos[k]] < (*lists[best])[pos[best]])) best = k;
    if (best < 0) return;
    uint32_t idx = (*lists[best])[pos[best]++];
    if (idx == last) continue;
    last = idx;
    f(idx);
  }
}

}  // namespace moat::router
