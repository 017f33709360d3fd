#include "agent/agent_runtime.h"

#include "agent/command_agent.h"
#include "agent/history.h"
#include "agent/prompt.h"
#include "agent/tools/toolbox.h"
#include "agent/usage.h"
#include "audit/event.h"
#include "base/log.h"

namespace moat::agent {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr size_t kAuditInputCap = 4096;
constexpr size_t kLiveOutputCap = 16 * 1024;
constexpr size_t kMemoryReadMax = 1 << 20;

// The model's input as the audit log keeps it: the JSON itself when small, else its first 4 KB as
// text (a model can send megabytes in a write_file call; the audit log is not the place for them).
Json audit_input(const Json& input) {
  auto text = input.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() <= kAuditInputCap) return input;
  size_t keep = kAuditInputCap;
  while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  return fmt::format("{}... [{} bytes in all]", text.substr(0, keep), text.size());
}

std::string text_of(const std::vector<ContentBlock>& blocks) {
  std::string out;
  for (const auto& b : blocks)
    if (b.kind == ContentBlock::Kind::Text) out += b.text;
  return out;
}

bool is_fresh_user_message(const Message& m) {
  if (m.role != "user") return false;
  for (const auto& b : m.content)
    if (b.kind == ContentBlock::Kind::ToolResult) return false;
  return true;
}

// Where to cut the conversation for a summary: at or after the middle, at a message a person sent
// (never between a tool call and its result, which a provider would refuse). 0 = nowhere.
size_t compaction_cut(const std::vector<StoredMessage>& msgs) {
  for (size_t i = std::max<size_t>(msgs.size() / 2, 1); i < msgs.size(); ++i)
    if (is_fresh_user_message(msgs[i].message)) return i;
  for (size_t i = msgs.size() / 2; i >= 1; --i)
    if (is_fresh_user_message(msgs[i].message)) return i;
  return msgs.size();  // one long exchange: summarise all of it
}

// `model_silent`: the limit cut a model call that had produced nothing (a provider that hangs), which
// the sender should hear rather than guess.
std::string time_limit_note(std::chrono::milliseconds wall, bool model_silent = false) {
  auto limit = wall.count() % 1000 == 0 ? fmt::format("{} s", wall.count() / 1000) : fmt::format("{} ms", wall.count());
  if (model_silent)
    return fmt::format("(I stopped here: the model had not answered when this turn reached its time limit of {}.)", limit);
  return fmt::format("(I stopped here: this turn reached its time limit of {}.)", limit);
}

constexpr const char* kSummarySystem =
    "You condense conversations between a person and an AI assistant so the assistant can continue them. "
    "Keep facts, names, decisions, preferences, open tasks and where work was left (files, commands). "
    "Write plain prose or short bullets, at most about 300 words. No preamble.";

}  // namespace

struct AgentRuntime::Impl {
  Database& db;
  AuditLog& audit;
  RuntimeHooks hooks;
  ToolBox tools = ToolBox::standard();

  // Everything one built-in-loop turn accumulates.
  struct TurnState {
    const AgentSpec& spec;
    const router::Turn& turn;
    const router::LiveSink& live;
    TurnUsage usage;
    std::string actor;
    SteadyClock::time_point deadline;

    void emit(const std::string& kind, const Json& data) const {
      if (live) live(kind, data);
    }
  };

  Result<router::TurnResult> run_loop(TurnState& st);
  Result<router::TurnResult> run_command(const AgentSpec& spec, const router::Turn& turn);
  Status compact(TurnState& st, Provider& provider, ChatHistory& hist, Conversation& conv, uint64_t extra_tokens);
  Result<ToolOutput> run_tool(TurnState& st, const ContentBlock& call, ToolContext& ctx);
  Result<std::string> read_memory(Workbench& bench);
  // Copies the turn's staged attachments into the sandbox (through moat-init); what each became.
  PlacedAttachments place_attachments(const router::Turn& turn, Workbench& bench);
  Status audit_append(std::string kind, const std::string& actor, std::string subject, Json data) {
    auto r = audit.append(std::move(kind), actor, std::move(subject), std::move(data));
    if (!r) return wrap(r.error(), "recording an agent action in the audit log");
    return {};
  }
};

