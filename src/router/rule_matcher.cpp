#include "router/rule_matcher.h"

#include <algorithm>
#include <map>

namespace moat::router {

namespace {
// Only the start of a message is searched for a trigger: triggers address the agent up front, and
// std::regex backtracks recursively, so a 1 MiB message could exhaust the stack.
constexpr size_t kTriggerWindow = 4096;

std::string_view channel_of(std::string_view pattern) {
  auto colon = pattern.find(':');
  return colon == std::string_view::npos ? std::string_view() : pattern.substr(0, colon);
}
}  // namespace

bool glob_match(std::string_view p, std::string_view t) {
  // Iterative with one backtrack point: linear-ish and no recursion.
  size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = ti;
    } else if (pi < p.size() && p[pi] == t[ti]) {
      ++pi;
      ++ti;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

Result<RuleMatcher> RuleMatcher::build(std::vector<RouteRule> rules) {
  RuleMatcher m;
  std::map<std::string, std::shared_ptr<const std::regex>> regexes;
  m.rules_.reserve(rules.size());
  for (uint32_t i = 0; i < rules.size(); ++i) {
    Compiled c;
    c.rule = std::move(rules[i]);
    if (c.rule.agent.empty()) return fail(ErrorKind::InvalidInput, "route rule {} has no agent", i + 1);
    if (!c.rule.trigger.empty()) {
      auto& re = regexes[c.rule.trigger];
      if (!re) {
        try {
          re = std::make_shared<const std::regex>(c.rule.trigger, std::regex::ECMAScript | std::regex::optimize);
        } catch (const std::regex_error& ex) {
          return fail(ErrorKind::InvalidInput, "agent {}: trigger '{}' is not a valid regular expression ({})",
                      c.rule.agent, c.rule.trigger, ex.what());
        }
      }
      c.trigger = re;
    }
    for (const auto& chat : c.rule.chats) {
      if (chat.find('*') != std::string::npos)
        c.glob_chats.push_back(chat);
      else
        c.exact_chats.push_back(chat);
    }
    c.any_sender = c.rule.senders.empty() ||
                   std::find(c.rule.senders.begin(), c.rule.senders.end(), "*") != c.rule.senders.end();

    if (c.rule.chats.empty()) {
      if (c.rule.channels.empty()) m.by_channel_[""].push_back(i);
      for (const auto& ch : c.rule.channels) m.by_channel_[ch].push_back(i);
    } else {
      for (const auto& chat : c.exact_chats) {
        auto& v = m.by_exact_chat_[chat];
        if (v.empty() || v.back() != i) v.push_back(i);
      }
      if (!c.glob_chats.empty()) m.glob_rules_.push_back(i);
    }
    m.by_agent_[c.rule.agent].push_back(i);
    m.rules_.push_back(std::move(c));
  }
  // A rule listing a channel twice would appear twice in that channel's list.
  for (auto& [k, v] : m.by_channel_) v.erase(std::unique(v.begin(), v.end()), v.end());
  return m;
}

bool RuleMatcher::sender_listed(const Compiled& c, const Envelope& e) const {
  if (c.any_sender) return true;
  for (const auto& s : c.rule.senders) {
    auto ch = channel_of(s);
    if (!ch.empty() && ch == e.channel && glob_match(std::string_view(s).substr(ch.size() + 1), e.sender)) return true;
    if (glob_match(s, e.sender)) return true;
  }
  return false;
}

RuleMatcher::Verdict RuleMatcher::check(const Compiled& c, const Envelope& e) const {
  const auto& r = c.rule;
  if (!r.channels.empty() && std::find(r.channels.begin(), r.channels.end(), e.channel) == r.channels.end())
    return Verdict::No;
  if (!r.chats.empty()) {
    bool hit = false;
    std::string full = e.channel + ":" + e.chat;
    for (const auto& p : c.exact_chats) hit = hit || p == full || p == e.chat;
    for (const auto& p : c.glob_chats) hit = hit || glob_match(p, full) || glob_match(p, e.chat);
    if (!hit) return Verdict::No;
  }
  if (!e.direct && r.require_trigger_in_groups && c.trigger && !e.mentioned) {
    std::string_view head(e.text.data(), std::min(e.text.size(), kTriggerWindow));
    bool hit = false;
    try {
      hit = std::regex_search(head.begin(), head.end(), *c.trigger);
    } catch (const std::regex_error&) {
      hit = false;  // too complex for this text: treat as not addressed rather than fail the message
    }
    if (!hit) return Verdict::NoTrigger;
  }
  if (!sender_listed(c, e)) return Verdict::SenderUnknown;
  return Verdict::Yes;
}

}  // namespace moat::router
