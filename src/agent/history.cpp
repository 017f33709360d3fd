#include "agent/history.h"

#include "store/clock.h"

namespace moat::agent {

namespace {

Json block_to_json(const ContentBlock& b) {
  switch (b.kind) {
    case ContentBlock::Kind::Text:
      return {{"type", "text"}, {"text", b.text}};
    case ContentBlock::Kind::ToolUse:
      return {{"type", "tool_use"}, {"id", b.id}, {"name", b.name}, {"input", b.input.is_null() ? Json::object() : b.input}};
    case ContentBlock::Kind::ToolResult:
      return {{"type", "tool_result"}, {"tool_use_id", b.id}, {"content", b.text}, {"is_error", b.is_error}};
  }
  return Json::object();
}

}  // namespace

Json message_to_json(const Message& m) {
  Json content = Json::array();
  for (const auto& b : m.content) content.push_back(block_to_json(b));
  return {{"role", m.role}, {"content", std::move(content)}};
}

Result<Message> message_from_json(const Json& j) {
  if (!j.is_object() || !j.contains("role") || !j.contains("content") || !j["content"].is_array())
    return fail(ErrorKind::Internal, "a stored chat message is malformed");
  Message m;
  m.role = j["role"].get<std::string>();
  for (const auto& b : j["content"]) {
    ContentBlock c;
    auto type = b.value("type", "");
    if (type == "text") {
      c.kind = ContentBlock::Kind::Text;
      c.text = b.value("text", "");
    } else if (type == "tool_use") {
      c.kind = ContentBlock::Kind::ToolUse;
      c.id = b.value("id", "");
      c.name = b.value("name", "");
      c.input = b.contains("input") ? b["input"] : Json::object();
    } else if (type == "tool_result") {
      c.kind = ContentBlock::Kind::ToolResult;
      c.id = b.value("tool_use_id", "");
      c.text = b.value("content", "");
      c.is_error = b.value("is_error", false);
    } else {
      return fail(ErrorKind::Internal, "a stored chat message has a block of unknown type '{}'", type);
    }
    m.content.push_back(std::move(c));
  }
  return m;
}

uint64_t estimate_tokens(const Message& m) { return message_to_json(m).dump().size() / 4 + 1; }

uint64_t Conversation::tokens() const {
  uint64_t t = summary.size() / 4;
  for (const auto& m : messages) t += m.tokens;
  return t;
}

ChatHistory::ChatHistory(Database& db, std::string agent, std::string channel, std::string chat)
    : db_(db), agent_(std::move(agent)), channel_(std::move(channel)), chat_(std::move(chat)) {}

Result<Conversation> ChatHistory::load() {
  auto l = db_.lock();  // summary and messages from one consistent moment
  Conversation c;
  auto s = db_.prepare("SELECT through_seq, summary FROM chat_summaries WHERE agent = ?1 AND channel = ?2 AND chat = ?3");
  if (!s) return std::unexpected(s.error());
  s->bind(1, agent_).bind(2, channel_).bind(3, chat_);
  auto row = s->step();
  if (!row) return std::unexpected(row.error());
  if (*row) {
    c.through_seq = s->column_int64(0);
    c.summary = std::string(s->column_text(1));
  }
  auto q = db_.prepare(
      "SELECT seq, content_json, tokens FROM chat_history WHERE agent = ?1 AND channel = ?2 AND chat = ?3 AND seq > ?4 "
      "ORDER BY seq");
  if (!q) return std::unexpected(q.error());
  q->bind(1, agent_).bind(2, channel_).bind(3, chat_).bind(4, c.through_seq);
  for (;;) {
    auto r = q->step();
    if (!r) return std::unexpected(r.error());
    if (!*r) break;
    auto j = Json::parse(std::string(q->column_text(1)), nullptr, false);
    auto m = message_from_json(j);
    if (!m) return wrap(m.error(), fmt::format("chat history of agent '{}', seq {}", agent_, q->column_int64(0)));
    c.messages.push_back({q->column_int64(0), std::move(*m), static_cast<uint64_t>(q->column_int64(2))});
  }
  return c;
}

Status ChatHistory::append(const std::vector<Message>& messages) {
  if (messages.empty()) return {};
  auto tx = Transaction::begin(db_);
  if (!tx) return std::unexpected(tx.error());
  auto last = db_.prepare("SELECT COALESCE(MAX(seq), 0) FROM chat_history WHERE agent = ?1 AND channel = ?2 AND chat = ?3");
  if (!last) return std::unexpected(last.error());
  last->bind(1, agent_).bind(2, channel_).bind(3, chat_);
  auto row = last->step();
  if (!row) return std::unexpected(row.error());
  int64_t seq = *row ? last->column_int64(0) : 0;
  auto ins = db_.prepare(
      "INSERT INTO chat_history (agent, channel, chat, seq, role, content_json, tokens, created_ms) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  if (!ins) return std::unexpected(ins.error());
  auto now = clock::now_ms();
  for (const auto& m : messages) {
    ins->reset();
    ins->bind(1, agent_).bind(2, channel_).bind(3, chat_).bind(4, ++seq).bind(5, m.role);
    ins->bind(6, message_to_json(m).dump(-1, ' ', false, Json::error_handler_t::replace));
    ins->bind(7, estimate_tokens(m)).bind(8, now);
    if (auto r = ins->step(); !r) return std::unexpected(r.error());
  }
  return tx->commit();
}

Status ChatHistory::set_summary(const std::string& summary, int64_t through_seq) {
  auto s = db_.prepare(
      "INSERT INTO chat_summaries (agent, channel, chat, through_seq, summary, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT (agent, channel, chat) DO UPDATE SET through_seq = excluded.through_seq, summary = excluded.summary, "
      "created_ms = excluded.created_ms");
  if (!s) return std::unexpected(s.error());
  s->bind(1, agent_).bind(2, channel_).bind(3, chat_).bind(4, through_seq).bind(5, summary).bind(6, clock::now_ms());
  auto r = s->step();
  if (!r) return std::unexpected(r.error());
  return {};
}

std::vector<Message> normalise(std::vector<Message> messages) {
  std::vector<Message> out;
  for (auto& m : messages) {
    if (out.empty() && m.role != "user") continue;
    if (!out.empty() && out.back().role == m.role) {
      for (auto& b : m.content) out.back().content.push_back(std::move(b));
    } else {
      out.push_back(std::move(m));
    }
  }
  return out;
}

std::string transcript(const std::vector<Message>& messages) {
  std::string out;
  for (const auto& m : messages) {
    for (const auto& b : m.content) {
      switch (b.kind) {
        case ContentBlock::Kind::Text:
          out += fmt::format("[{}]\n{}\n\n", m.role, b.text);
          break;
        case ContentBlock::Kind::ToolUse:
          out += fmt::format("[{} called {}] {}\n\n", m.role, b.name, b.input.dump(-1, ' ', false, Json::error_handler_t::replace));
          break;
        case ContentBlock::Kind::ToolResult:
          out += fmt::format("[tool result{}]\n{}\n\n", b.is_error ? " (error)" : "", b.text);
          break;
      }
    }
  }
  return out;
}

}  // namespace moat::agent