PlacedAttachments AgentRuntime::Impl::place_attachments(const router::Turn& turn, Workbench& bench) {
  PlacedAttachments placed;
  for (const auto& e : turn.envelopes)
    for (const auto& a : e.attachments) {
      if (a.staged.empty() || placed.contains(a.staged)) continue;
      PlacedAttachment& p = placed[a.staged];
      if (!hooks.read_attachment) {
        p.unavailable = "this moatd does not stage attachments";
        continue;
      }
      auto data = hooks.read_attachment(a.staged);
      if (!data) {
        p.unavailable = data.error().message;
        continue;
      }
      // The staged file's own name is unique ("<random>-<safe name>") and safe as a path component.
      std::string path = fmt::format("{}/{}", kAttachmentDir, a.staged.substr(a.staged.find('/') + 1));
      if (auto s = bench.write_file(path, *data); !s) {
        p.unavailable = fmt::format("copying it into the sandbox failed: {}", s.error().message);
        continue;
      }
      p.path = std::move(path);
    }
  return placed;
}

Result<std::string> AgentRuntime::Impl::read_memory(Workbench& bench) {
  auto m = bench.read_file(kMemoryFile, kMemoryReadMax);
  if (m) return std::move(*m);
  switch (m.error().kind) {
    case ErrorKind::NotFound:
      return std::string();
    case ErrorKind::ResourceLimit:
      return std::string("[MEMORY.md is larger than 1 MiB and was not loaded; condense it]");
    case ErrorKind::InvalidInput:
      return fmt::format("[MEMORY.md could not be read: {}]", m.error().message);
    default:
      return wrap(m.error(), "reading the agent's MEMORY.md");
  }
}

Status AgentRuntime::Impl::compact(TurnState& st, Provider& provider, ChatHistory& hist, Conversation& conv,
                                   uint64_t extra_tokens) {
  if (conv.tokens() + extra_tokens <= st.spec.limits.context_budget_tokens || conv.messages.size() < 2) return {};
  size_t cut = compaction_cut(conv.messages);
  std::vector<Message> old;
  for (size_t i = 0; i < cut; ++i) old.push_back(conv.messages[i].message);
  std::string ask;
  if (!conv.summary.empty()) ask += "Summary of the conversation before this part:\n" + conv.summary + "\n\n";
  ask += "Conversation:\n" + transcript(old) + "\nSummarise the conversation above.";
  ModelRequest req;
  req.model = st.spec.model.model;
  req.system = kSummarySystem;
  req.messages.push_back({"user", {ContentBlock::text_block(std::move(ask))}});
  req.max_tokens = std::min(st.spec.model.max_tokens, 2048);
  auto resp = provider.complete(req, {});
  if (!resp) return wrap(resp.error(), fmt::format("summarising the older conversation of agent '{}'", st.spec.name));
  ++st.usage.model_calls;
  st.usage.input_tokens += resp->usage.input_tokens;
  st.usage.output_tokens += resp->usage.output_tokens;
  auto summary = text_of(resp->content);
  if (summary.empty()) {
    log::warn("agent {}: the model returned an empty summary; keeping the full history", st.spec.name);
    return {};
  }
  int64_t through = conv.messages[cut - 1].seq;
  if (auto s = hist.set_summary(summary, through); !s) return s;
  conv.summary = std::move(summary);
  conv.through_seq = through;
  conv.messages.erase(conv.messages.begin(), conv.messages.begin() + static_cast<ptrdiff_t>(cut));
  return {};
}

