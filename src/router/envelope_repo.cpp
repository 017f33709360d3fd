#include "router/envelope_repo.h"

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "base/log.h"
#include "router/envelope_codec.h"
#include "store/clock.h"

namespace moat::router {

std::string approval_key(std::string_view agent, std::string_view channel, std::string_view sender) {
  std::string k;
  k.append(agent).push_back('\0');
  k.append(channel).push_back('\0');
  k.append(sender);
  return k;
}

namespace {
Result<Statement> prep(Database& db, std::string_view sql) { return db.prepare(sql); }

// Runs a prepared statement to completion.
Status run(Statement& st, std::string_view what) {
  auto r = st.step();
  st.reset();
  if (!r) return wrap(r.error(), what);
  return {};
}
}  // namespace

Result<std::optional<int64_t>> EnvelopeRepo::insert(const Envelope& e, std::string_view state, std::string_view error) {
  if (!insert_) {
    auto st = prep(db_,
                   "INSERT INTO envelopes (channel, message_id, chat, sender, agent, state, error, body_json, received_ms) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (channel, message_id) DO NOTHING");
    if (!st) return std::unexpected(st.error());
    insert_.emplace(std::move(*st));
  }
  auto& st = *insert_;
  st.bind(1, e.channel).bind(2, e.message_id).bind(3, e.chat).bind(4, e.sender).bind(5, e.agent);
  st.bind(6, state).bind(7, error).bind(8, envelope_body_json(e)).bind(9, e.received_ms);
  if (auto s = run(st, "storing an inbound message"); !s) return std::unexpected(s.error());
  if (db_.changes() == 0) return std::optional<int64_t>();
  return std::optional<int64_t>(db_.last_insert_rowid());
}

Result<std::pair<int64_t, std::string>> EnvelopeRepo::find(std::string_view channel, std::string_view message_id) {
  auto st = prep(db_, "SELECT id, agent FROM envelopes WHERE channel = ?1 AND message_id = ?2");
  if (!st) return std::unexpected(st.error());
  st->bind(1, channel).bind(2, message_id);
  auto r = st->step();
  if (!r) return std::unexpected(r.error());
  if (!*r) return fail(ErrorKind::NotFound, "no message {} on channel {}", message_id, channel);
  return std::pair<int64_t, std::string>(st->column_int64(0), std::string(st->column_text(1)));
}

Status EnvelopeRepo::set_state(const std::vector<Envelope>& batch, std::string_view sql,
                               const std::function<void(Statement&)>& bind_rest) {
  auto st = prep(db_, sql);
  if (!st) return std::unexpected(st.error());
  for (const auto& e : batch) {
    st->bind(1, e.id);
    bind_rest(*st);
    if (auto s = run(*st, "updating a message's state"); !s) return s;
  }
  return {};
}

Status EnvelopeRepo::set_running(const std::vector<Envelope>& batch, int attempts) {
  return set_state(batch, "UPDATE envelopes SET state = 'running', attempts = ?2 WHERE id = ?1",
                   [&](Statement& s) { s.bind(2, attempts); });
}

Status EnvelopeRepo::set_answered(const std::vector<Envelope>& batch) {
  return set_state(batch, "UPDATE envelopes SET state = 'answered', error = '' WHERE id = ?1", [](Statement&) {});
}

Status EnvelopeRepo::set_retry(const std::vector<Envelope>& batch, int attempts, int64_t not_before_ms,
                               std::string_view error) {
  return set_state(batch,
                   "UPDATE envelopes SET state = 'queued', attempts = ?2, not_before_ms = ?3, error = ?4 WHERE id = ?1",
                   [&](Statement& s) { s.bind(2, attempts).bind(3, not_before_ms).bind(4, error); });
}

Status EnvelopeRepo::set_failed(const std::vector<Envelope>& batch, int attempts, std::string_view error) {
  return set_state(batch, "UPDATE envelopes SET state = 'failed', attempts = ?2, error = ?3 WHERE id = ?1",
                   [&](Statement& s) { s.bind(2, attempts).bind(3, error); });
}

namespace {
constexpr std::string_view kEnvelopeColumns =
    "id, channel, message_id, chat, sender, agent, state, attempts, not_before_ms, error, body_json, received_ms";

Result<EnvelopeStatus> read_row(Statement& st) {
  EnvelopeStatus s;
  auto& e = s.envelope;
  e.id = st.column_int64(0);
  e.channel = st.column_text(1);
  e.message_id = st.column_text(2);
  e.chat = st.column_text(3);
  e.sender = st.column_text(4);
  e.agent = st.column_text(5);
  s.state = st.column_text(6);
  s.attempts = static_cast<int>(st.column_int64(7));
  s.error = st.column_text(9);
  e.received_ms = st.column_int64(11);
  if (auto b = envelope_body_from_json(st.column_text(10), e); !b) return std::unexpected(b.error());
  return s;
}
}  // namespace

Result<std::vector<std::pair<QueuedEnvelope, int64_t>>> EnvelopeRepo::recover() {
  auto l = db_.lock();
  if (auto s = db_.exec("UPDATE envelopes SET state = 'queued' WHERE state = 'running'"); !s)
    return wrap(s.error(), "requeueing turns cut short");
  auto st = prep(db_, fmt::format("SELECT {} FROM envelopes WHERE state = 'queued' ORDER BY id", kEnvelopeColumns));
  if (!st) return std::unexpected(st.error());
  std::vector<std::pair<QueuedEnvelope, int64_t>> out;
  for (;;) {
    auto r = st->step();
    if (!r) return wrap(r.error(), "reading queued messages");
    if (!*r) break;
    auto row = read_row(*st);
    if (!row) return std::unexpected(row.error());
    out.emplace_back(QueuedEnvelope{std::move(row->envelope), row->attempts}, st->column_int64(8));
  }
  return out;
}

Result<std::vector<QueuedEnvelope>> EnvelopeRepo::release_held(std::string_view agent, std::string_view channel,
                                                               std::string_view sender) {
  auto l = db_.lock();
  auto st = prep(db_, fmt::format("SELECT {} FROM envelopes WHERE state = 'held' AND agent = ?1 AND channel = ?2 "
                                  "AND sender = ?3 ORDER BY id",
                                  kEnvelopeColumns));
  if (!st) return std::unexpected(st.error());
  st->bind(1, agent).bind(2, channel).bind(3, sender);
  std::vector<QueuedEnvelope> out;
  for (;;) {
    auto r = st->step();
    if (!r) return wrap(r.error(), "reading held messages");
    if (!*r) break;
    auto row = read_row(*st);
    if (!row) return std::unexpected(row.error());
    out.push_back(QueuedEnvelope{std::move(row->envelope), row->attempts});
  }
  st->reset();
  auto up = prep(db_, "UPDATE envelopes SET state = 'queued' WHERE id = ?1");
  if (!up) return std::unexpected(up.error());
  for (const auto& q : out) {
    up->bind(1, q.envelope.id);
    if (auto s = run(*up, "queueing a held message"); !s) return std::unexpected(s.error());
  }
  return out;
}

Result<std::vector<EnvelopeStatus>> EnvelopeRepo::list(std::string_view state, std::string_view agent, size_t limit) {
  auto l = db_.lock();
  auto st = prep(db_, fmt::format("SELECT {} FROM envelopes WHERE (?1 = '' OR state = ?1) AND (?2 = '' OR agent = ?2) "
                                  "ORDER BY id DESC LIMIT ?3",
                                  kEnvelopeColumns));
  if (!st) return std::unexpected(st.error());
  st->bind(1, state).bind(2, agent).bind(3, static_cast<int64_t>(limit == 0 ? 100 : limit));
  std::vector<EnvelopeStatus> out;
  for (;;) {
    auto r = st->step();
    if (!r) return wrap(r.error(), "listing messages");
    if (!*r) break;
    auto row = read_row(*st);
    if (!row) return std::unexpected(row.error());
    out.push_back(std::move(*row));
  }
  return out;
}

Result<std::optional<std::string>> EnvelopeRepo::open_code(std::string_view agent, std::string_view channel,
                                                           std::string_view sender) {
  auto st = prep(db_, "SELECT code FROM pairing_codes WHERE agent = ?1 AND channel = ?2 AND sender = ?3 AND used_at_ms = 0");
  if (!st) return std::unexpected(st.error());
  st->bind(1, agent).bind(2, channel).bind(3, sender);
  auto r = st->step();
  if (!r) return std::unexpected(r.error());
  if (!*r) return std::optional<std::string>();
  return std::optional<std::string>(std::string(st->column_text(0)));
}

Status EnvelopeRepo::insert_code(std::string_view code, std::string_view agent, std::string_view channel,
                                 std::string_view sender) {
  auto st = prep(db_, "INSERT INTO pairing_codes (code, agent, channel, sender, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!st) return std::unexpected(st.error());
  st->bind(1, code).bind(2, agent).bind(3, channel).bind(4, sender).bind(5, clock::now_ms());
  return run(*st, "storing a pairing code");
}

Result<std::optional<EnvelopeRepo::CodeRow>> EnvelopeRepo::code(std::string_view code) {
  auto st = prep(db_, "SELECT agent, channel, sender, used_at_ms FROM pairing_codes WHERE code = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, code);
  auto r = st->step();
  if (!r) return std::unexpected(r.error());
  if (!*r) return std::optional<CodeRow>();
  return std::optional<CodeRow>(CodeRow{std::string(st->column_text(0)), std::string(st->column_text(1)),
                                        std::string(st->column_text(2)), st->column_int64(3)});
}

Status EnvelopeRepo::use_code(std::string_view code, std::string_view actor, const CodeRow& row) {
  int64_t now = clock::now_ms();
  auto st = prep(db_, "UPDATE pairing_codes SET used_at_ms = ?2 WHERE code = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, code).bind(2, now);
  if (auto s = run(*st, "using a pairing code"); !s) return s;
  auto ap = prep(db_,
                 "INSERT INTO sender_approvals (agent, channel, sender, approved_at_ms, actor) VALUES (?1, ?2, ?3, ?4, ?5) "
                 "ON CONFLICT (agent, channel, sender) DO UPDATE SET approved_at_ms = ?4, actor = ?5");
  if (!ap) return std::unexpected(ap.error());
  ap->bind(1, row.agent).bind(2, row.channel).bind(3, row.sender).bind(4, now).bind(5, actor);
  return run(*ap, "approving a sender");
}

Result<std::vector<std::string>> EnvelopeRepo::approvals() {
  auto l = db_.lock();
  auto st = prep(db_, "SELECT agent, channel, sender FROM sender_approvals");
  if (!st) return std::unexpected(st.error());
  std::vector<std::string> out;
  for (;;) {
    auto r = st->step();
    if (!r) return wrap(r.error(), "reading sender approvals");
    if (!*r) break;
    out.push_back(approval_key(st->column_text(0), st->column_text(1), st->column_text(2)));
  }
  return out;
}

Result<int64_t> outbox_insert(Database& db, std::string_view channel, std::string_view chat, std::string_view agent,
                              std::string_view text, int64_t in_reply_to, bool is_error, std::string_view reply_to,
                              std::string_view edit_platform_id) {
  auto l = db.lock();
  auto st = db.prepare(
      "INSERT INTO outbox (channel, chat, agent, text, in_reply_to, is_error, created_ms, reply_to, edit_platform_id) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  if (!st) return std::unexpected(st.error());
  st->bind(1, channel).bind(2, chat).bind(3, agent).bind(4, text).bind(5, in_reply_to).bind(6, is_error ? 1 : 0);
  // A default string_view has no data pointer, which SQLite would store as NULL.
  st->bind(7, clock::now_ms()).bind(8, reply_to.empty() ? std::string_view("") : reply_to);
  st->bind(9, edit_platform_id.empty() ? std::string_view("") : edit_platform_id);
  if (auto s = run(*st, "queueing an outbound message"); !s) return std::unexpected(s.error());
  return db.last_insert_rowid();
}

Result<std::vector<OutboxRow>> outbox_pending(Database& db, int64_t after_id, size_t limit) {
  auto l = db.lock();
  auto st = db.prepare(
      "SELECT id, channel, chat, agent, text, in_reply_to, is_error, attempts, next_attempt_ms, reply_to, created_ms, "
      "parts_sent, edit_platform_id "
      "FROM outbox "
      "WHERE delivered_at_ms = 0 AND failed = '' AND id > ?1 ORDER BY id LIMIT ?2");
  if (!st) return std::unexpected(st.error());
  st->bind(1, after_id).bind(2, static_cast<int64_t>(limit));
  std::vector<OutboxRow> out;
  for (;;) {
    auto r = st->step();
    if (!r) return wrap(r.error(), "reading the outbox");
    if (!*r) break;
    OutboxRow row;
    auto& m = row.msg;
    m.id = st->column_int64(0);
    m.key = outbox_key(m.id);
    m.channel = st->column_text(1);
    m.chat = st->column_text(2);
    m.agent = st->column_text(3);
    m.text = st->column_text(4);
    m.in_reply_to = st->column_int64(5);
    m.is_error = st->column_int64(6) != 0;
    row.attempts = static_cast<int>(st->column_int64(7));
    row.next_attempt_ms = st->column_int64(8);
    m.reply_to = st->column_text(9);
    m.created_ms = st->column_int64(10);
    row.parts_sent = static_cast<size_t>(st->column_int64(11));
    m.edit_platform_id = st->column_text(12);
    out.push_back(std::move(row));
  }
  return out;
}

Status outbox_delivered(Database& db, const std::vector<OutboxDelivery>& rows) {
  if (rows.empty()) return {};
  auto st = db.prepare("UPDATE outbox SET delivered_at_ms = ?2, platform_id = ?3 WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  int64_t now = clock::now_ms();
  for (const auto& row : rows) {
    st->bind(1, row.id).bind(2, now).bind(3, row.platform_id);
    if (auto s = run(*st, "marking a message delivered"); !s) return s;
  }
  return {};
}

Status outbox_parts_sent(Database& db, int64_t id, size_t parts_sent, std::string_view platform_id) {
  auto l = db.lock();
  auto st = db.prepare("UPDATE outbox SET parts_sent = ?2, platform_id = ?3 WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, id).bind(2, static_cast<int64_t>(parts_sent)).bind(3, platform_id);
  return run(*st, "recording a sent part");
}

Result<std::string> outbox_platform_id(Database& db, int64_t id) {
  auto l = db.lock();
  auto st = db.prepare("SELECT platform_id FROM outbox WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, id);
  auto row = st->step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return fail(ErrorKind::NotFound, "no outbox message {}", id);
  return std::string(st->column_text(0));
}

Status outbox_retry_later(Database& db, int64_t id, int attempts, int64_t next_attempt_ms) {
  auto l = db.lock();
  auto st = db.prepare("UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, id).bind(2, attempts).bind(3, next_attempt_ms);
  return run(*st, "scheduling a delivery retry");
}

Status outbox_failed(Database& db, int64_t id, std::string_view why) {
  auto l = db.lock();
  auto st = db.prepare("UPDATE outbox SET failed = ?2 WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, id).bind(2, why.empty() ? std::string_view("undeliverable") : why);
  return run(*st, "marking a message undeliverable");
}

Result<int64_t> outbox_undelivered_count(Database& db) {
  return db.query_int64("SELECT count(*) FROM outbox WHERE delivered_at_ms = 0 AND failed = ''");
}

std::string_view preview_state_name(PreviewState s) {
  switch (s) {
    case PreviewState::Open: return "open";
    case PreviewState::Final: return "final";
    case PreviewState::Interrupted: return "interrupted";
  }
  return "open";
}

Result<int64_t> preview_insert(Database& db, std::string_view channel, std::string_view chat, std::string_view agent) {
  auto l = db.lock();
  auto st = db.prepare("INSERT INTO previews (channel, chat, agent, state, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!st) return std::unexpected(st.error());
  st->bind(1, channel).bind(2, chat).bind(3, agent).bind(4, preview_state_name(PreviewState::Open));
  st->bind(5, clock::now_ms());
  if (auto s = run(*st, "storing a reply preview"); !s) return std::unexpected(s.error());
  return db.last_insert_rowid();
}

Status preview_shown(Database& db, int64_t id, std::string_view platform_id, std::string_view text) {
  auto l = db.lock();
  auto st = db.prepare("UPDATE previews SET platform_id = ?2, text = ?3, updated_ms = ?4 WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, id).bind(2, platform_id).bind(3, text).bind(4, clock::now_ms());
  return run(*st, "recording a reply preview");
}

Status preview_set_state(Database& db, int64_t id, PreviewState state) {
  auto l = db.lock();
  auto st = db.prepare("UPDATE previews SET state = ?2, updated_ms = ?3 WHERE id = ?1");
  if (!st) return std::unexpected(st.error());
  st->bind(1, id).bind(2, preview_state_name(state)).bind(3, clock::now_ms());
  return run(*st, "closing a reply preview");
}

Result<std::vector<PreviewRow>> previews_open(Database& db) {
  auto l = db.lock();
  auto st = db.prepare(
      "SELECT id, channel, chat, agent, platform_id, text FROM previews WHERE state = 'open' ORDER BY id");
  if (!st) return std::unexpected(st.error());
  std::vector<PreviewRow> out;
  for (;;) {
    auto r = st->step();
    if (!r) return wrap(r.error(), "reading open reply previews");
    if (!*r) break;
    out.push_back(PreviewRow{st->column_int64(0), std::string(st->column_text(1)), std::string(st->column_text(2)),
                             std::string(st->column_text(3)), std::string(st->column_text(4)),
                             std::string(st->column_text(5))});
  }
  return out;
}

std::string outbox_key(int64_t id) { return fmt::format("o{}", id); }

void sort_channel_history(std::vector<ChannelMessage>& messages) {
  // By time. Within one millisecond a reply comes after the message it answers and before later ones;
  // unsolicited replies after every message of that millisecond; the rest keep the order given.
  auto order = [](const ChannelMessage& m) {
    bool user = m.role == "user";
    int64_t after = user ? m.envelope_id : m.in_reply_to != 0 ? m.in_reply_to : INT64_MAX;
    return std::tuple(m.at_ms, after, user ? 0 : 1);
  };
  std::stable_sort(messages.begin(), messages.end(),
                   [&](const ChannelMessage& a, const ChannelMessage& b) { return order(a) < order(b); });
}

Result<std::vector<ChannelMessage>> channel_history(Database& db, std::string_view channel, size_t inbound,
                                                    size_t replies) {
  // Only the newest kRecentRows rows of each table are looked at (a rowid range; `+channel` keeps
  // SQLite off the (channel, message_id) index, which would read and sort every row the channel ever
  // had): a start costs the same however much the store has kept.
  constexpr int64_t kRecentRows = 200'000;
  auto l = db.lock();
  std::vector<ChannelMessage> out;
  auto in = db.prepare(
      "SELECT message_id, agent, chat, body_json, received_ms, id FROM envelopes "
      "WHERE id > (SELECT coalesce(max(id), 0) FROM envelopes) - ?3 AND +channel = ?1 AND state != 'dropped' "
      "ORDER BY id DESC LIMIT ?2");
  if (!in) return std::unexpected(in.error());
  in->bind(1, channel).bind(2, static_cast<int64_t>(inbound)).bind(3, kRecentRows);
  for (;;) {  // LIMIT 0 reads nothing
    auto r = in->step();
    if (!r) return wrap(r.error(), "reading a channel's messages");
    if (!*r) break;
    Envelope e;
    if (auto b = envelope_body_from_json(in->column_text(3), e); !b) {
      // One unreadable row costs that message's line in the history, not the whole history.
      log::warn("router: message {} of channel {} is left out of its history: {}", in->column_int64(5), channel,
                b.error().message);
      continue;
    }
    out.push_back(ChannelMessage{.role = "user", .key = std::string(in->column_text(0)),
                                 .agent = std::string(in->column_text(1)), .chat = std::string(in->column_text(2)),
                                 .text = std::move(e.text), .envelope_id = in->column_int64(5),
                                 .at_ms = in->column_int64(4)});
  }
  std::reverse(out.begin(), out.end());  // oldest first within each kind, for the stable sort below
  size_t users = out.size();
  auto rows = db.prepare(
      "SELECT id, agent, chat, text, in_reply_to, is_error, created_ms FROM outbox "
      "WHERE id > (SELECT coalesce(max(id), 0) FROM outbox) - ?3 AND channel = ?1 AND delivered_at_ms != 0 "
      "ORDER BY id DESC LIMIT ?2");
  if (!rows) return std::unexpected(rows.error());
  rows->bind(1, channel).bind(2, static_cast<int64_t>(replies)).bind(3, kRecentRows);
  for (;;) {
    auto r = rows->step();
    if (!r) return wrap(r.error(), "reading a channel's replies");
    if (!*r) break;
    out.push_back(ChannelMessage{.role = "agent", .key = outbox_key(rows->column_int64(0)),
                                 .agent = std::string(rows->column_text(1)), .chat = std::string(rows->column_text(2)),
                                 .text = std::string(rows->column_text(3)), .in_reply_to = rows->column_int64(4),
                                 .is_error = rows->column_int64(5) != 0, .at_ms = rows->column_int64(6)});
  }
  std::reverse(out.begin() + static_cast<std::ptrdiff_t>(users), out.end());
  sort_channel_history(out);
  return out;
}

}  // namespace moat::router
