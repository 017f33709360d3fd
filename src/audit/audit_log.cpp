#include "audit/audit_log.h"

#include <exception>

#include "base/log.h"
#include "store/clock.h"

namespace moat {

namespace {
// The log whose subscribers this thread is currently calling, to refuse re-entrant appends.
thread_local const AuditLog* t_delivering = nullptr;
}  // namespace

AuditLog::AuditLog(Database& db, Clock clock_fn)
    : db_(db), clock_(clock_fn ? std::move(clock_fn) : Clock(&clock::now_ns)) {}

Status AuditLog::load_tail() {
  auto l = db_.lock();
  auto st = db_.prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
  if (!st) return std::unexpected(st.error());
  auto row = st->step();
  if (!row) return wrap(row.error(), "reading the end of the audit log");
  if (*row) {
    last_seq_ = st->column_int64(0);
    last_hash_ = st->column_text(1);
  } else {
    last_seq_ = 0;
    last_hash_ = kGenesisHash;
  }
  loaded_ = true;
  return {};
}

Result<int64_t> AuditLog::append(std::string kind, std::string actor, std::string subject, Json data) {
  return append(AuditEntry{std::move(kind), std::move(actor), std::move(subject), std::move(data)});
}

Result<int64_t> AuditLog::append(AuditEntry entry) {
  std::vector<AuditEntry> one;
  one.push_back(std::move(entry));
  return append_batch(std::move(one));
}

Result<int64_t> AuditLog::append_batch(std::vector<AuditEntry> entries) {
  if (t_delivering == this)
    return fail(ErrorKind::Internal,
                "an audit subscriber tried to append to the audit log it is listening to; that would deadlock");
  std::unique_lock a(append_mu_);
  return append_locked(entries, a);
}

Result<int64_t> AuditLog::append_locked(std::vector<AuditEntry>& entries, std::unique_lock<std::mutex>& a) {
  if (!loaded_) {
    if (auto s = load_tail(); !s) return std::unexpected(s.error());
  }
  if (entries.empty()) return last_seq_;

  bool want_events;
  {
    std::lock_guard g(subs_mu_);
    want_events = !subs_.empty();
  }
  std::vector<AuditEvent> events;
  if (want_events) events.reserve(entries.size());

  int64_t seq = last_seq_;
  std::string prev = last_hash_;
  std::string data;
  {
    auto tx = Transaction::begin(db_);
    if (!tx) return wrap(tx.error(), "appending to the audit log");
    if (!insert_) {
      auto st = db_.prepare(
          "INSERT INTO audit (seq, time_ns, kind, actor, subject, data, prev_hash, hash) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      if (!st) return std::unexpected(st.error());
      insert_.emplace(std::move(*st));
    }
    for (auto& e : entries) {
      ++seq;
      int64_t t = clock_();
      data = canonical_json(e.data);
      std::string_view hash = hasher_.hash(seq, t, e.kind, e.actor, e.subject, data, prev);
      insert_->reset();
      insert_->bind(1, seq).bind(2, t).bind(3, e.kind).bind(4, e.actor).bind(5, e.subject).bind(6, data);
      insert_->bind(7, prev).bind(8, hash);
      if (auto r = insert_->step(); !r) {
        insert_->reset();
        loaded_ = false;  // someone else may have written: re-read the tail next time
        if (r.error().kind == ErrorKind::Conflict)
          return fail(ErrorKind::Conflict,
                      "appending audit record {}: another writer appended to the audit log; retry ({})", seq,
                      r.error().message);
        return wrap(r.error(), fmt::format("appending audit record {}", seq));
      }
      if (want_events)
        events.push_back(AuditEvent{seq, t, std::move(e.kind), std::move(e.actor), std::move(e.subject),
                                    std::move(e.data), prev, std::string(hash)});
      prev.assign(hash);
    }
    insert_->reset();
    if (auto s = tx->commit(); !s) {
      loaded_ = false;
      return wrap(s.error(), "committing to the audit log");
    }
  }
  last_seq_ = seq;
  last_hash_ = std::move(prev);

  if (!want_events) return seq;
  // Hand over from the append lock to the delivery lock so deliveries keep seq order while the next
  // append proceeds.
  std::unique_lock d(deliver_mu_);
  a.unlock();
  std::vector<std::shared_ptr<Subscriber>> subs;
  {
    std::lock_guard g(subs_mu_);
    for (auto& [id, s] : subs_) subs.push_back(s);
  }
  t_delivering = this;
  for (const auto& ev : events) {
    for (const auto& s : subs) {
      try {
        (*s)(ev);
      } catch (const std::exception& ex) {
        log::warn("audit subscriber failed on record {}: {}", ev.seq, ex.what());
      }
    }
  }
  t_delivering = nullptr;
  return seq;
}

Result<int64_t> AuditLog::last_seq() {
  std::lock_guard a(append_mu_);
  if (!loaded_) {
    if (auto s = load_tail(); !s) return std::unexpected(s.error());
  }
  return last_seq_;
}

Result<std::vector<AuditEvent>> AuditLog::read_after(int64_t after_seq, int64_t limit) {
  auto l = db_.lock();
  auto st = db_.prepare(
      "SELECT seq, time_ns, kind, actor, subject, data, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq "
      "LIMIT ?2");
  if (!st) return std::unexpected(st.error());
  st->bind(1, after_seq).bind(2, limit);
  std::vector<AuditEvent> out;
  for (;;) {
    auto row = st->step();
    if (!row) return wrap(row.error(), "reading the audit log");
    if (!*row) break;
    AuditEvent ev;
    ev.seq = st->column_int64(0);
    ev.time_ns = st->column_int64(1);
    ev.kind = st->column_text(2);
    ev.actor = st->column_text(3);
    ev.subject = st->column_text(4);
    auto text = st->column_text(5);
    ev.data = Json::parse(text, nullptr, false);
    if (ev.data.is_discarded()) ev.data = std::string(text);
    ev.prev_hash = st->column_text(6);
    ev.hash = st->column_text(7);
    out.push_back(std::move(ev));
  }
  return out;
}

AuditLog::SubscriberId AuditLog::subscribe(Subscriber callback) {
  std::lock_guard g(subs_mu_);
  SubscriberId id = next_id_++;
  subs_.emplace(id, std::make_shared<Subscriber>(std::move(callback)));
  return id;
}

void AuditLog::unsubscribe(SubscriberId id) {
  {
    std::lock_guard g(subs_mu_);
    subs_.erase(id);
  }
  // Wait out a delivery in progress on another thread (it may hold a copy of the callback).
  if (t_delivering != this) std::lock_guard d(deliver_mu_);
}

}  // namespace moat