Result<ToolOutput> AgentRuntime::Impl::run_tool(TurnState& st, const ContentBlock& call, ToolContext& ctx) {
  Json input = call.input.is_null() ? Json::object() : call.input;
  st.emit("tool_call", Json{{"name", call.name}, {"input", input}});
  // An action that cannot be recorded is not taken.
  if (auto s = audit_append("tool.call", st.actor, call.name,
                            Json{{"id", call.id}, {"input", audit_input(input)}, {"channel", st.turn.channel}, {"chat", st.turn.chat}});
      !s)
    return std::unexpected(s.error());
  auto t0 = SteadyClock::now();
  auto out = tools.call(call.name, input, ctx);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count();
  ++st.usage.tool_calls;
  Json data{{"id", call.id}, {"duration_ms", ms}};
  if (out) {
    data["is_error"] = out->is_error;
    data["bytes"] = out->text.size();
  } else {
    data["is_error"] = true;
    data["bytes"] = 0;
    data["failed"] = out.error().message;
  }
  if (auto s = audit_append("tool.result", st.actor, call.name, std::move(data)); !s) return std::unexpected(s.error());
  if (!out) return out;
  std::string shown = out->text.size() > kLiveOutputCap ? out->text.substr(0, kLiveOutputCap) + "\n[...]" : out->text;
  st.emit("tool_result", Json{{"name", call.name}, {"output", std::move(shown)}, {"is_error", out->is_error}});
  return out;
}

Result<router::TurnResult> AgentRuntime::Impl::run_loop(TurnState& st) {
  const auto& spec = st.spec;
  if (!hooks.workbench || !hooks.provider) return fail(ErrorKind::Internal, "the agent runtime has no workbench or provider hook");
  auto bench = hooks.workbench(spec);
  if (!bench) return wrap(bench.error(), fmt::format("preparing the sandbox of agent '{}'", spec.name));
  auto provider = hooks.provider(spec);
  if (!provider) return wrap(provider.error(), fmt::format("preparing the model provider of agent '{}'", spec.name));
  auto memory = read_memory(**bench);
  if (!memory) return std::unexpected(memory.error());

  ChatHistory hist(db, spec.name, st.turn.channel, st.turn.chat);
  auto conv = hist.load();
  if (!conv) return wrap(conv.error(), "loading the chat history");
  Message incoming{"user", {ContentBlock::text_block(envelopes_text(st.turn.envelopes, place_attachments(st.turn, **bench)))}};
  uint64_t extra = estimate_tokens(incoming) + (spec.system_prompt.size() + memory->size()) / 4;
  if (auto s = compact(st, **provider, hist, *conv, extra); !s) return std::unexpected(s.error());

  std::string system = build_system_prompt(spec, *memory, conv->summary);
  std::vector<Message> prior;
  for (auto& m : conv->messages) prior.push_back(std::move(m.message));
  std::vector<Message> fresh{std::move(incoming)};

  router::TurnResult result;
  ToolContext ctx{spec, st.turn, **bench, result};
  std::string final_text, last_text, note;
  const auto& lim = spec.limits;
  for (;;) {
    if (st.usage.model_calls >= static_cast<uint64_t>(lim.max_model_calls)) {
      note = fmt::format("(I stopped here: this turn reached its limit of {} model calls.)", lim.max_model_calls);
      break;
    }
    if (SteadyClock::now() >= st.deadline) {
      note = time_limit_note(lim.max_wall);
      break;
    }
    if (st.usage.input_tokens + st.usage.output_tokens >= lim.max_tokens) {
      note = fmt::format("(I stopped here: this turn reached its limit of {} tokens.)", lim.max_tokens);
      break;
    }
    ModelRequest req;
    req.model = spec.model.model;
    req.system = system;
    req.messages = prior;
    req.messages.insert(req.messages.end(), fresh.begin(), fresh.end());
    req.messages = normalise(std::move(req.messages));
    req.tools = tools.specs();
    req.max_tokens = spec.model.max_tokens;
    StreamCallbacks cb;
    cb.cancelled = [&] { return SteadyClock::now() >= st.deadline; };
    bool model_spoke = false;
    cb.on_text = [&](std::string_view d) {
      model_spoke = true;
      st.emit("text", Json{{"text", std::string(d)}});
    };
    auto resp = provider.value()->complete(req, cb);
    if (!resp && SteadyClock::now() >= st.deadline) {
      // We cancelled the call ourselves at the wall-clock limit: that is a limit, not a failure.
      note = time_limit_note(lim.max_wall, !model_spoke);
      break;
    }
    if (!resp) return wrap(resp.error(), fmt::format("calling the model for agent '{}'", spec.name));
    ++st.usage.model_calls;
    st.usage.input_tokens += resp->usage.input_tokens;
    st.usage.output_tokens += resp->usage.output_tokens;

    std::vector<const ContentBlock*> calls;
    for (const auto& b : resp->content)
      if (b.kind == ContentBlock::Kind::ToolUse) calls.push_back(&b);
    last_text = text_of(resp->content);
    if (!resp->content.empty()) fresh.push_back({"assistant", resp->content});
    if (calls.empty()) {
      final_text = last_text;
      if (resp->stop_reason == "max_tokens") note = "(My reply was cut off: it reached the model's output limit.)";
      break;
    }
    Message results{"user", {}};
    for (const auto* call : calls) {
      auto out = run_tool(st, *call, ctx);
      if (!out) return std::unexpected(out.error());
      ContentBlock r;
      r.kind = ContentBlock::Kind::ToolResult;
      r.id = call->id;
      r.text = std::move(out->text);
      r.is_error = out->is_error;
      results.content.push_back(std::move(r));
    }
    fresh.push_back(std::move(results));
  }
  if (final_text.empty() && !note.empty()) final_text = last_text;
  if (!note.empty()) {
    final_text += (final_text.empty() ? "" : "\n\n") + note;
    // Keep the note in the history too, so the next turn knows this one was cut short.
    fresh.push_back({"assistant", {ContentBlock::text_block(note)}});
  }
  if (!final_text.empty()) result.replies.push_back(final_text);

  if (auto s = hist.append(fresh); !s) return wrap(s.error(), "saving the chat history");
  if (auto s = record_turn_usage(db, spec.name, spec.model.model, st.usage); !s)
    log::warn("agent {}: recording usage: {}", spec.name, s.error().message);
  return result;
}

