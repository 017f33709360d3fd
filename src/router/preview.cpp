// Reply previews: while a turn streams its answer, a channel that can edit messages shows it as one
// message, created at the first text and edited at most once per Channel::preview_interval. This is
// outbox state, not channel memory (store table previews):
//   - the row is written before the message is first sent, and the platform's id as soon as the
//     platform answers, so
//   - the turn's commit puts that id on its first reply's outbox row (edit_platform_id) and the
//     delivery edits the preview into the final text: one message, never a preview plus a reply;
//   - a preview still open when moatd starts again (a crash mid-turn) is edited to the text it showed
//     plus "(interrupted)", and the turn, which runs again, shows a preview of its own.
// Windows left (docs/channels.md): moatd killed after the platform made the message and before its id
// was written leaves that message as it was (it cannot be found to mark); a create that timed out but
// reached the platform is made again (Discord drops the repeat by its nonce, the preview's key).
#include <algorithm>

#include "base/log.h"
#include "router/router_impl.h"
#include "store/clock.h"

namespace moat::router {

namespace {

constexpr std::string_view kInterrupted = "\n\n(interrupted)";
constexpr int kOrphanTries = 5;
constexpr int64_t kOrphanRetryMs = 2000;
constexpr int64_t kStoreRetryMs = 5000;  // after the store refused a preview row

std::string slot_key(std::string_view channel, std::string_view chat) {
  std::string k(channel);
  k.push_back('\0');
  k.append(chat);
  return k;
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; });
}

// The first part of `text` that the channel's limit allows, leaving room for `reserve` units.
std::string fit(std::string_view text, MessageLimit limit, size_t reserve = 0) {
  if (limit.max == 0) return std::string(text);
  limit.max = limit.max > reserve + 1 ? limit.max - reserve : 1;
  auto parts = split_text(text, limit);
  return parts.empty() ? std::string() : std::move(parts.front());
}

bool never_deliverable(const Error& e) { return e.kind == ErrorKind::InvalidInput || e.kind == ErrorKind::NotFound; }

}  // namespace

void Router::Impl::preview_event(Channel& ch, const std::string& channel, const std::string& chat,
                                 const std::string& agent, const std::string& kind, const Json& data) {
  if (kind != "turn_started" && kind != "text") return;
  std::lock_guard g(prev_mu);
  auto& slot = previews[slot_key(channel, chat)];
  if (slot.ch == nullptr) {
    slot.ch = &ch;
    slot.channel = channel;
    slot.chat = chat;
    slot.agent = agent;
  }
  if (kind == "turn_started") {
    // A retried turn streams again from the start, into the same message.
    slot.text.clear();
    slot.closed = false;
    return;
  }
  if (slot.closed) return;
  auto it = data.find("text");
  if (it == data.end() || !it->is_string()) return;
  slot.text += it->get_ref<const std::string&>();
  prev_cv.notify_all();
}

std::optional<Router::Impl::ClosedPreview> Router::Impl::close_preview(const std::string& channel,
                                                                      const std::string& chat) {
  std::unique_lock l(prev_mu);
  auto it = previews.find(slot_key(channel, chat));
  if (it == previews.end()) return std::nullopt;
  it->second.closed = true;
  // Bounded by the channel's own request deadline. The slot is not erased while this thread waits:
  // only end_preview(), on this same turn's thread, erases it.
  prev_cv.wait(l, [&] { return !it->second.in_flight; });
  if (it->second.row == 0) return std::nullopt;
  return ClosedPreview{it->second.row, it->second.platform_id};
}

void Router::Impl::end_preview(const std::string& channel, const std::string& chat, bool dropped) {
  std::unique_lock l(prev_mu);
  auto it = previews.find(slot_key(channel, chat));
  if (it == previews.end()) return;
  if (dropped) {
    it->second.closed = true;
    prev_cv.wait(l, [&] { return !it->second.in_flight; });  // the preview thread holds a pointer to it
    previews.erase(it);
  } else {
    it->second.closed = false;  // the turn will run again and stream into the same message
  }
}

Status Router::Impl::load_orphans() {
  auto open = previews_open(db);
  if (!open) return std::unexpected(open.error());
  std::lock_guard g(prev_mu);
  for (auto& row : *open) {
    if (row.platform_id.empty()) {
      // Never shown (or shown and its id lost with the crash): nothing to edit.
      if (auto s = preview_set_state(db, row.id, PreviewState::Interrupted); !s) return s;
      continue;
    }
    orphans.push_back(Orphan{std::move(row)});
  }
  return {};
}

