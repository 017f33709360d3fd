#pragma once
// The web chat channel ("web"): a single page served by moatd's channel listener where a person
// picks an agent and talks to it, with the agent's reply streamed as it is written.
//
// Sessions: the page sets an HttpOnly, SameSite=Strict cookie `moat_session` (128 random bits, hex).
// One browser session is one conversation per agent. The envelope it produces:
//   channel "web", chat "<agent>/web-<session>", sender "web-<session>", message_id
//   "<session>:<client_id>" (the page's own id for the message, so a resubmit is a duplicate),
//   direct = true, agent = the agent picked.
// The chat id starts with the agent's name so routing works whether or not the router honours a
// preset `agent`: a rule for agent A matching channel "web" and chats "web:A/*" catches exactly
// A's web conversations.
//
// HTTP (all JSON errors are {"error": "..."}):
//   GET  /                 the page (sets the cookie);  GET /chat.js, /chat.css its script and style
//   GET  /api/agents       {"agents": [{"name", "description"}]}
//   POST /api/messages     {"agent", "text", "client_id"} -> {"outcome", "envelope_id", "key", ...}
//                          needs header `X-Moat: 1` or a same-origin Origin (CSRF)
//   GET  /api/history      {"messages": [message...]} of this session, oldest first
//   GET  /api/events       Server-Sent Events: `ready` once subscribed; `live` {agent, chat, kind, data}
//                          while a turn runs; `message` (id: outbox key) for each durable message.
//                          Last-Event-ID (or ?after=KEY) replays the messages after that key.
//   message = {"key", "role": "agent"|"user", "agent", "chat", "text", "in_reply_to", "is_error", "at_ms"}
// Requests whose Host is not an allowed name are refused (DNS rebinding).
// History is kept in memory (the last history_per_chat messages of each conversation) and taken
// back from the store when moatd starts (restore(): the channel's recent messages and replies, see
// Daemon::start_channels), so a restart does not empty the conversations people are having.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "channels/accept_fn.h"
#include "channels/message_ring.h"
#include "net/http_server.h"
#include "router/channel.h"

namespace moat::channels {

struct AgentInfo {
  std::string name;
  std::string description;
};
using AgentListFn = std::function<std::vector<AgentInfo>()>;

struct WebChatOptions {
  // Host header names (port ignored; as net::parse_authority reads them: lower-case, IPv6 without
  // brackets) the chat answers to; empty = any (behind a reverse proxy that checks it). Guards a
  // loopback listener against DNS rebinding.
  std::vector<std::string> allowed_hosts = {"127.0.0.1", "localhost", "::1"};
  size_t history_per_chat = 200;
  size_t max_text_bytes = 64 * 1024;
  size_t max_streams_per_session = 8;
  bool secure_cookie = false;  // add `Secure` when served over https (by a proxy)
};

class WebChat : public router::Channel {
 public:
  WebChat(AcceptFn accept, AgentListFn agents, WebChatOptions opts = {});
  ~WebChat() override;

  std::string_view name() const override { return "web"; }
  router::DeliveryResult deliver(const router::Outbound& msg) override;
  void live(const router::LiveEvent& ev) override;

  // Takes back what a restart would otherwise lose: the conversations the store kept
  // (Router::channel_history("web")), oldest first. Call before serving.
  void restore(const std::vector<router::ChannelMessage>& history);

  // Routes "/" (everything the other channels do not claim) to this chat.
  void register_routes(net::HttpServer& server);
  net::ServerResponse handle(const net::ServerRequest& req);

  static std::string chat_id(std::string_view agent, std::string_view session);
  // The session of a chat id made by chat_id(); empty when it is not one.
  static std::string session_of_chat(std::string_view chat);

 private:
  // Shows a reply to the chat's subscribers and keeps it for reloads; a repeat key is dropped.
  Status show(const router::Outbound& msg);
  net::ServerResponse page(const net::ServerRequest& req);
  net::ServerResponse post_message(const net::ServerRequest& req, const std::string& session);
  net::ServerResponse history(const std::string& session);
  net::ServerResponse events(const net::ServerRequest& req, const std::string& session);
  void publish(const std::string& session, std::string_view event, const Json& data, std::string_view id);  // mu_ held
  bool host_allowed(const net::ServerRequest& req) const;

  AcceptFn accept_;
  AgentListFn agents_;
  WebChatOptions opts_;

  std::mutex mu_;
  MessageStore store_;
  std::map<std::string, std::set<std::string>> chats_of_session_;
  std::map<std::string, std::vector<std::shared_ptr<net::EventStream>>> streams_;
};

}  // namespace moat::channels
