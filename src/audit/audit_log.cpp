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
  if (t_delivering == this)  // before waiting for the store, which the publishing thread may hold
    return fail(ErrorKind::Internal,
                "an audit subscriber tried to append to the audit log it is listening to; that would deadlock");
  auto tx = Transaction::begin(db_);
  if (!tx) return wrap(tx.error(), "appending to the audit log");
  auto staged = stage(*tx, std::move(entries));
  if (!staged) return std::unexpected(staged.error());
  if (auto s = tx->commit(); !s) return wrap(s.error(), "committing to the audit log");
  return publish(std::move(*staged));
}

AuditLog::Staged::~Staged() {
  // Unpublished: the transaction did not commit (or its outcome is unknown), so the tail in memory
  // may not match the table any more.
  if (!published_ && lock_.owns_lock()) log_->loaded_ = false;
}

Result<AuditLog::Staged> AuditLog::stage(Transaction&, std::vector<AuditEntry> entries) {
  if (t_delivering == this)
    return fail(ErrorKind::Internal,
                "an audit subscriber tried to append to the audit log it is listening to; that would deadlock");
  Staged st(*this, std::unique_lock(append_mu_));
  if (!loaded_) {
    if (auto s = load_tail(); !s) return std::unexpected(s.error());
  }
  st.last_seq_ = last_seq_;
  st.last_hash_ = last_hash_;
  if (entries.empty()) return st;

  bool want_events;
  {
    std::lock_guard g(subs_mu_);
    want_events = !subs_.empty();
  }
  if (want_events) st.events_.reserve(entries.size());
  if (!insert_) {
    auto prepared = db_.prepare(
        "INSERT INTO audit (seq, time_ns, kind, actor, subject, data, prev_hash, hash) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!prepared) return std::unexpected(prepared.error());
    insert_.emplace(std::move(*prepared));
  }
  std::string data;
  for (auto& e : entries) {
    int64_t seq = ++st.last_seq_;
    int64_t t = clock_();
    data = canonical_json(e.data);
    std::string_view hash = hasher_.hash(seq, t, e.kind, e.actor, e.subject, data, st.last_hash_);
    insert_->reset();
    insert_->bind(1, seq).bind(2, t).bind(3, e.kind).bind(4, e.actor).bind(5, e.subject).bind(6, data);
    insert_->bind(7, st.last_hash_).bind(8, hash);
    if (auto r = insert_->step(); !r) {
      insert_->reset();
      if (r.error().kind == ErrorKind::Conflict)
        return fail(ErrorKind::Conflict, "appending audit record {}: another writer appended to the audit log; retry ({})",
                    seq, r.error().message);
      return wrap(r.error(), fmt::format("appending audit record {}", seq));
    }
    if (want_events)
      st.events_.push_back(AuditEvent{seq, t, std::move(e.kind), std::move(e.actor), std::move(e.subject),
                                      std::move(e.data), st.last_hash_, std::string(hash)});
    st.last_hash_.assign(hash);
  }
  insert_->reset();
  return st;
}

int64_t AuditLog::publish(Staged st) {
  last_seq_ = st.last_seq_;
  last_hash_ = std::move(st.last_hash_);
  st.published_ = true;
  int64_t seq = last_seq_;
  if (tail_watcher_) tail_watcher_(seq);
  if (st.events_.empty()) return seq;
  // Hand over from the append lock to the delivery lock so deliveries keep seq order while the next
  // append proceeds.
  std::unique_lock d(deliver_mu_);
  st.lock_.unlock();
  std::vector<std::shared_ptr<Subscriber>> subs;
  {
    std::lock_guard g(subs_mu_);
    for (auto& [id, s] : subs_) subs.push_back(s);
  }
  t_delivering = this;
  for (const auto& ev : st.events_) {
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
  auto l = db_.lock();
  std::lock_guard a(append_mu_);
  if (!loaded_) {
    if (auto s = load_tail(); !s) return std::unexpected(s.error());
  }
  return last_seq_;
}

Result<std::pair<int64_t, std::string>> AuditLog::head() {
  auto l = db_.lock();
  std::lock_guard a(append_mu_);
  if (!loaded_) {
    if (auto s = load_tail(); !s) return std::unexpected(s.error());
  }
  return std::pair{last_seq_, last_hash_};
}

void AuditLog::set_tail_watcher(std::function<void(int64_t last_seq)> watcher) {
  std::lock_guard a(append_mu_);
  tail_watcher_ = std::move(watcher);
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
