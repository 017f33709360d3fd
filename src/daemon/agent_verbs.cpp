#include "daemon/agent_verbs.h"

#include "agent/sandbox_workbench.h"
#include "base/ids.h"

namespace moat {

namespace {

using namespace std::chrono_literals;

std::string actor_of(const Json& args) { return args.value("actor", std::string("cli")); }

Json sandbox_state(SandboxManager& sandboxes, const std::string& name) {
  auto rec = sandboxes.get(name);
  if (!rec) return Json{{"state", "none"}};
  return Json{{"state", rec->state}, {"runtime", rec->runtime}, {"image", rec->image}};
}

Json usage_json(const agent::AgentUsage& u) {
  return Json{{"agent", u.agent},         {"turns", u.turns},
              {"model_calls", u.model_calls}, {"input_tokens", u.input_tokens},
              {"output_tokens", u.output_tokens}, {"tool_calls", u.tool_calls},
              {"cost_usd", u.cost_usd}};
}

// Relays one terminal message: live events become progress frames; the request ends when the turn
// that answers it has ended and its replies (as many as the router's turn_ended event announced)
// have been delivered.
Result<Json> chat_send(AgentVerbParts& p, const Json& a, api::Session& session) {
  std::string agent = a.at("agent").get<std::string>();
  std::string text = a.at("text").get<std::string>();
  std::string user = a.value("user", std::string("owner"));
  if (auto spec = p.agents.get(agent); !spec) return std::unexpected(spec.error());
  std::string chat = fmt::format("{}/{}", agent, user);
  auto sub = p.terminal.subscribe(chat);
  router::Envelope e;
  e.channel = "terminal";
  e.chat = chat;
  e.sender = user;
  e.sender_name = user;
  e.message_id = a.value("message_id", random_hex_id(12));
  e.text = std::move(text);
  e.direct = true;
  e.agent = agent;
  auto acc = p.router.accept(std::move(e));
  if (!acc) return std::unexpected(acc.error());
  if (acc->outcome != router::Acceptance::Outcome::Queued)
    return Json{{"outcome", router::outcome_name(acc->outcome)}, {"reason", acc->reason}, {"replies", Json::array()}};
  const int64_t id = acc->envelope_id;
  session.progress(Json{{"event", "queued"}, {"envelope_id", id}});
  Json replies = Json::array();
  int64_t answer_id = 0;  // last_id of the turn that answered this message
  int64_t expected = -1;  // replies that turn queued; -1 until it ended
  std::string outcome = "answered";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
  while (std::chrono::steady_clock::now() < deadline &&
         (expected < 0 || static_cast<int64_t>(replies.size()) < expected)) {
    auto item = sub->next(1000ms);
    if (!item) continue;
    if (auto* ev = std::get_if<router::LiveEvent>(&*item)) {
      if (ev->kind == "turn_ended") {
        int64_t first = ev->data.value("first_id", int64_t{0}), last = ev->data.value("last_id", int64_t{0});
        if (id < first || id > last) continue;  // another message's turn
        if (ev->data.value("outcome", std::string()) != "retrying") {
          answer_id = last;
          expected = ev->data.value("replies", int64_t{0});
          outcome = ev->data.value("outcome", std::string("answered"));
        }
      }
      session.progress(Json{{"event", ev->kind}, {"data", ev->data}});
      continue;
    }
    auto& out = std::get<router::Outbound>(*item);
    // Only this message's answer: a turn answers its batch with in_reply_to = the batch's last id.
    if (out.in_reply_to < id || (answer_id != 0 && out.in_reply_to != answer_id)) continue;
    replies.push_back(Json{{"text", out.text}, {"is_error", out.is_error}, {"key", out.key}});
    session.progress(Json{{"event", "reply"}, {"text", out.text}, {"is_error", out.is_error}});
  }
  return Json{{"outcome", outcome}, {"envelope_id", id}, {"replies", replies}};
}

}  // namespace

void register_agent_verbs(api::Server& s, AgentVerbParts parts) {
  auto p = std::make_shared<AgentVerbParts>(parts);

  s.handle("agent.create", [p](const Json& a, api::Session&) -> Result<Json> {
    Json fields = a;
    fields.erase("actor");
    auto spec = agent::agent_spec_from_json(fields);
    if (!spec) return std::unexpected(spec.error());
    auto made = p->agents.create(std::move(*spec));
    if (!made) return std::unexpected(made.error());
    (void)p->audit.append("agent.create", actor_of(a), made->name, agent::agent_spec_to_json(*made));
    return agent::agent_spec_to_json(*made);
  });
  s.handle("agent.ls", [p](const Json&, api::Session&) -> Result<Json> {
    Json out = Json::array();
    for (auto& [name, spec] : *p->agents.snapshot()) {
      Json j = agent::agent_spec_to_json(spec);
      j["sandbox"] = sandbox_state(p->sandboxes, name);
      out.push_back(std::move(j));
    }
    return out;
  });
  s.handle("agent.show", [p](const Json& a, api::Session&) -> Result<Json> {
    auto spec = p->agents.get(a.at("name").get<std::string>());
    if (!spec) return std::unexpected(spec.error());
    Json j = agent::agent_spec_to_json(*spec);
    j["sandbox"] = sandbox_state(p->sandboxes, spec->name);
    auto usage = p->runtime.usage(spec->name);
    j["usage"] = usage && !usage->empty() ? usage_json(usage->front()) : Json::object();
    return j;
  });
  s.handle("agent.edit", [p](const Json& a, api::Session&) -> Result<Json> {
    std::string name = a.at("name").get<std::string>();
    auto before = p->agents.get(name);
    auto spec = p->agents.edit(name, a.value("changes", Json::object()));
    if (!spec) return std::unexpected(spec.error());
    (void)p->audit.append("agent.edit", actor_of(a), name, a.value("changes", Json::object()));
    Json out = agent::agent_spec_to_json(*spec);
    // A sandbox is a persistent machine: an edit does not rebuild it behind the owner's back (that
    // would lose its files). Say so, and how to get one made with the new settings.
    bool sandbox_settings_changed = before && agent::sandbox_request_for(*before) != agent::sandbox_request_for(*spec);
    if (sandbox_settings_changed && p->sandboxes.get(name)) {
      out["sandbox_note"] = fmt::format(
          "agent '{}' already has a sandbox; it keeps the image, runtime and limits it was made with (and its files). "
          "To have the next turn make one with the new settings, remove it: 'moat sandbox rm -f {}' (its /workspace, "
          "MEMORY.md included, is lost)",
          name, name);
    }
    return out;
  });
  s.handle("agent.rm", [p](const Json& a, api::Session&) -> Result<Json> {
    std::string name = a.at("name").get<std::string>();
    if (auto st = p->agents.remove(name); !st) return std::unexpected(st.error());
    bool sandbox_removed = false;
    if (!a.value("keep_sandbox", false) && p->sandboxes.get(name)) {
      if (auto st = p->sandboxes.remove(name, true, actor_of(a)); !st)
        return fail(st.error().kind, "agent '{}' removed, but its sandbox was not: {}; remove it with 'moat sandbox rm -f {}'",
                    name, st.error().message, name);
      sandbox_removed = true;
    }
    (void)p->audit.append("agent.rm", actor_of(a), name, Json{{"sandbox_removed", sandbox_removed}});
    return Json{{"name", name}, {"removed", true}, {"sandbox_removed", sandbox_removed}};
  });
  s.handle("agent.usage", [p](const Json& a, api::Session&) -> Result<Json> {
    std::string name = a.value("name", std::string());
    if (!name.empty() && !p->agents.exists(name))
      return fail(ErrorKind::NotFound, "no agent named '{}'; see 'moat agent ls'", name);
    auto usage = p->runtime.usage(name);
    if (!usage) return std::unexpected(usage.error());
    Json out = Json::array();
    for (auto& u : *usage) out.push_back(usage_json(u));
    return out;
  });
  s.handle("agent.webhook", [p](const Json& a, api::Session&) -> Result<Json> {
    std::string name = a.at("name").get<std::string>();
    if (!p->agents.exists(name)) return fail(ErrorKind::NotFound, "no agent named '{}'; see 'moat agent ls'", name);
    return p->webhook_info(name);
  });
  s.handle("approve", [p](const Json& a, api::Session&) -> Result<Json> {
    return p->router.approve(a.at("code").get<std::string>(), actor_of(a));
  });
  s.handle("messages", [p](const Json& a, api::Session&) -> Result<Json> {
    auto list = p->router.messages(a.value("state", std::string()), a.value("agent", std::string()),
                                   a.value("limit", size_t{100}));
    if (!list) return std::unexpected(list.error());
    Json out = Json::array();
    for (auto& m : *list) {
      Json j = router::envelope_to_json(m.envelope);
      j["state"] = m.state;
      j["attempts"] = m.attempts;
      j["error"] = m.error;
      out.push_back(std::move(j));
    }
    return out;
  });
  s.handle("chat.send", [p](const Json& a, api::Session& session) { return chat_send(*p, a, session); });
}

}  // namespace moat
