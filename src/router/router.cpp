#include "router/router.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "base/log.h"
#include "router/pairing.h"
#include "router/router_impl.h"
#include "store/clock.h"

namespace moat::router {

namespace {
constexpr size_t kMaxText = 1 << 20;
// A group commit writes at most this many envelopes: bounds how long the leader's own caller and the
// callers queued behind the batch wait, while still amortising the fsync over hundreds of rows.
constexpr size_t kMaxGroup = 1024;

// A bare futex rather than std::atomic::wait: libstdc++ 12 spins with sched_yield before it sleeps,
// which with hundreds of waiting callers burnt a quarter of the CPU in the benchmark.
void futex_wait(std::atomic<int>& a, int expected) {
  syscall(SYS_futex, reinterpret_cast<int*>(&a), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
// Only the address reaches the kernel: waking after the waiter freed the word is harmless (a stray
// wake-up of a later waiter at that address, which re-checks its own word).
void futex_wake(std::atomic<int>& a) {
  syscall(SYS_futex, reinterpret_cast<int*>(&a), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

Status require(std::string_view field, std::string_view value) {
  if (value.empty())
    return fail(ErrorKind::InvalidInput, "the message has no {}: a channel must set envelope.{} before accept()",
                field, field);
  return {};
}

std::string held_reply(std::string_view code) {
  return fmt::format(
      "Your message is held: this agent does not know you yet. Ask its owner to approve you with "
      "`moat approve {}`; your held messages are answered once they do.",
      code);
}
}  // namespace

Router::Router(Database& db, AuditLog& audit, RouterOptions opts)
    : impl_(std::make_unique<Impl>(db, audit, opts)) {
  if (impl_->opts.max_concurrent_turns == 0) impl_->opts.max_concurrent_turns = 1;
  if (impl_->opts.max_batch == 0) impl_->opts.max_batch = 1;
  if (impl_->opts.max_attempts < 1) impl_->opts.max_attempts = 1;
  // Approvals are needed by accept(), which may run before start().
  auto a = impl_->repo.approvals();
  if (!a) {
    log::error("router: cannot read sender approvals ({}); approved senders are treated as unknown until restart",
               a.error().message);
  } else {
    std::lock_guard g(impl_->approvals_mu);
    for (auto& k : *a) impl_->approvals.insert(std::move(k));
  }
}

Router::~Router() { stop(); }

Status Router::validate_rules(const std::vector<RouteRule>& rules) {
  auto m = RuleMatcher::build(rules);
  if (!m) return std::unexpected(m.error());
  return {};
}

void Router::set_rules(std::vector<RouteRule> rules) {
  auto built = RuleMatcher::build(rules);
  if (!built) {
    // set_rules cannot refuse (the daemon validated with validate_rules); a bad rule is left out
    // rather than taking every other agent's routing down with it.
    log::error("router: {}; that rule is ignored", built.error().message);
    std::vector<RouteRule> good;
    for (auto& r : rules)
      if (RuleMatcher::build({r})) good.push_back(std::move(r));
    built = RuleMatcher::build(std::move(good));
    if (!built) return;
  }
  auto next = std::make_shared<const RuleMatcher>(std::move(*built));
  std::shared_ptr<const RuleMatcher> prev;
  {
    std::unique_lock w(impl_->rules_mu);
    prev = std::exchange(impl_->matcher, next);
  }
  std::vector<std::string> removed;
  for (const auto& a : prev->agents())
    if (!next->has_agent(a)) removed.push_back(a);
  if (removed.empty()) return;
  auto l = impl_->db.lock();
  for (const auto& agent : removed) {
    std::vector<Envelope> gone;
    {
      std::lock_guard g(impl_->sched_mu);
      gone = impl_->sched.remove_agent(agent);
    }
    if (gone.empty()) continue;
    auto why = fmt::format("agent {} was removed before it answered", agent);
    auto tx = Transaction::begin(impl_->db);
    Status s = tx ? impl_->repo.set_failed(gone, 0, why) : Status(std::unexpected(tx.error()));
    if (s) s = tx->commit();
    if (!s) log::error("router: cannot mark the queued messages of removed agent {} failed: {}", agent, s.error().message);
  }
}

void Router::set_turn_runner(TurnRunner runner) {
  {
    std::lock_guard g(impl_->sched_mu);
    impl_->runner = std::move(runner);
  }
  impl_->sched_cv.notify_all();
}

void Router::add_channel(Channel& channel) {
  {
    std::lock_guard g(impl_->channels_mu);
    impl_->channels[std::string(channel.name())] = &channel;
  }
  impl_->poke_delivery();
}

void Router::remove_channel(std::string_view name) {
  std::lock_guard g(impl_->channels_mu);
  impl_->channels.erase(std::string(name));
}

Status Router::start() {
  {
    std::lock_guard g(impl_->sched_mu);
    if (!impl_->workers.empty()) return fail(ErrorKind::Conflict, "the router is already running");
    if (impl_->stopping) return fail(ErrorKind::Conflict, "the router was stopped; create a new one");
  }
  {
    auto l = impl_->db.lock();
    auto rows = impl_->repo.recover();
    if (!rows) return wrap(rows.error(), "recovering the router's queues");
    {
      std::lock_guard g(impl_->sched_mu);
      impl_->sched.clear();
      for (auto& [q, not_before] : *rows) impl_->sched.push(std::move(q), not_before);
    }
    impl_->started = true;
  }
  if (auto s = impl_->load_orphans(); !s) return wrap(s.error(), "reading the reply previews a crash left open");
  impl_->preview_thread = std::thread([this] { impl_->preview_loop(); });
  std::lock_guard g(impl_->sched_mu);
  for (size_t i = 0; i < impl_->opts.max_concurrent_turns; ++i)
    impl_->workers.emplace_back([this] { impl_->worker_loop(); });
  impl_->delivery = std::thread([this] { impl_->delivery_loop(); });
  return {};
}

void Router::stop() {
  std::vector<std::thread> workers;
  {
    std::lock_guard g(impl_->sched_mu);
    impl_->stopping = true;
    workers = std::move(impl_->workers);
    impl_->workers.clear();
  }
  impl_->sched_cv.notify_all();
  // Running turns finish and commit their results before their thread returns.
  for (auto& t : workers) t.join();
  {
    std::lock_guard g(impl_->out_mu);
    impl_->out_stopping = true;
  }
  impl_->out_cv.notify_all();
  if (impl_->delivery.joinable()) impl_->delivery.join();
  {
    std::lock_guard g(impl_->prev_mu);
    impl_->prev_stopping = true;
  }
  impl_->prev_cv.notify_all();
  if (impl_->preview_thread.joinable()) impl_->preview_thread.join();
}

bool Router::Impl::approved(std::string_view agent, std::string_view channel, std::string_view sender) {
  std::lock_guard g(approvals_mu);
  return approvals.contains(approval_key(agent, channel, sender));
}

Result<Acceptance> Router::accept(Envelope e) {
  std::vector<Envelope> one;
  one.push_back(std::move(e));
  return std::move(accept_many(std::move(one))[0]);
}

std::vector<Router::Impl::Item> Router::Impl::prepare(std::vector<Envelope>& envelopes,
                                                    std::vector<Result<Acceptance>>& out, std::vector<size_t>& where) {
  out.assign(envelopes.size(), Acceptance{Acceptance::Outcome::Dropped});
  std::shared_ptr<const RuleMatcher> m_;
  {
    std::shared_lock r(rules_mu);
    m_ = matcher;
  }
  std::vector<Item> items;
  items.reserve(envelopes.size());
  for (size_t i = 0; i < envelopes.size(); ++i) {
    Envelope& e = envelopes[i];
    Status valid = require("channel", e.channel);
    if (valid) valid = require("chat", e.chat);
    if (valid) valid = require("sender", e.sender);
    if (valid) valid = require("message_id", e.message_id);
    if (valid && e.text.size() > kMaxText)
      valid = fail(ErrorKind::InvalidInput, "the message text is {} bytes; the router accepts at most {} bytes (1 MiB)",
                   e.text.size(), kMaxText);
    if (!valid) {
      out[i] = std::unexpected(valid.error());
      continue;
    }
    if (e.received_ms == 0) e.received_ms = clock::now_ms();
    e.id = 0;
    // Matching happens on the caller's thread, outside the group commit, so it runs in parallel.
    MatchResult m = m_->match(e, [&](const std::string& agent) { return approved(agent, e.channel, e.sender); });
    items.push_back(Item{std::move(e), std::move(m)});
    where.push_back(i);
  }
  return items;
}

std::vector<Result<Acceptance>> Router::accept_many(std::vector<Envelope> envelopes) {
  std::vector<Result<Acceptance>> out;
  std::vector<size_t> where;  // items[k] answers out[where[k]]
  auto items = impl_->prepare(envelopes, out, where);
  if (!items.empty()) (void)impl_->accept_grouped(items);
  for (size_t k = 0; k < items.size(); ++k) out[where[k]] = std::move(items[k].result);
  return out;
}

Result<std::vector<Result<Acceptance>>> Router::accept_with_cursor(std::vector<Envelope> envelopes, ChannelCursor cursor) {
  if (auto st = require("channel", cursor.channel); !st) return std::unexpected(st.error());
  std::vector<Result<Acceptance>> out;
  std::vector<size_t> where;
  auto items = impl_->prepare(envelopes, out, where);
  if (auto st = impl_->accept_grouped(items, &cursor); !st)
    return wrap(st.error(), fmt::format("storing {} message(s) of channel {} with its cursor", items.size(), cursor.channel));
  for (size_t k = 0; k < items.size(); ++k) out[where[k]] = std::move(items[k].result);
  return out;
}

Result<std::optional<Json>> Router::channel_cursor(std::string_view channel) {
  auto& db = impl_->db;
  auto l = db.lock();
  auto st = db.prepare("SELECT cursor_json FROM channel_cursors WHERE channel = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, channel);
  auto row = st->step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<Json>();
  auto j = Json::parse(st->column_text(0), nullptr, false);
  if (j.is_discarded()) return fail(ErrorKind::Internal, "the stored cursor of channel {} is not JSON", channel);
  return std::optional<Json>(std::move(j));
}

Status Router::Impl::accept_grouped(std::vector<Item>& items, const ChannelCursor* cursor) {
  Pending p;
  p.items = std::move(items);
  p.cursor = cursor;
  bool lead = false;
  {
    std::lock_guard g(gc_mu);
    gc_queue.push_back(&p);
    if (!gc_leader) lead = gc_leader = true;
  }
  if (!lead) {
    int st;
    while ((st = p.state.load(std::memory_order_acquire)) == 0) futex_wait(p.state, 0);
    if (st == 1) {
      items = std::move(p.items);
      return p.committed;
    }
    // state 2: the previous leader handed over; we are first in the queue.
  }
  std::vector<Pending*> batch;
  {
    std::lock_guard g(gc_mu);
    size_t n = 0;
    while (!gc_queue.empty() && (batch.empty() || n + gc_queue.front()->items.size() <= kMaxGroup)) {
      n += gc_queue.front()->items.size();
      batch.push_back(gc_queue.front());
      gc_queue.pop_front();
    }
  }
  write_batch(batch);
  // Hand over before the fsync: the next leader writes its batch while this one's reaches the disk.
  Pending* next = nullptr;
  {
    std::lock_guard g(gc_mu);
    if (gc_queue.empty())
      gc_leader = false;
    else
      next = gc_queue.front();
  }
  // After the store the waiter may return and free its Pending before the wake (see futex_wake).
  if (next) {
    next->state.store(2, std::memory_order_release);
    futex_wake(next->state);
  }
  // Nobody hears "accepted" before the envelope is on disk. A failed flush fails the whole batch: the
  // channel does not acknowledge, the sender retries, and the retry is deduplicated by message id.
  if (Status synced = db.sync_wal(); !synced) {
    Error e = wrap(synced.error(), "storing inbound messages").error();
    for (Pending* q : batch) {
      q->committed = std::unexpected(e);
      for (Item& it : q->items) it.result = std::unexpected(e);
    }
  }
  items = std::move(p.items);
  Status mine = p.committed;
  for (Pending* q : batch) {
    if (q == &p) continue;
    q->state.store(1, std::memory_order_release);
    futex_wake(q->state);
  }
  return mine;
}

void Router::Impl::write_batch(std::vector<Pending*>& batch) {
  std::vector<AuditEntry> entries;
  entries.reserve(batch.size());
  std::vector<QueuedEnvelope> queued;
  bool outbox_added = false;
  auto fail_all = [&](const Error& e) {
    for (Pending* q : batch) {
      q->committed = std::unexpected(e);
      for (Item& it : q->items) it.result = std::unexpected(e);
    }
  };

  // The outer lock outlives the transaction so that queued envelopes reach the scheduler, in commit
  // order, before any other writer (start()'s reload, approve(), the next batch) can run.
  auto l = db.lock();
  auto tx = Transaction::begin(db, Durability::OnSync);
  if (!tx) {
    fail_all(tx.error());
    return;
  }
  for (Pending* pend : batch) for (Item& item : pend->items) {
    Envelope& e = item.env;
    MatchResult& m = item.match;
    // approve() may have run since matching; it changes approvals only under db.lock(), held here.
    if (m.kind == MatchResult::Kind::Held && approved(m.agent, e.channel, e.sender)) m.kind = MatchResult::Kind::Queued;
    if (m.kind != MatchResult::Kind::Dropped) e.agent = m.agent;
    std::string_view state = m.kind == MatchResult::Kind::Queued ? "queued"
                             : m.kind == MatchResult::Kind::Held ? "held"
                                                                 : "dropped";
    auto id = repo.insert(e, state, m.reason);
    if (!id) {
      fail_all(id.error());
      return;
    }
    if (!*id) {
      auto prev = repo.find(e.channel, e.message_id);
      if (!prev) {
        fail_all(prev.error());
        return;
      }
      item.result = Acceptance{Acceptance::Outcome::Duplicate, prev->first, prev->second};
      continue;
    }
    e.id = **id;
    Acceptance a{Acceptance::Outcome::Queued, e.id, m.agent};
    Json data = {{"id", e.id},   {"channel", e.channel},       {"chat", e.chat},
                 {"sender", e.sender}, {"message_id", e.message_id}, {"bytes", e.text.size()}};
    std::string actor = fmt::format("{}:{}", e.channel, e.sender);
    switch (m.kind) {
      case MatchResult::Kind::Queued:
        entries.push_back(AuditEntry{"message.in", std::move(actor), e.agent, std::move(data)});
        queued.push_back(QueuedEnvelope{std::move(e), 0});
        break;
      case MatchResult::Kind::Held: {
        a.outcome = Acceptance::Outcome::Held;
        auto code = repo.open_code(m.agent, e.channel, e.sender);
        if (!code) {
          fail_all(code.error());
          return;
        }
        if (!*code) {  // first held message of this sender: a new code, and one reply telling them
          std::string c = new_pairing_code();
          Status s = repo.insert_code(c, m.agent, e.channel, e.sender);
          if (s) s = as_status(outbox_insert(db, e.channel, e.chat, m.agent, held_reply(c), e.id, false, e.reply_to));
          if (!s) {
            fail_all(s.error());
            return;
          }
          outbox_added = true;
          *code = std::move(c);
        }
        a.pairing_code = **code;
        data["code"] = **code;
        entries.push_back(AuditEntry{"message.held", std::move(actor), m.agent, std::move(data)});
        break;
      }
      case MatchResult::Kind::Dropped:
        a.outcome = Acceptance::Outcome::Dropped;
        a.agent.clear();
        a.reason = m.reason;
        data["reason"] = m.reason;
        entries.push_back(AuditEntry{"message.dropped", std::move(actor), e.agent, std::move(data)});
        break;
    }
    item.result = std::move(a);
  }
  // A pulling channel's cursor moves with the envelopes it covers (queue order: the later call wins).
  for (Pending* pend : batch) {
    if (!pend->cursor) continue;
    auto st = db.prepare(
        "INSERT INTO channel_cursors (channel, cursor_json, updated_at_ms) VALUES (?1, ?2, ?3) "
        "ON CONFLICT(channel) DO UPDATE SET cursor_json = excluded.cursor_json, updated_at_ms = excluded.updated_at_ms");
    Status s = st ? Status{} : Status(std::unexpected(st.error()));
    if (s) {
      st->bind(1, pend->cursor->channel).bind(2, pend->cursor->value.dump()).bind(3, clock::now_ms());
      auto done = st->step();
      if (!done) s = std::unexpected(done.error());
    }
    if (!s) {
      fail_all(s.error());
      return;
    }
  }
  // The records go in the same transaction: an accepted message always has its audit record.
  auto staged = audit.stage(*tx, std::move(entries));
  if (!staged) {
    fail_all(staged.error());
    return;
  }
  if (auto s = tx->commit(); !s) {
    fail_all(s.error());
    return;
  }
  audit.publish(std::move(*staged));
  if (started && !queued.empty()) enqueue(std::move(queued));
  if (outbox_added) poke_delivery();  // the delivery thread flushes the log before it sends anything
}

void Router::Impl::enqueue(std::vector<QueuedEnvelope> qs) {
  bool wake;
  {
    std::lock_guard g(sched_mu);
    for (auto& q : qs) sched.push(std::move(q));
    wake = static_cast<bool>(runner);  // with no runner the workers have nothing to do
  }
  if (wake) sched_cv.notify_all();
}

Result<Json> Router::approve(std::string_view code_in, std::string_view actor) {
  std::string code = normalize_pairing_code(code_in);
  auto& im = *impl_;
  EnvelopeRepo::CodeRow row;
  size_t requeued = 0;
  {
    auto l = im.db.lock();
    auto tx = Transaction::begin(im.db);
    if (!tx) return wrap(tx.error(), "approving a sender");
    auto found = im.repo.code(code);
    if (!found) return wrap(found.error(), "approving a sender");
    if (!*found || (*found)->used_at_ms != 0)
      return fail(ErrorKind::NotFound,
                  "no pairing code {} is waiting for approval (check for a typo; a code works once)", code);
    row = **found;
    if (auto s = im.repo.use_code(code, actor, row); !s) return std::unexpected(s.error());
    auto held = im.repo.release_held(row.agent, row.channel, row.sender);
    if (!held) return std::unexpected(held.error());
    if (auto s = tx->commit(); !s) return wrap(s.error(), "approving a sender");
    {
      std::lock_guard g(im.approvals_mu);
      im.approvals.insert(approval_key(row.agent, row.channel, row.sender));
    }
    requeued = held->size();
    if (im.started) im.enqueue(std::move(*held));
  }
  Json out = {{"agent", row.agent}, {"channel", row.channel}, {"sender", row.sender}, {"requeued", requeued}};
  if (auto r = im.audit.append("sender.approved", std::string(actor), row.agent, out); !r)
    log::error("router: cannot audit the approval of {}:{}: {}", row.channel, row.sender, r.error().message);
  return out;
}

Result<std::vector<EnvelopeStatus>> Router::messages(std::string_view state_filter, std::string_view agent,
                                                     size_t limit) {
  static constexpr std::string_view kStates[] = {"", "queued", "running", "answered", "failed", "held", "dropped"};
  if (std::find(std::begin(kStates), std::end(kStates), state_filter) == std::end(kStates))
    return fail(ErrorKind::InvalidInput,
                "unknown message state '{}': use queued, running, answered, failed, held or dropped", state_filter);
  return impl_->repo.list(state_filter, agent, limit);
}

Result<std::vector<ChannelMessage>> Router::channel_history(std::string_view channel, size_t inbound,
                                                            size_t replies) {
  return router::channel_history(impl_->db, channel, inbound, replies);
}

Result<Router::Traffic> Router::channel_traffic(std::string_view channel, int64_t since_ms) {
  auto& db = impl_->db;
  auto l = db.lock();
  Traffic t;
  auto count = [&](const char* sql) -> Result<uint64_t> {
    auto st = db.prepare(sql);
    if (!st) return std::unexpected(st.error());
    st->bind(1, channel).bind(2, since_ms);
    auto row = st->step();
    if (!row) return std::unexpected(row.error());
    return *row ? static_cast<uint64_t>(st->column_int64(0)) : 0;
  };
  auto in = count(
      "SELECT count(*) FROM envelopes WHERE id > (SELECT coalesce(max(id), 0) - 200000 FROM envelopes) "
      "AND channel = ?1 AND received_ms >= ?2");
  if (!in) return std::unexpected(in.error());
  auto out = count(
      "SELECT count(*) FROM outbox WHERE id > (SELECT coalesce(max(id), 0) - 200000 FROM outbox) "
      "AND channel = ?1 AND delivered_at_ms >= ?2");
  if (!out) return std::unexpected(out.error());
  t.in = *in;
  t.out = *out;
  return t;
}

Result<int64_t> Router::send(std::string agent, std::string channel, std::string chat, std::string text) {
  if (channel.empty()) return fail(ErrorKind::InvalidInput, "send: no channel given");
  if (chat.empty()) return fail(ErrorKind::InvalidInput, "send: no chat given");
  if (text.empty()) return fail(ErrorKind::InvalidInput, "send: the message text is empty");
  if (text.size() > kMaxText)
    return fail(ErrorKind::InvalidInput, "send: the message text is {} bytes; at most {} bytes (1 MiB)", text.size(),
                kMaxText);
  auto id = outbox_insert(impl_->db, channel, chat, agent, text, 0, false);
  if (!id) return id;
  impl_->poke_delivery();
  return id;
}

Router::Stats Router::stats() const {
  Stats s;
  {
    std::lock_guard g(impl_->sched_mu);
    s.queued = impl_->sched.queued();
    s.running = impl_->sched.running();
  }
  if (auto n = outbox_undelivered_count(impl_->db); n) s.undelivered = static_cast<size_t>(*n);
  return s;
}

}  // namespace moat::router
