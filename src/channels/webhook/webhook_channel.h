#pragma once
// The webhook channel ("webhook"): other programs talk to an agent over HTTP.
//
// Inbound:  POST /hooks/<agent>
//   Authorization: Bearer <token>   (one of the agent's webhook tokens; compared in constant time)
//   Content-Type: application/json
//   {"chat": "ticket-42", "sender": "ci", "message_id": "evt-123", "text": "...",
//    "sender_name": "optional", "callback_url": "http://127.0.0.1:9000/moat (optional)"}
//   -> 202 {"envelope_id": 17, "outcome": "queued"|"duplicate"|"held"|"dropped", "agent": "...",
//           "pairing_code"?: "...", "reason"?: "..."}
//   A repeat of the same message_id (for the same agent) is answered "duplicate" and not run again,
//   so callers may retry freely. 400 for a malformed body, 401 for a missing or wrong token, 413 for
//   a body over 1 MiB, 503 when the message could not be stored (retry).
//
// Replies, when the request named a callback_url (the latest one given for that chat is used):
//   POST <callback_url>, Content-Type: application/json, Idempotency-Key: <key>
//   {"key": "o31", "chat": "ticket-42", "agent": "...", "text": "...", "in_reply_to": 17, "is_error": false}
//   Any 2xx acknowledges. A 5xx, 408, 429 or network error is retried by the router with backoff;
//   another 4xx marks the reply undeliverable. The same key may arrive twice: drop repeats.
//   A callback is http:// or https:// (verified TLS; HTTPS_PROXY/NO_PROXY apply to public ones)
//   and goes where WebhookOptions::callbacks allows: by default programs on this host (a loopback
//   address or localhost); with CallbackScope::Public, public addresses only — never loopback, a
//   private network, link-local, cloud metadata or one of this host's own addresses, the same
//   classes the egress gateway refuses (net/address.h). A literal address is judged when the
//   message arrives (400); a name on every delivery, on each address it resolves to, and the
//   connection goes to the address that was checked, so a name cannot be pointed at this host.
// Replies are also kept for polling (the last 200 per chat), with or without a callback:
//   GET /hooks/<agent>/replies?chat=ticket-42&after=<key>   (same bearer token)
//   -> 200 {"replies": [{"key", "chat", "agent", "text", "in_reply_to", "is_error", "at_ms"}...]}
//   oldest first; `after` omitted or unknown = every retained reply.
//
// Inside moat the envelope is channel "webhook", chat "<agent>/<chat>", message_id
// "<agent>/<message_id>", direct, agent preset: the chat id carries the agent so a route rule with
// chats "webhook:<agent>/*" matches it, and two agents' callers cannot collide on ids.
// A message's callback_url is stored with it (Envelope::reply_to) and its replies go there, across
// restarts too. Replies kept for polling live in memory and are taken back from the store when
// moatd starts (restore()), so a restart does not lose a reply nobody has polled yet.
#include <chrono>
#include <deque>
#include <filesystem>
#include <memory>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "channels/accept_fn.h"
#include "channels/message_ring.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/url.h"
#include "router/channel.h"

namespace moat::channels {

// The agent's valid webhook tokens (empty: the agent takes no webhooks).
using WebhookTokensFn = std::function<std::vector<std::string>(std::string_view agent)>;

// Where callbacks may go (the [web] webhook_callbacks setting).
enum class CallbackScope {
  Loopback,  // programs on this host: 127.0.0.0/8, ::1, localhost
  Public,    // public addresses only
};

struct WebhookOptions {
  CallbackScope callbacks = CallbackScope::Loopback;
  std::filesystem::path extra_ca_file;  // CAs trusted for https:// callbacks besides the host's store
  std::chrono::milliseconds callback_timeout{10000};
  size_t replies_per_chat = 200;
  size_t max_text_bytes = 256 * 1024;
};

class WebhookChannel : public router::Channel {
 public:
  WebhookChannel(AcceptFn accept, WebhookTokensFn tokens, WebhookOptions opts = {});

  std::string_view name() const override { return "webhook"; }
  // Stores the reply for polling and, when the chat has a callback, POSTs it there (blocking, up to
  // callback_timeout: this runs on the router's delivery thread).
  router::DeliveryResult deliver(const router::Outbound& msg) override;

  // Takes back the replies kept for polling from the store (Router::channel_history("webhook")),
  // oldest first; inbound messages, which polling never shows, are ignored. Call before serving.
  void restore(const std::vector<router::ChannelMessage>& history);

  // Routes "/hooks".
  void register_routes(net::HttpServer& server);
  net::ServerResponse handle(const net::ServerRequest& req);

  static std::string chat_id(std::string_view agent, std::string_view chat) { return fmt::format("{}/{}", agent, chat); }

 private:
  // Keeps a reply for polling and posts it to the callback, if there is one; a repeat key is dropped.
  Status hand_over(const router::Outbound& msg);
  net::ServerResponse inbound(const net::ServerRequest& req, const std::string& agent);
  net::ServerResponse replies(const net::ServerRequest& req, const std::string& agent);
  bool authorized(const net::ServerRequest& req, const std::string& agent) const;
  // Whether a callback URL may be used at all (its scheme; a literal address's class).
  Result<net::Url> callback_url(std::string_view text) const;

  AcceptFn accept_;
  WebhookTokensFn tokens_;
  WebhookOptions opts_;
  std::unique_ptr<net::HttpClient> client_;  // callbacks; its AddressCheck enforces opts_.callbacks

  std::mutex mu_;
  MessageStore store_;
  std::map<std::string, net::Url> callbacks_;      // moat chat id -> where its replies go
  std::unordered_set<std::string> posted_;           // keys a callback acknowledged
  std::deque<std::string> posted_order_;             // bounds posted_
};

}  // namespace moat::channels