Result<router::TurnResult> AgentRuntime::Impl::run_command(const AgentSpec& spec, const router::Turn& turn) {
  if (!hooks.workbench) return fail(ErrorKind::Internal, "the agent runtime has no workbench hook");
  auto bench = hooks.workbench(spec);
  if (!bench) return wrap(bench.error(), fmt::format("preparing the sandbox of agent '{}'", spec.name));
  ChatHistory hist(db, spec.name, turn.channel, turn.chat);
  auto conv = hist.load();
  if (!conv) return wrap(conv.error(), "loading the chat history");
  std::vector<Message> prior;
  for (auto& m : conv->messages) prior.push_back(std::move(m.message));
  auto incoming = envelopes_text(turn.envelopes, place_attachments(turn, **bench));
  auto out = run_command_agent(spec, turn, **bench, hooks.command_env, conv->summary, prior, incoming);
  if (!out) return std::unexpected(out.error());
  router::TurnResult result;
  std::vector<Message> fresh{{"user", {ContentBlock::text_block(incoming)}}};
  if (!out->reply.empty()) {
    result.replies.push_back(out->reply);
    fresh.push_back({"assistant", {ContentBlock::text_block(out->reply)}});
  }
  if (auto s = hist.append(fresh); !s) return wrap(s.error(), "saving the chat history");
  if (auto s = record_turn_usage(db, spec.name, "", {}); !s)
    log::warn("agent {}: recording usage: {}", spec.name, s.error().message);
  return result;
}

AgentRuntime::AgentRuntime(Database& db, AuditLog& audit, RuntimeHooks hooks)
    : impl_(std::make_unique<Impl>(Impl{db, audit, std::move(hooks)})) {}

AgentRuntime::~AgentRuntime() = default;

Result<router::TurnResult> AgentRuntime::run_turn(const AgentSpec& spec, const router::Turn& turn,
                                                  const router::LiveSink& live) {
  if (!spec.command.empty()) return impl_->run_command(spec, turn);
  if (spec.model.provider == "none") return router::TurnResult{{no_provider_reply(spec)}, {}};
  Impl::TurnState st{spec, turn, live, {}, "agent:" + spec.name, SteadyClock::now() + spec.limits.max_wall};
  return impl_->run_loop(st);
}

Result<std::vector<AgentUsage>> AgentRuntime::usage(std::string_view agent_or_empty) const {
  return read_usage(impl_->db, agent_or_empty);
}

}  // namespace moat::agent
