#include "channels/web/web_chat.h"

#include <algorithm>
#include <chrono>

#include "base/ids.h"
#include "base/log.h"
#include "channels/web/chat_page.h"
#include "net/url.h"

namespace moat::channels {

namespace {

constexpr std::string_view kCookie = "moat_session";
constexpr std::string_view kChatMarker = "/web-";
// No inline script or style anywhere: the page loads /chat.js and /chat.css from itself.
constexpr std::string_view kCsp =
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

bool valid_session(std::string_view s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool valid_client_id(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// The key of the web user's own message: the page's client id, which is the tail of its message id
// ("<session>:<client_id>").
std::string user_key(std::string_view client_id) { return fmt::format("u:{}", client_id); }

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

net::ServerResponse secured(net::ServerResponse r) {
  r.headers.emplace_back("Content-Security-Policy", std::string(kCsp));
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

// Tool output can be huge (a file dump); the page only shows a collapsed preview.
Json trim_live_data(const std::string& kind, Json data) {
  constexpr size_t kMax = 4000;
  auto trim = [&](const char* field) {
    if (!data.is_object() || !data.contains(field)) return;
    auto& v = data[field];
    std::string s = v.is_string() ? v.get<std::string>() : v.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (s.size() > kMax) v = s.substr(0, kMax) + "… (truncated)";
  };
  if (kind == "tool_result") trim("output");
  if (kind == "tool_call") trim("input");
  return data;
}

}  // namespace

WebChat::WebChat(AcceptFn accept, AgentListFn agents, WebChatOptions opts)
    : accept_(std::move(accept)), agents_(std::move(agents)), opts_(std::move(opts)), store_(opts_.history_per_chat) {}

WebChat::~WebChat() {
  std::lock_guard lock(mu_);
  for (auto& [_, list] : streams_) {
    for (auto& s : list) s->close();
  }
}

std::string WebChat::chat_id(std::string_view agent, std::string_view session) {
  return fmt::format("{}{}{}", agent, kChatMarker, session);
}

std::string WebChat::session_of_chat(std::string_view chat) {
  size_t pos = chat.rfind(kChatMarker);
  if (pos == std::string_view::npos || pos == 0) return {};
  std::string_view s = chat.substr(pos + kChatMarker.size());
  return valid_session(s) ? std::string(s) : std::string{};
}

void WebChat::register_routes(net::HttpServer& server) {
  server.add_route("/", [this](const net::ServerRequest& req) { return handle(req); });
}

bool WebChat::host_allowed(const net::ServerRequest& req) const {
  if (opts_.allowed_hosts.empty()) return true;
  auto host = req.header("host");
  if (!host) return false;
  // The name as the one URL parser reads it: lower-case, no port, no brackets, no trailing dot.
  auto named = net::parse_authority(*host, 80);
  return named && std::find(opts_.allowed_hosts.begin(), opts_.allowed_hosts.end(), named->host) != opts_.allowed_hosts.end();
}

net::ServerResponse WebChat::handle(const net::ServerRequest& req) {
  if (!host_allowed(req)) {
    return net::ServerResponse::error(421, "this host name is not served here (open the chat via 127.0.0.1 or localhost)");
  }
  const std::string& path = req.path;
  if (path == "/" || path == "/index.html") {
    if (req.method != "GET" && req.method != "HEAD") return secured(net::ServerResponse::error(405, "use GET"));
    return page(req);
  }
  if (path == "/chat.js") return secured(net::ServerResponse::text(200, "text/javascript; charset=utf-8", std::string(chat_script())));
  if (path == "/favicon.ico") return secured(net::ServerResponse::text(204, "image/x-icon", ""));  // none; no 404 noise
  if (path == "/chat.css") return secured(net::ServerResponse::text(200, "text/css; charset=utf-8", std::string(chat_style())));
  if (!path.starts_with("/api/")) return secured(net::ServerResponse::error(404, fmt::format("no such page: {}", path)));

  auto cookie = req.cookie(kCookie);
  if (!cookie || !valid_session(*cookie)) {
    return secured(net::ServerResponse::error(401, "no chat session: open the chat page first (cookies must be enabled)"));
  }
  const std::string& session = *cookie;
  if (path == "/api/agents") {
    if (req.method != "GET") return secured(net::ServerResponse::error(405, "use GET"));
    Json list = Json::array();
    for (const auto& a : agents_()) list.push_back(Json{{"name", a.name}, {"description", a.description}});
    return secured(net::ServerResponse::json(200, Json{{"agents", list}}));
  }
  if (path == "/api/messages") {
    if (req.method != "POST") return secured(net::ServerResponse::error(405, "use POST"));
    return secured(post_message(req, session));
  }
  if (path == "/api/history") {
    if (req.method != "GET") return secured(net::ServerResponse::error(405, "use GET"));
    return secured(history(session));
  }
  if (path == "/api/events") {
    if (req.method != "GET") return secured(net::ServerResponse::error(405, "use GET"));
    return secured(events(req, session));
  }
  return secured(net::ServerResponse::error(404, fmt::format("no such API: {}", path)));
}

net::ServerResponse WebChat::page(const net::ServerRequest& req) {
  auto r = secured(net::ServerResponse::text(200, "text/html; charset=utf-8", std::string(chat_html())));
  auto cookie = req.cookie(kCookie);
  if (!cookie || !valid_session(*cookie)) {
    r.headers.emplace_back("Set-Cookie", fmt::format("{}={}; Path=/; HttpOnly; SameSite=Strict{}", kCookie,
                                                     random_hex_id(16), opts_.secure_cookie ? "; Secure" : ""));
  }
  return r;
}

net::ServerResponse WebChat::post_message(const net::ServerRequest& req, const std::string& session) {
  // CSRF: a cross-site page can neither add a custom header (without a CORS preflight we never
  // grant) nor forge Origin. SameSite=Strict already keeps the cookie off cross-site requests.
  bool marked = req.header("x-moat") == std::optional<std::string>("1");
  auto origin = req.header("origin");
  auto host = req.header("host");
  bool same_origin = origin && host &&
                     (*origin == fmt::format("http://{}", *host) || *origin == fmt::format("https://{}", *host));
  if (!marked && !same_origin) {
    return net::ServerResponse::error(403, "cross-site request refused: send the header 'X-Moat: 1' from the chat page");
  }
  Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return net::ServerResponse::error(400, "the body must be a JSON object");
  auto str = [&](const char* k) {
    auto it = body.find(k);
    return it != body.end() && it->is_string() ? it->get<std::string>() : std::string{};
  };
  std::string agent = str("agent"), text = str("text"), client_id = str("client_id");
  if (agent.empty()) return net::ServerResponse::error(400, "'agent' is required: pick an agent");
  if (text.empty()) return net::ServerResponse::error(400, "'text' is required and must be a non-empty string");
  if (text.size() > opts_.max_text_bytes) {
    return net::ServerResponse::error(413, fmt::format("message too long ({} bytes, at most {})", text.size(), opts_.max_text_bytes));
  }
  if (!valid_client_id(client_id)) {
    return net::ServerResponse::error(400, "'client_id' must be 1-64 characters of letters, digits, '-' and '_'");
  }
  auto agents = agents_();
  if (std::none_of(agents.begin(), agents.end(), [&](const AgentInfo& a) { return a.name == agent; })) {
    return net::ServerResponse::error(404, fmt::format("no agent named '{}'", agent));
  }

  router::Envelope e;
  e.channel = "web";
  e.chat = chat_id(agent, session);
  e.sender = fmt::format("web-{}", session);
  e.sender_name = "web user";
  e.message_id = fmt::format("{}:{}", session, client_id);
  e.text = text;
  e.direct = true;
  e.agent = agent;
  e.received_ms = now_ms();  // what the history shows, now and after a restart (from the store)
  int64_t received_ms = e.received_ms;
  auto acc = accept_(std::move(e));
  if (!acc) {
    int status = acc.error().kind == ErrorKind::InvalidInput ? 400 : 503;
    log::warn("web: accept failed: {}", acc.error().message);
    return net::ServerResponse::error(status, fmt::format("message not accepted: {}", acc.error().message));
  }
  using O = router::Acceptance::Outcome;
  std::string key = user_key(client_id);
  if (acc->outcome != O::Dropped) {
    StoredMessage m{.key = key, .role = "user", .agent = agent, .chat = chat_id(agent, session), .text = text,
                    .at_ms = received_ms};
    std::lock_guard lock(mu_);
    chats_of_session_[session].insert(m.chat);
    Json j = stored_message_to_json(m);
    if (store_.add(std::move(m))) publish(session, "message", j, key);
  }
  Json out{{"outcome", acceptance_outcome(acc->outcome)}, {"envelope_id", acc->envelope_id}, {"key", key},
           {"agent", acc->agent.empty() ? agent : acc->agent}};
  if (!acc->pairing_code.empty()) out["pairing_code"] = acc->pairing_code;
  if (!acc->reason.empty()) out["reason"] = acc->reason;
  return net::ServerResponse::json(200, out);
}

net::ServerResponse WebChat::history(const std::string& session) {
  std::lock_guard lock(mu_);
  auto it = chats_of_session_.find(session);
  Json list = Json::array();
  if (it != chats_of_session_.end()) {
    std::vector<std::string> chats(it->second.begin(), it->second.end());
    for (const auto& m : store_.since(chats, 0)) list.push_back(stored_message_to_json(m));
  }
  return net::ServerResponse::json(200, Json{{"messages", list}});
}

net::ServerResponse WebChat::events(const net::ServerRequest& req, const std::string& session) {
  std::string after = req.header("last-event-id").value_or(req.query_param("after").value_or(""));
  auto stream = std::make_shared<net::EventStream>();
  std::lock_guard lock(mu_);
  // Replay and subscription happen under one lock, so a message delivered meanwhile is sent
  // exactly once: either in the replay or as a new event.
  stream->send_event("ready", "{}");
  auto it = chats_of_session_.find(session);
  if (it != chats_of_session_.end()) {
    std::vector<std::string> chats(it->second.begin(), it->second.end());
    for (const auto& m : store_.since(chats, store_.seq_of(chats, after))) {
      stream->send_event("message", stored_message_to_json(m).dump(-1, ' ', false, Json::error_handler_t::replace), m.key);
    }
  }
  auto& list = streams_[session];
  std::erase_if(list, [](const auto& s) { return s->closed(); });
  if (list.size() >= opts_.max_streams_per_session) {
    list.front()->close();  // the oldest tab loses its stream (it reconnects if still open)
    list.erase(list.begin());
  }
  list.push_back(stream);
  net::ServerResponse r;
  r.stream = stream;
  return r;
}

void WebChat::publish(const std::string& session, std::string_view event, const Json& data, std::string_view id) {
  auto it = streams_.find(session);
  if (it == streams_.end()) return;
  std::string payload = data.dump(-1, ' ', false, Json::error_handler_t::replace);
  std::erase_if(it->second, [&](const auto& s) { return !s->send_event(event, payload, id); });
  if (it->second.empty()) streams_.erase(it);
}

router::DeliveryResult WebChat::deliver(const router::Outbound& msg) { return router::delivered_if(show(msg)); }

Status WebChat::show(const router::Outbound& msg) {
  std::string session = session_of_chat(msg.chat);
  if (session.empty()) {
    return fail(ErrorKind::InvalidInput, "web chat: '{}' is not a web chat id (<agent>/web-<session>)", msg.chat);
  }
  StoredMessage m{.key = msg.key, .role = "agent", .agent = msg.agent, .chat = msg.chat, .text = msg.text,
                  .in_reply_to = msg.in_reply_to, .is_error = msg.is_error, .at_ms = msg.created_ms};
  std::lock_guard lock(mu_);
  chats_of_session_[session].insert(msg.chat);
  Json j = stored_message_to_json(m);
  if (!store_.add(std::move(m))) return {};  // a repeat of a message already delivered
  publish(session, "message", j, msg.key);
  return {};
}

void WebChat::restore(const std::vector<router::ChannelMessage>& history) {
  std::lock_guard lock(mu_);
  for (const auto& h : history) {
    std::string session = session_of_chat(h.chat);
    if (session.empty()) continue;
    std::string key = h.key;
    if (h.role == "user") {
      size_t colon = h.key.find(':');
      if (colon == std::string::npos) continue;
      key = user_key(std::string_view(h.key).substr(colon + 1));
    }
    chats_of_session_[session].insert(h.chat);
    store_.add(StoredMessage{.key = std::move(key), .role = h.role, .agent = h.agent, .chat = h.chat, .text = h.text,
                             .in_reply_to = h.in_reply_to, .is_error = h.is_error, .at_ms = h.at_ms});
  }
}

void WebChat::live(const router::LiveEvent& ev) {
  std::string session = session_of_chat(ev.chat);
  if (session.empty()) return;
  Json j{{"agent", ev.agent}, {"chat", ev.chat}, {"kind", ev.kind}, {"data", trim_live_data(ev.kind, ev.data)}};
  std::lock_guard lock(mu_);
  publish(session, "live", j, "");
}

}  // namespace moat::channels
