// The turn threads: max_concurrent_turns of them, each taking the next chat's batch by agent
// round-robin, running it, and committing the outcome (answer + outbox rows in one transaction).
#include <algorithm>

#include "base/log.h"
#include "router/router_impl.h"
#include "store/clock.h"

namespace moat::router {

namespace {
constexpr size_t kMaxErrorInReply = 300;
}  // namespace

std::string failure_reply(const Error& e, int attempts) {
  std::string why = e.message;
  if (why.size() > kMaxErrorInReply) why = why.substr(0, kMaxErrorInReply) + "…";
  if (e.kind == ErrorKind::InvalidInput)
    return fmt::format("Sorry, I cannot answer: this agent is misconfigured ({}). Its owner needs to fix that.", why);
  return fmt::format("Sorry, I could not answer your message ({} attempt{} failed: {}).", attempts,
                     attempts == 1 ? "" : "s", why);
}

void Router::Impl::worker_loop() {
  for (;;) {
    std::optional<TurnScheduler::Batch> b;
    {
      std::unique_lock l(sched_mu);
      for (;;) {
        if (stopping) return;
        if (runner) {
          b = sched.take(opts.max_batch, clock::now_ms());
          if (b) break;
        }
        if (auto due = sched.next_due())
          sched_cv.wait_until(l, std::chrono::system_clock::time_point(std::chrono::milliseconds(*due)));
        else
          sched_cv.wait(l);
      }
    }
    run_turn(std::move(*b));
  }
}

void Router::Impl::run_turn(TurnScheduler::Batch b) {
  TurnScheduler::Chat* chat = b.chat;  // stays valid: a chat with a batch in flight is never freed
  Turn t{chat->agent, chat->channel, chat->chat, std::move(b.envelopes), b.attempt};
  TurnRunner run;
  {
    std::lock_guard g(sched_mu);
    run = runner;
  }
  // Counting the attempt before running it means a turn that kills moatd still uses up its tries.
  {
    auto tx = Transaction::begin(db);
    Status s = tx ? repo.set_running(t.envelopes, t.attempt) : Status(std::unexpected(tx.error()));
    if (s) s = tx->commit();
    if (!s) log::warn("router: cannot mark a turn of {} running: {}", t.agent, s.error().message);
  }
  Channel* ch = channel(t.channel);
  const bool previewing = ch != nullptr && ch->preview_interval().count() > 0;
  LiveSink sink = [&](const std::string& kind, const Json& data) {
    if (!ch) return;
    if (previewing) preview_event(*ch, t.channel, t.chat, t.agent, kind, data);
    try {
      ch->live(LiveEvent{t.channel, t.chat, t.agent, kind, data});
    } catch (const std::exception& ex) {
      log::warn("router: channel {} failed on a live event: {}", t.channel, ex.what());
    }
  };
  sink("turn_started", Json{{"first_id", t.envelopes.front().id}, {"last_id", t.envelopes.back().id}, {"attempt", t.attempt}});
  Result<TurnResult> r = fail(ErrorKind::Internal, "the turn did not run");
  try {
    r = run(t, sink);
  } catch (const std::exception& ex) {
    r = fail(ErrorKind::Internal, "the turn threw: {}", ex.what());
  }
  const int64_t last_id = t.envelopes.back().id;
  const std::string& reply_to = t.envelopes.back().reply_to;

  if (r) {
    // Answered and its replies queued in ONE transaction: after a crash either both happened (the
    // replies go out from the outbox) or neither did (the turn runs again). That is exactly-once.
    // The preview (if the turn showed one) becomes the first reply: its delivery edits that message.
    auto preview = previewing ? close_preview(t.channel, t.chat) : std::nullopt;
    auto tx = Transaction::begin(db);
    Status s = tx ? repo.set_answered(t.envelopes) : Status(std::unexpected(tx.error()));
    for (size_t i = 0; i < r->replies.size(); ++i) {
      if (!s) break;
      std::string_view edit = i == 0 && preview ? std::string_view(preview->platform_id) : std::string_view();
      s = as_status(outbox_insert(db, t.channel, t.chat, t.agent, r->replies[i], last_id, false, reply_to, edit));
    }
    if (s && preview) s = preview_set_state(db, preview->row, PreviewState::Final);
    for (const auto& el : r->elsewhere) {
      if (!s) break;
      s = as_status(outbox_insert(db, el.channel, el.chat, t.agent, el.text, last_id, false));
    }
    if (s) s = tx->commit();
    if (s) {
      if (previewing) end_preview(t.channel, t.chat, true);
      // Before the replies go out, so a channel knows how many of them to wait for.
      sink("turn_ended", Json{{"outcome", "answered"}, {"first_id", t.envelopes.front().id}, {"last_id", last_id},
                              {"replies", r->replies.size()}});
      {
        std::lock_guard g(sched_mu);
        sched.finish(chat);
      }
      sched_cv.notify_all();
      poke_delivery();
      return;
    }
    r = std::unexpected(Error{s.error().kind == ErrorKind::InvalidInput ? ErrorKind::Internal : s.error().kind,
                              fmt::format("saving the answer: {}", s.error().message)});
  }

  const Error& err = r.error();
  const bool final = err.kind == ErrorKind::InvalidInput || t.attempt >= opts.max_attempts;
  if (final) {
    auto preview = previewing ? close_preview(t.channel, t.chat) : std::nullopt;
    auto tx = Transaction::begin(db);
    Status s = tx ? repo.set_failed(t.envelopes, t.attempt, err.message) : Status(std::unexpected(tx.error()));
    if (s)
      s = as_status(outbox_insert(db, t.channel, t.chat, t.agent, failure_reply(err, t.attempt), last_id, true, reply_to,
                                  preview ? std::string_view(preview->platform_id) : std::string_view()));
    if (s && preview) s = preview_set_state(db, preview->row, PreviewState::Final);
    if (s) s = tx->commit();
    if (s) {
      if (previewing) end_preview(t.channel, t.chat, true);
      log::warn("router: turn of {} in {}:{} failed for good after {} attempt(s): {}", t.agent, t.channel, t.chat,
                t.attempt, err.message);
      sink("turn_ended", Json{{"outcome", "failed"}, {"first_id", t.envelopes.front().id}, {"last_id", last_id},
                              {"replies", 1}, {"error", err.message}});
      {
        std::lock_guard g(sched_mu);
        sched.finish(chat);
      }
      sched_cv.notify_all();
      poke_delivery();
      Json data = {{"channel", t.channel}, {"chat", t.chat},          {"attempts", t.attempt},
                   {"error", err.message}, {"first_id", t.envelopes.front().id}, {"last_id", last_id}};
      if (auto a = audit.append("message.failed", "router", t.agent, std::move(data)); !a)
        log::error("router: cannot audit a failed turn: {}", a.error().message);
      return;
    }
    log::error("router: cannot record the failure of a turn of {}: {}; trying again later", t.agent, s.error().message);
  }
  const int64_t not_before = clock::now_ms() + retry_backoff(opts.retry_base).delay(t.attempt).count();
  {
    auto tx = Transaction::begin(db);
    Status s = tx ? repo.set_retry(t.envelopes, t.attempt, not_before, err.message) : Status(std::unexpected(tx.error()));
    if (s) s = tx->commit();
    if (!s) log::warn("router: cannot store the retry time of a turn of {}: {}", t.agent, s.error().message);
  }
  if (previewing) end_preview(t.channel, t.chat, false);  // the next attempt streams into the same message
  log::info("router: turn of {} in {}:{} failed (attempt {}), retrying in {} ms: {}", t.agent, t.channel, t.chat,
            t.attempt, not_before - clock::now_ms(), err.message);
  sink("turn_ended", Json{{"outcome", "retrying"}, {"first_id", t.envelopes.front().id}, {"last_id", last_id},
                          {"attempt", t.attempt}, {"retry_in_ms", std::max<int64_t>(0, not_before - clock::now_ms())},
                          {"error", err.message}});
  {
    std::lock_guard g(sched_mu);
    sched.retry(chat, t.attempt, not_before);
  }
  sched_cv.notify_all();
}

}  // namespace moat::router
