#include "channels/webhook/webhook_channel.h"

#include <algorithm>
#include <chrono>

#include "base/constant_time.h"
#include "base/ids.h"
#include "base/log.h"
#include "net/address.h"

namespace moat::channels {

namespace {

constexpr size_t kMaxIdBytes = 200;
constexpr size_t kPostedMemory = 10000;

bool printable_id(std::string_view s) {
  return !s.empty() && s.size() <= kMaxIdBytes &&
         std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

net::ServerResponse unauthorized() {
  auto r = net::ServerResponse::error(401, "missing or wrong bearer token (Authorization: Bearer <the agent's webhook token>)");
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

// The scope's rule for one address. Public: the egress gateway's classes (net::classify), with
// this host's own addresses as they are now (an interface may have come up since moatd started).
Status address_allowed(CallbackScope scope, const net::IpAddress& a) {
  if (scope == CallbackScope::Loopback) {
    if (net::classify(a) == net::AddressClass::Loopback) return {};
    return fail(ErrorKind::InvalidInput,
                "the callback host resolves to {}, which is not a loopback address; callbacks go to programs on this "
                "host unless [web] webhook_callbacks = \"public\"",
                net::format_address(a));
  }
  auto own = net::host_own_addresses();
  auto cls = net::classify(a, own);
  if (cls == net::AddressClass::Public) return {};
  return fail(ErrorKind::InvalidInput, "the callback address {} is a {}; callbacks may only go to public addresses",
              net::format_address(a), net::address_class_phrase(cls));
}

std::unique_ptr<net::HttpClient> callback_client(const WebhookOptions& opts) {
  net::ClientOptions o;
  o.extra_ca_file = opts.extra_ca_file;
  // A proxy is for leaving the host: never for a callback to a program on it.
  if (opts.callbacks == CallbackScope::Public) o.proxy = net::ProxySettings::from_environment();
  o.address_check = [scope = opts.callbacks](const net::IpAddress& a) { return address_allowed(scope, a); };
  return std::make_unique<net::HttpClient>(std::move(o));
}

}  // namespace

WebhookChannel::WebhookChannel(AcceptFn accept, WebhookTokensFn tokens, WebhookOptions opts)
    : accept_(std::move(accept)),
      tokens_(std::move(tokens)),
      opts_(opts),
      client_(callback_client(opts_)),
      store_(opts.replies_per_chat) {}

Result<net::Url> WebhookChannel::callback_url(std::string_view text) const {
  auto url = net::parse_url(text);
  if (!url) return url;
  if (opts_.callbacks == CallbackScope::Loopback) {
    if (!net::is_loopback_host(url->host))
      return fail(ErrorKind::InvalidInput, "must be on a loopback address (127.0.0.1, ::1, localhost)");
  } else if (auto ip = net::parse_ip_literal(url->host)) {
    if (auto ok = address_allowed(opts_.callbacks, *ip); !ok) return std::unexpected(ok.error());
  }
  return url;
}

void WebhookChannel::register_routes(net::HttpServer& server) {
  server.add_route("/hooks", [this](const net::ServerRequest& req) { return handle(req); });
}

bool WebhookChannel::authorized(const net::ServerRequest& req, const std::string& agent) const {
  auto auth = req.header("authorization");
  constexpr std::string_view scheme = "Bearer ";
  if (!auth || auth->size() <= scheme.size() || !net::istarts_with(*auth, scheme)) return false;
  std::string_view given = std::string_view(*auth).substr(scheme.size());
  bool ok = false;
  for (const auto& t : tokens_(agent)) {  // no early exit: timing says nothing about which token
    if (t.empty()) continue;
    ok |= constant_time_equal(given, t);
  }
  return ok;
}

net::ServerResponse WebhookChannel::handle(const net::ServerRequest& req) {
  // /hooks/<agent> or /hooks/<agent>/replies
  std::string_view rest = req.path;
  rest.remove_prefix(std::min(rest.size(), std::string_view("/hooks").size()));
  if (rest.starts_with('/')) rest.remove_prefix(1);
  std::string agent(rest.substr(0, rest.find('/')));
  std::string_view sub = rest.find('/') == std::string_view::npos ? std::string_view{} : rest.substr(rest.find('/'));
  if (agent.empty()) return net::ServerResponse::error(404, "use /hooks/<agent>");
  if (auto ok = validate_name("agent", agent); !ok) return net::ServerResponse::error(404, ok.error().message);
  if (sub.empty() || sub == "/") {
    if (req.method != "POST") return net::ServerResponse::error(405, "use POST to send a message");
    if (!authorized(req, agent)) return unauthorized();
    return inbound(req, agent);
  }
  if (sub == "/replies") {
    if (req.method != "GET") return net::ServerResponse::error(405, "use GET to poll replies");
    if (!authorized(req, agent)) return unauthorized();
    return replies(req, agent);
  }
  return net::ServerResponse::error(404, fmt::format("no such webhook path: {}", req.path));
}

net::ServerResponse WebhookChannel::inbound(const net::ServerRequest& req, const std::string& agent) {
  Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return net::ServerResponse::error(400, "the body must be a JSON object");
  auto str = [&](const char* k) {
    auto it = body.find(k);
    return it != body.end() && it->is_string() ? it->get<std::string>() : std::string{};
  };
  std::string chat = str("chat"), sender = str("sender"), message_id = str("message_id"), text = str("text");
  if (!printable_id(chat)) return net::ServerResponse::error(400, "'chat' is required: 1-200 printable characters");
  if (!printable_id(sender)) return net::ServerResponse::error(400, "'sender' is required: 1-200 printable characters");
  if (!printable_id(message_id)) {
    return net::ServerResponse::error(400, "'message_id' is required (1-200 printable characters): it makes retries safe");
  }
  if (text.empty()) return net::ServerResponse::error(400, "'text' is required and must be a non-empty string");
  if (text.size() > opts_.max_text_bytes) {
    return net::ServerResponse::error(413, fmt::format("'text' too long ({} bytes, at most {})", text.size(), opts_.max_text_bytes));
  }
  std::optional<net::Url> callback;
  if (auto cb = str("callback_url"); !cb.empty()) {
    auto url = callback_url(cb);
    if (!url) return net::ServerResponse::error(400, fmt::format("'callback_url': {}", url.error().message));
    callback = *url;
  } else if (body.contains("callback_url") && !body["callback_url"].is_null()) {
    return net::ServerResponse::error(400, "'callback_url' must be a string");
  }

  router::Envelope e;
  e.channel = "webhook";
  e.chat = chat_id(agent, chat);
  e.sender = sender;
  e.sender_name = str("sender_name");
  e.message_id = fmt::format("{}/{}", agent, message_id);
  e.text = std::move(text);
  e.direct = true;
  e.agent = agent;
  if (callback) e.reply_to = str("callback_url");  // stored with the message: survives a restart
  std::string moat_chat = e.chat;
  // Remember the callback before accepting: a fast turn may answer before accept() returns.
  if (callback) {
    std::lock_guard lock(mu_);
    callbacks_[moat_chat] = *callback;
  }
  auto acc = accept_(std::move(e));
  if (!acc) {
    log::warn("webhook: accept failed for {}: {}", agent, acc.error().message);
    int status = acc.error().kind == ErrorKind::InvalidInput ? 400 : 503;
    return net::ServerResponse::error(status, fmt::format("message not accepted: {}", acc.error().message));
  }
  Json out{{"envelope_id", acc->envelope_id}, {"outcome", acceptance_outcome(acc->outcome)},
           {"agent", acc->agent.empty() ? agent : acc->agent}};
  if (!acc->pairing_code.empty()) out["pairing_code"] = acc->pairing_code;
  if (!acc->reason.empty()) out["reason"] = acc->reason;
  return net::ServerResponse::json(202, out);
}

net::ServerResponse WebhookChannel::replies(const net::ServerRequest& req, const std::string& agent) {
  auto chat = req.query_param("chat");
  if (!chat || !printable_id(*chat)) return net::ServerResponse::error(400, "query parameter 'chat' is required");
  std::string after = req.query_param("after").value_or("");
  Json list = Json::array();
  std::lock_guard lock(mu_);
  for (const auto& m : store_.after(chat_id(agent, *chat), after)) {
    Json j = stored_message_to_json(m);
    j["chat"] = *chat;
    j.erase("role");
    list.push_back(std::move(j));
  }
  return net::ServerResponse::json(200, Json{{"replies", list}});
}

void WebhookChannel::restore(const std::vector<router::ChannelMessage>& history) {
  std::lock_guard lock(mu_);
  for (const auto& h : history) {
    if (h.role != "agent") continue;
    store_.add(StoredMessage{.key = h.key, .role = h.role, .agent = h.agent, .chat = h.chat, .text = h.text,
                             .in_reply_to = h.in_reply_to, .is_error = h.is_error, .at_ms = h.at_ms});
  }
}

router::DeliveryResult WebhookChannel::deliver(const router::Outbound& msg) {
  return router::delivered_if(hand_over(msg));
}

Status WebhookChannel::hand_over(const router::Outbound& msg) {
  size_t slash = msg.chat.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == msg.chat.size()) {
    return fail(ErrorKind::InvalidInput, "webhook: '{}' is not a webhook chat id (<agent>/<chat>)", msg.chat);
  }
  std::string caller_chat = msg.chat.substr(slash + 1);
  std::optional<net::Url> callback;
  {
    std::lock_guard lock(mu_);
    store_.add(StoredMessage{.key = msg.key, .role = "agent", .agent = msg.agent, .chat = msg.chat, .text = msg.text,
                             .in_reply_to = msg.in_reply_to, .is_error = msg.is_error, .at_ms = msg.created_ms});
    if (posted_.contains(msg.key)) return {};  // the callback already has it
    if (auto it = callbacks_.find(msg.chat); it != callbacks_.end()) callback = it->second;
  }
  // The callback the answered message named (kept in the store) wins over the latest one in
  // memory, which a restart loses.
  if (!msg.reply_to.empty()) {
    if (auto url = callback_url(msg.reply_to)) callback = *url;
  }
  if (!callback) return {};  // kept for polling

  Json body{{"key", msg.key},   {"chat", caller_chat},         {"agent", msg.agent},
            {"text", msg.text}, {"in_reply_to", msg.in_reply_to}, {"is_error", msg.is_error}};
  net::HttpRequest post{"POST", callback->path,
                        {{"Content-Type", "application/json"}, {"Idempotency-Key", msg.key}},
                        body.dump(-1, ' ', false, Json::error_handler_t::replace)};
  auto res = client_->fetch(*callback, post, {.timeout = opts_.callback_timeout});
  if (!res) {
    // A refused address is the caller's mistake (InvalidInput: not retried); anything else the
    // network's (Unavailable: the router retries with backoff).
    return fail(res.error().kind == net::HttpFailure::Kind::Refused ? ErrorKind::InvalidInput : ErrorKind::Unavailable,
                "webhook callback {}: {}", callback->origin(), res.error().error.message);
  }
  int s = res->head.status;
  if (s >= 200 && s < 300) {
    std::lock_guard lock(mu_);
    if (posted_.insert(msg.key).second) posted_order_.push_back(msg.key);
    while (posted_order_.size() > kPostedMemory) {
      posted_.erase(posted_order_.front());
      posted_order_.pop_front();
    }
    return {};
  }
  if (s >= 500 || s == 408 || s == 429) {
    return fail(ErrorKind::Unavailable, "webhook callback {}{} answered HTTP {}", callback->origin(), callback->path, s);
  }
  return fail(ErrorKind::InvalidInput, "webhook callback {}{} refused the reply with HTTP {}", callback->origin(),
              callback->path, s);
}

}  // namespace moat::channels
