#include "audit/checkpointer.h"

#include "net/backoff.h"
#include "base/log.h"
#include "store/clock.h"

namespace moat {

namespace {

int64_t steady_ns(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

Checkpointer::Checkpointer(Database& db, AuditLog& log, CheckpointKey key, CheckpointerOptions options, Clock clock)
    : db_(db),
      log_(log),
      key_(std::move(key)),
      options_(std::move(options)),
      clock_(clock ? std::move(clock) : Clock(&clock::now_ns)),
      sink_(make_checkpoint_sink(options_.sink, options_.sink_timeout)) {
  if (options_.every_records < 1) options_.every_records = 1;
}

Checkpointer::~Checkpointer() {
  if (auto st = stop(); !st) log::warn("audit checkpoint at stop: {}", st.error().message);
}

Status Checkpointer::start() {
  if (sink_) {
    if (auto st = sink_->check(); !st) return st;
  }
  auto last = db_.query_int64("SELECT coalesce(max(seq), 0) FROM audit_checkpoints");
  if (!last) return wrap(last.error(), "reading the last audit checkpoint");
  signed_seq_ = *last;
  auto head = log_.head();
  if (!head) return wrap(head.error(), "reading the end of the audit log");
  latest_seq_ = head->first;
  log_.set_tail_watcher([this](int64_t seq) {
    latest_seq_.store(seq, std::memory_order_relaxed);
    if (seq - signed_seq_.load(std::memory_order_relaxed) >= options_.every_records) {
      std::lock_guard g(mu_);
      cv_.notify_one();
    }
  });
  {
    std::lock_guard g(mu_);
    started_ = true;
  }
  thread_ = std::thread([this] { run(); });
  return {};
}

void Checkpointer::run() {
  auto next_due = Steady::now() + options_.interval;
  auto full = [&] { return latest_seq_.load() - signed_seq_.load() >= options_.every_records; };
  auto retry_due = [&](Steady::time_point now) {
    int64_t at = retry_at_ns_.load();
    return at != 0 && steady_ns(now) >= at;
  };
  std::unique_lock g(mu_);
  while (!stopping_) {
    auto wake = next_due;
    const int64_t retry_at = retry_at_ns_.load();
    if (retry_at != 0)
      wake = std::min(wake, Steady::time_point(std::chrono::duration_cast<Steady::duration>(std::chrono::nanoseconds(retry_at))));
    // A retry scheduled meanwhile (by a checkpoint made on another thread) changes when to wake.
    cv_.wait_until(g, wake, [&] { return stopping_ || full() || retry_at_ns_.load() != retry_at; });
    if (stopping_) break;
    auto now = Steady::now();
    bool due = now >= next_due, signing = due || full();
    if (!signing && !retry_due(now)) continue;
    g.unlock();
    if (signing) {
      if (auto cp = checkpoint_now(); !cp) log::warn("audit checkpoint: {}", cp.error().message);
    }
    retry_pending();  // the chain did not move, or moved without reaching the sink: the newest one again
    g.lock();
    if (signing) next_due = Steady::now() + options_.interval;
  }
}

Result<std::optional<Checkpoint>> Checkpointer::checkpoint_now() { return make_checkpoint(false); }

Result<std::optional<Checkpoint>> Checkpointer::make_checkpoint(bool final) {
  std::lock_guard s(sign_mu_);
  auto head = log_.head();
  if (!head) return wrap(head.error(), "reading the end of the audit log");
  // Records the router committed without waiting for the disk (up to the head just read) become
  // durable first: a checkpoint must never cover a record a crash could still take away.
  if (auto st = db_.sync_wal(); !st) return wrap(st.error(), "flushing the store before an audit checkpoint");
  auto [seq, hash] = std::move(*head);
  if (seq == 0 || seq <= signed_seq_.load()) {
    // Nothing new to sign; at stop, the newest checkpoint the sink missed gets one more try.
    if (final && pending_) {
      Checkpoint again = *pending_;
      if (auto st = ship(again, true); !st) return std::unexpected(st.error());
    }
    return std::optional<Checkpoint>{};
  }
  Checkpoint cp = key_.sign(seq, std::move(hash), clock_());
  // The sink first: it is the copy that outlives tampering with the state directory.
  auto shipped = ship(cp, final);
  {
    auto l = db_.lock();
    auto st = db_.prepare(
        "INSERT INTO audit_checkpoints (seq, head_hash, time_ns, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return wrap(st.error(), "storing an audit checkpoint");
    st->bind(1, cp.seq).bind(2, cp.head_hash).bind(3, cp.time_ns).bind(4, cp.public_key).bind(5, cp.signature);
    if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("storing the audit checkpoint of record {}", cp.seq));
  }
  signed_seq_ = cp.seq;
  if (!shipped) return std::unexpected(shipped.error());
  return std::optional<Checkpoint>(std::move(cp));
}

Status Checkpointer::ship(const Checkpoint& cp, bool now) {
  if (!sink_) return {};
  const std::string where = options_.sink.text();
  if (sink_failures_ > 0 && !now && Steady::now() < sink_retry_at_) {
    pending_ = cp;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(sink_retry_at_ - Steady::now());
    return fail(ErrorKind::Unavailable,
                "the checkpoint of record {} is kept in the store but not shipped yet: the audit sink {} failed {} "
                "time(s) in a row and is tried again in {} ms",
                cp.seq, where, sink_failures_, left.count());
  }
  if (auto st = sink_->ship(cp); !st) {
    ++sink_failures_;
    auto wait = net::Backoff{.initial = options_.sink_retry, .cap = options_.sink_retry_cap}.delay(sink_failures_);
    sink_retry_at_ = Steady::now() + wait;
    pending_ = cp;
    {
      std::lock_guard g(mu_);  // lock order: sign_mu_, then mu_ (run() never holds mu_ while signing)
      retry_at_ns_ = steady_ns(sink_retry_at_);
      cv_.notify_one();
    }
    return fail(st.error().kind, "{}; the checkpoint is kept in the store and the sink is tried again in {} ms",
                st.error().message, wait.count());
  }
  if (sink_failures_ > 0)
    log::info("the audit checkpoint sink {} took the checkpoint of record {} after {} failed attempt(s)", where, cp.seq,
              sink_failures_);
  sink_failures_ = 0;
  pending_.reset();
  retry_at_ns_ = 0;
  return {};
}

void Checkpointer::retry_pending() {
  std::lock_guard s(sign_mu_);
  if (!pending_ || Steady::now() < sink_retry_at_) return;
  Checkpoint again = *pending_;
  if (auto st = ship(again); !st) log::warn("audit checkpoint: {}", st.error().message);
}

Status Checkpointer::stop() {
  {
    std::lock_guard g(mu_);
    if (!started_) return {};
    started_ = false;
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  log_.set_tail_watcher({});
  auto cp = make_checkpoint(true);
  if (!cp) return std::unexpected(cp.error());
  return {};
}

}  // namespace moat
