#include "router/turn_scheduler.h"

#include <algorithm>

#include "store/clock.h"

namespace moat::router {

namespace {
std::string chat_key(std::string_view agent, std::string_view channel, std::string_view chat) {
  std::string k;
  k.reserve(agent.size() + channel.size() + chat.size() + 2);
  k.append(agent).push_back('\0');
  k.append(channel).push_back('\0');
  k.append(chat);
  return k;
}
}  // namespace

void TurnScheduler::push(QueuedEnvelope q, int64_t not_before_ms) {
  auto key = chat_key(q.envelope.agent, q.envelope.channel, q.envelope.chat);
  auto& slot = chats_[key];
  if (!slot) {
    slot = std::make_unique<Chat>();
    slot->agent = q.envelope.agent;
    slot->channel = q.envelope.channel;
    slot->chat = q.envelope.chat;
  }
  Chat* c = slot.get();
  if (c->pending.empty() && c->inflight == 0) c->not_before_ms = std::max(c->not_before_ms, not_before_ms);
  c->pending.push_back(std::move(q));
  ++queued_;
  list(c, clock::now_ms());
}

void TurnScheduler::list(Chat* c, int64_t now_ms) {
  if (c->listed || c->inflight > 0 || c->pending.empty()) return;
  c->listed = true;
  if (c->not_before_ms > now_ms) {
    timers_.emplace(c->not_before_ms, c);
    return;
  }
  auto& a = agents_[c->agent];
  a.ready.push_back(c);
  if (!a.in_ring) {
    a.in_ring = true;
    ring_.push_back(c->agent);
  }
}

std::optional<TurnScheduler::Batch> TurnScheduler::take(size_t max_batch, int64_t now_ms) {
  while (!timers_.empty() && timers_.begin()->first <= now_ms) {
    Chat* c = timers_.begin()->second;
    timers_.erase(timers_.begin());
    c->listed = false;
    list(c, now_ms);
    maybe_erase(c);  // emptied by remove_agent while it waited
  }
  while (!ring_.empty()) {
    std::string agent = std::move(ring_.front());
    ring_.pop_front();
    auto ait = agents_.find(agent);
    if (ait == agents_.end()) continue;
    Agent& a = ait->second;
    Chat* c = a.ready.front();
    a.ready.pop_front();
    if (a.ready.empty()) {
      agents_.erase(ait);
    } else {
      ring_.push_back(std::move(agent));  // the agent goes to the back: one turn per agent per round
    }
    c->listed = false;
    if (c->pending.empty() || c->inflight > 0) {  // emptied by remove_agent while listed
      maybe_erase(c);
      continue;
    }
    // A retry reruns exactly the batch that failed (same attempt count); messages that came in since
    // wait for the next turn, so they are not failed for tries they never had.
    Batch b;
    b.chat = c;
    int attempts = c->pending.front().attempts;
    b.attempt = attempts + 1;
    for (auto& q : c->pending) {
      if (b.envelopes.size() >= max_batch || q.attempts != attempts) break;
      b.envelopes.push_back(q.envelope);
    }
    c->inflight = b.envelopes.size();
    queued_ -= c->inflight;
    running_ += c->inflight;
    return b;
  }
  return std::nullopt;
}

std::optional<int64_t> TurnScheduler::next_due() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

void TurnScheduler::finish(Chat* c) {
  running_ -= c->inflight;
  c->pending.erase(c->pending.begin(), c->pending.begin() + static_cast<ptrdiff_t>(c->inflight));
  c->inflight = 0;
  c->not_before_ms = 0;
  list(c, clock::now_ms());
  maybe_erase(c);
}

void TurnScheduler::retry(Chat* c, int attempts, int64_t not_before_ms) {
  for (size_t i = 0; i < c->inflight; ++i) c->pending[i].attempts = attempts;
  running_ -= c->inflight;
  queued_ += c->inflight;
  c->inflight = 0;
  c->not_before_ms = not_before_ms;
  list(c, clock::now_ms());
}

void TurnScheduler::maybe_erase(Chat* c) {
  if (c->listed || c->inflight > 0 || !c->pending.empty()) return;
  chats_.erase(chat_key(c->agent, c->channel, c->chat));  // frees c
}

std::vector<Envelope> TurnScheduler::remove_agent(const std::string& agent) {
  std::vector<Envelope> out;
  std::vector<Chat*> emptied;
  for (auto& [k, c] : chats_) {
    if (c->agent != agent) continue;
    for (size_t i = c->inflight; i < c->pending.size(); ++i) out.push_back(std::move(c->pending[i].envelope));
    queued_ -= c->pending.size() - c->inflight;
    c->pending.resize(c->inflight);
    emptied.push_back(c.get());
  }
  // A listed chat stays in its list (take() skips it and frees it); an unlisted idle one goes now.
  for (Chat* c : emptied) maybe_erase(c);
  return out;
}

void TurnScheduler::clear() {
  timers_.clear();
  ring_.clear();
  agents_.clear();
  chats_.clear();
  queued_ = running_ = 0;
}

}  // namespace moat::router
