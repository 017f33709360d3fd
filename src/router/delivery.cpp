// The outbox thread: delivers undelivered rows in id order per chat through the registered channel,
// with the row's stable key "o<id>", and marks them delivered. A chat whose row is waiting (backoff,
// channel not registered) holds back that chat's later rows only; other chats go on.
#include <optional>
#include <unordered_set>

#include "base/crash_point.h"
#include "base/log.h"
#include "router/router_impl.h"
#include "store/clock.h"

namespace moat::router {

namespace {
constexpr size_t kPage = 256;
// A platform may ask for a long wait (a daily quota); beyond an hour the row is tried again anyway.
constexpr int64_t kMaxPlatformWaitMs = 3'600'000;
constexpr int64_t kIdlePollMs = 5'000;  // a safety net; inserts poke the thread
}  // namespace

Channel* Router::Impl::channel(const std::string& name) {
  std::lock_guard g(channels_mu);
  auto it = channels.find(name);
  return it == channels.end() ? nullptr : it->second;
}

void Router::Impl::poke_delivery() {
  {
    std::lock_guard g(out_mu);
    out_dirty = true;
  }
  out_cv.notify_one();
}

// One row through its channel: the whole text, or the parts the channel's limit asks for, from the
// first part not yet sent. Each part but the last is recorded as sent at once (a crash resumes with
// the next part; the part in flight may go twice under its own key). Success is the last part's.
DeliveryResult Router::Impl::deliver_parts(Channel& ch, OutboxRow& row) {
  auto parts = split_text(row.msg.text, ch.message_limit());
  row.msg.parts = parts.size();
  const std::string row_key = row.msg.key;
  for (size_t i = std::min(row.parts_sent, parts.size() - 1); i < parts.size(); ++i) {
    Outbound part = row.msg;
    part.part = i;
    part.key = part_key(row_key, i, parts.size());
    part.text = std::move(parts[i]);
    if (i != 0) part.edit_platform_id.clear();  // only the first part replaces the turn's preview
    auto attempt = [&]() -> DeliveryResult {
      try {
        return ch.deliver(part);
      } catch (const std::exception& ex) {
        return delivery_failed(Error{ErrorKind::Internal, fmt::format("channel {} threw: {}", row.msg.channel, ex.what())});
      }
    };
    DeliveryResult s = attempt();
    if (!s && !part.edit_platform_id.empty() &&
        (s.error().error.kind == ErrorKind::InvalidInput || s.error().error.kind == ErrorKind::NotFound)) {
      // The preview cannot be edited (someone deleted it): the reply goes as a message of its own.
      log::info("router: cannot edit the preview of outbox message {} ({}); sending the reply as a new message",
                row.msg.id, s.error().error.message);
      part.edit_platform_id.clear();
      s = attempt();
    }
    if (!s || i + 1 == parts.size()) return s;
    if (auto st = outbox_parts_sent(db, row.msg.id, i + 1, s->platform_id); !st)
      return delivery_failed(st.error());
    row.parts_sent = i + 1;
  }
  return Delivered{};  // unreachable: the loop returns at its last part
}

void Router::Impl::delivery_loop() {
  std::unordered_set<std::string> warned;  // channels we said are missing, once each
  for (;;) {
    {
      std::lock_guard g(out_mu);
      if (out_stopping) return;
      out_dirty = false;  // set again by any insert made while we scan
    }
    int64_t now = clock::now_ms();
    int64_t wake = now + kIdlePollMs;
    std::unordered_set<std::string> blocked;  // chats whose next row must wait
    int64_t cursor = 0;
    bool stop_now = false;
    // Delivered rows are marked, with their audit records, in one transaction per page. A crash
    // before that mark means those rows go out again with the same keys, which channels drop (see
    // Channel::deliver), and are audited then.
    std::vector<OutboxDelivery> done;
    std::vector<AuditEntry> records;
    auto mark = [&] {
      if (done.empty()) return;
      auto tx = Transaction::begin(db);
      Status s = tx ? outbox_delivered(db, done) : Status(std::unexpected(tx.error()));
      std::optional<AuditLog::Staged> staged;
      if (s) {
        auto st = audit.stage(*tx, std::move(records));
        if (st)
          staged.emplace(std::move(*st));
        else
          s = std::unexpected(st.error());
      }
      if (s) s = tx->commit();
      if (s)
        audit.publish(std::move(*staged));
      else
        log::error("router: cannot mark {} outbox messages delivered: {}", done.size(), s.error().message);
      done.clear();
      records.clear();
    };
    while (!stop_now) {
      auto rows = outbox_pending(db, cursor, kPage);
      if (!rows) {
        log::error("router: cannot read the outbox: {}", rows.error().message);
        wake = now + 1000;
        break;
      }
      if (rows->empty()) break;
      // A row may come from a transaction committed but not yet flushed (a group commit's pairing
      // reply): nothing leaves moat before it is on disk.
      if (auto synced = db.sync_wal(); !synced) {
        log::error("router: cannot flush the store before delivering: {}", synced.error().message);
        wake = now + 1000;
        break;
      }
      for (auto& row : *rows) {
        cursor = row.msg.id;
        std::string chat_key = row.msg.channel + '\0' + row.msg.chat;
        if (blocked.contains(chat_key)) continue;
        if (row.next_attempt_ms > now) {
          blocked.insert(chat_key);
          wake = std::min(wake, row.next_attempt_ms);
          continue;
        }
        Channel* ch = channel(row.msg.channel);
        if (!ch) {
          if (warned.insert(row.msg.channel).second)
            log::warn("router: outbox message {} is for channel {}, which is not registered; it waits", row.msg.id,
                      row.msg.channel);
          blocked.insert(chat_key);
          continue;
        }
        {
          std::lock_guard g(out_mu);
          if (out_stopping) {
            stop_now = true;
            break;
          }
        }
        DeliveryResult s = deliver_parts(*ch, row);
        if (s) {
          crash_point("router.sent");  // the platform has the message; the outbox does not know yet
          Json data = {{"id", row.msg.id}, {"channel", row.msg.channel}, {"chat", row.msg.chat},
                       {"in_reply_to", row.msg.in_reply_to}, {"is_error", row.msg.is_error}, {"bytes", row.msg.text.size()}};
          if (!s->platform_id.empty()) data["platform_id"] = s->platform_id;
          if (row.msg.parts > 1) data["parts"] = row.msg.parts;
          done.push_back(OutboxDelivery{row.msg.id, std::move(s->platform_id)});
          records.push_back(AuditEntry{"message.out", row.msg.agent.empty() ? "router" : row.msg.agent, row.msg.agent,
                                       std::move(data)});
        } else if (const Error& e = s.error().error; e.kind == ErrorKind::InvalidInput || e.kind == ErrorKind::NotFound) {
          log::warn("router: outbox message {} cannot be delivered to {}:{}: {}", row.msg.id, row.msg.channel,
                    row.msg.chat, e.message);
          if (auto u = outbox_failed(db, row.msg.id, e.message); !u)
            log::error("router: cannot mark outbox message {} failed: {}", row.msg.id, u.error().message);
        } else {
          int attempts = row.attempts + 1;
          int64_t delay = retry_backoff(opts.delivery_retry_base).delay(attempts).count();
          // The platform's own word on when to come back (a 429's retry_after) replaces the guess.
          if (int64_t asked = s.error().retry_after.count(); asked > 0) delay = std::min(asked, kMaxPlatformWaitMs);
          int64_t next = clock::now_ms() + delay;
          log::info("router: delivering outbox message {} to {} failed (attempt {}), retrying in {} ms: {}",
                    row.msg.id, row.msg.channel, attempts, delay, e.message);
          if (auto u = outbox_retry_later(db, row.msg.id, attempts, next); !u)
            log::error("router: cannot store a delivery retry: {}", u.error().message);
          blocked.insert(chat_key);
          wake = std::min(wake, next);
        }
      }
      mark();
      if (rows->size() < kPage) break;
    }
    mark();
    if (stop_now) return;
    std::unique_lock l(out_mu);
    out_cv.wait_until(l, std::chrono::system_clock::time_point(std::chrono::milliseconds(wake)),
                      [&] { return out_dirty || out_stopping; });
  }
}

}  // namespace moat::router