void Router::Impl::preview_loop() {
  std::unique_lock l(prev_mu);
  while (!prev_stopping) {
    const int64_t now = clock::now_ms();
    int64_t wake = now + 60'000;

    // Orphans of a crash first: their chats are waiting on a message that will never finish.
    if (!orphans.empty() && orphans.front().next_ms <= now) {
      Orphan o = std::move(orphans.front());
      orphans.pop_front();
      l.unlock();
      Channel* ch = channel(o.row.channel);
      bool done = true;
      if (ch == nullptr) {
        log::warn("router: reply preview {} is on channel {}, which is not registered; left as it is", o.row.id,
                  o.row.channel);
      } else {
        Preview p{o.row.id, fmt::format("p{}", o.row.id), o.row.channel, o.row.chat, o.row.agent,
                  fit(o.row.text, ch->message_limit(), kInterrupted.size()) + std::string(kInterrupted),
                  o.row.platform_id};
        DeliveryResult r = delivery_failed(Error{ErrorKind::Internal, "not sent"});
        try {
          r = ch->preview(p);
        } catch (const std::exception& ex) {
          r = delivery_failed(Error{ErrorKind::Internal, ex.what()});
        }
        if (!r && !never_deliverable(r.error().error) && ++o.tries < kOrphanTries) {
          done = false;
          o.next_ms = clock::now_ms() + std::max<int64_t>(kOrphanRetryMs, r.error().retry_after.count());
        } else if (!r) {
          log::warn("router: cannot mark reply preview {} in {}:{} interrupted: {}", o.row.id, o.row.channel,
                    o.row.chat, r.error().error.message);
        }
      }
      if (done) {
        if (auto s = preview_set_state(db, o.row.id, PreviewState::Interrupted); !s)
          log::error("router: cannot close reply preview {}: {}", o.row.id, s.error().message);
      }
      l.lock();
      if (!done) orphans.push_back(std::move(o));
      continue;
    }
    if (!orphans.empty()) wake = std::min(wake, orphans.front().next_ms);

    // The chat whose preview is due, if any.
    PreviewSlot* due = nullptr;
    for (auto& [key, slot] : previews) {
      if (slot.closed || slot.in_flight || slot.text == slot.shown || blank(slot.text)) continue;
      if (slot.next_ms <= now) {
        due = &slot;
        break;
      }
      wake = std::min(wake, slot.next_ms);
    }
    if (due == nullptr) {
      prev_cv.wait_until(l, std::chrono::system_clock::time_point(std::chrono::milliseconds(wake)));
      continue;
    }
    due->in_flight = true;
    Channel& ch = *due->ch;
    const std::string full = due->text;
    std::string channel_name = due->channel, chat = due->chat, agent = due->agent, platform_id = due->platform_id;
    int64_t row = due->row;
    l.unlock();

    bool sent = false;
    int64_t retry_after = 0;
    if (row == 0) {
      auto id = preview_insert(db, channel_name, chat, agent);
      if (id)
        row = *id;
      else
        log::warn("router: cannot store a reply preview for {}:{}: {}", channel_name, chat, id.error().message);
    }
    if (row != 0) {
      Preview p{row, fmt::format("p{}", row), channel_name, chat, agent, fit(full, ch.message_limit()), platform_id};
      DeliveryResult r = delivery_failed(Error{ErrorKind::Internal, "not sent"});
      try {
        r = ch.preview(p);
      } catch (const std::exception& ex) {
        r = delivery_failed(Error{ErrorKind::Internal, ex.what()});
      }
      if (r) {
        sent = true;
        if (!r->platform_id.empty()) platform_id = r->platform_id;
        if (auto s = preview_shown(db, row, platform_id, p.text); !s)
          log::warn("router: cannot record reply preview {}: {}", row, s.error().message);
      } else {
        retry_after = r.error().retry_after.count();
        log::debug("router: reply preview for {}:{} not shown: {}", channel_name, chat, r.error().error.message);
      }
    }

    l.lock();
    const int64_t after = clock::now_ms();
    due->in_flight = false;
    due->row = row;
    due->platform_id = platform_id;
    if (sent) due->shown = full;
    const int64_t interval = std::max<int64_t>(ch.preview_interval().count(), 1);
    due->next_ms = after + (row == 0 ? kStoreRetryMs : std::max(interval, retry_after));
    prev_cv.notify_all();  // a turn may be waiting in close_preview()
  }
}

}  // namespace moat::router
