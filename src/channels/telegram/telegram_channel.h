#pragma once
// The Telegram channel ("telegram"): a bot, long polling the Bot API's getUpdates on a thread of its
// own, replying with sendMessage. docs/channels.md has the setup; telegram_update.h the mapping.
//
// Inbound, exactly once into the store. getUpdates(offset) returns the updates not yet confirmed; the
// envelopes they carry and the next offset (the last update_id + 1) are committed in one transaction
// (AcceptBatchFn = Router::accept_with_cursor), and only then is the next getUpdates sent with that
// offset, which is what confirms them to Telegram. A crash between the fetch and the commit leaves the
// stored offset where it was: the next moatd fetches the same updates again and stores them once (an
// envelope's key is "<chat>:<message>", so a repeat would be dropped by the router's dedupe too).
// At start the offset is the stored cursor (Router::channel_cursor); none means "what Telegram holds".
//
// Outbound: sendMessage, 4096 UTF-16 units a message (the router splits longer replies, router/split.h).
// The platform's message id is returned as Delivered::platform_id. A 429 returns its
// parameters.retry_after to the router, which waits that long before the next try; 400 (chat not
// found, a text Telegram refuses) and 403 (the bot was blocked or removed) are never deliverable;
// 401, 5xx and network errors are retried. Telegram has no idempotency key: a repeat of the same key
// in this process is dropped here, but moatd killed between Telegram's answer and the outbox's
// delivered mark sends that one part again after the restart (at most one repeat per part).
//
// Webhook mode (TelegramOptions::webhook_url set): instead of polling, the channel registers the URL with
// setWebhook (allowed_updates ["message"], max_connections 1 so Telegram sends one update at a time, in
// order, and a chat's messages are accepted in the order they were written) and serves its path on
// moatd's HTTP server (register_routes). Each POST must carry X-Telegram-Bot-Api-Secret-Token equal to
// the webhook secret, compared in constant time; a missing or wrong one is 401 and nothing is read
// further. The secret is derived from the bot token (webhook_secret_for): HMAC-SHA256(token, a fixed
// label), hex. Why not a secret of its own: whoever holds the token can call setWebhook and point the
// bot anywhere, so a second secret would protect nothing the token does not; deriving it leaves one
// secret to store and rotate (a new token gives a new secret when the channel sets the webhook again),
// and the header, which passes through the reverse proxy, never carries the token itself.
// An update is accepted durably (the router's accept_with_cursor, with the cursor {"offset": update_id
// + 1, "mode": "webhook"}) BEFORE the 200: Telegram delivers again whatever did not get a 2xx, and a
// repeat is dropped by its update_id (below the stored offset) and, failing that, by the envelope key.
// Switching back to polling: the stored cursor says "webhook", so the channel calls deleteWebhook
// once before its first getUpdates; a webhook set by something else stays a reported 409.
//
// Typing: between a turn's "turn_started" and "turn_ended" live events the chat shows "typing"
// (sendChatAction every typing_interval; Telegram shows it for 5 s), sent from the channel's own typing
// thread, so live() never waits on the network. A chat stops typing after typing_cap even if no
// "turn_ended" ever comes.
//
// Previews: preview_interval() is one second (Telegram tolerates about one edit a second per chat);
// preview() creates the message with sendMessage and edits it with editMessageText, and deliver() of
// a part 0 with edit_platform_id edits that message into the final text. "message is not modified"
// is a success; a preview message that is gone (deleted by someone) is replaced by a new message.
//
// Failures are states, never a silent death (ChannelStatus): a token Telegram refuses (401) is
// "failed" with what to do, and the channel asks again (getMe) with backoff up to a minute, re-reading
// the token from the vault, and at once when the secret changes (looked at each second), so
// `moat secret set NAME --channel` fixes it without a restart;
// a 409 (another getUpdates poller with this token, or a webhook set) is "conflict" and retried with
// backoff; everything else is "retrying". The token is in every request's path: it never appears in a
// log line, an error or a status (redacted, should an error ever quote it).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <deque>

#include "base/result.h"
#include "channels/accept_fn.h"
#include "channels/attachment_fetch.h"
#include "channels/channel_status.h"
#include "channels/telegram/telegram_update.h"
#include "net/backoff.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/url.h"
#include "router/channel.h"
#include "router/router.h"

namespace moat::channels {

struct TelegramOptions {
  std::string api_base = "https://api.telegram.org";
  // Where files sent with messages are downloaded (getFile) before the message is stored; null: they
  // are listed to the agent as unavailable.
  AttachmentStage* attachments = nullptr;
  std::string token_secret;  // the vault secret's name, for messages
  std::chrono::milliseconds poll_timeout{25000};  // getUpdates long-poll timeout
  std::chrono::milliseconds request_timeout{15000};  // every other call
  std::filesystem::path extra_ca_file;
  net::ProxySettings proxy;
  // After a failure: 1 s, 2 s, 4 s ... up to 30 s, a fifth of jitter (several moatds on one bot).
  net::Backoff backoff{.initial = std::chrono::milliseconds(1000), .factor = 2.0, .cap = std::chrono::milliseconds(30000),
                       .jitter = 0.2};
  // After a refused token: up to a minute between tries (the owner has to act).
  std::chrono::milliseconds refused_token_cap{60000};
  // Webhook mode when set: the public URL Telegram calls, and its path, which register_routes serves.
  std::string webhook_url;
  std::string webhook_path;
  uint64_t webhook_body_limit = 1 << 20;  // an update is a few KiB; Telegram sends no files inline
  // How often the webhook's health is asked (getWebhookInfo): Telegram's delivery errors become status.
  std::chrono::milliseconds webhook_check_interval{60000};
  std::chrono::milliseconds typing_interval{4500};  // Telegram shows "typing" for 5 s
  std::chrono::milliseconds typing_cap{std::chrono::minutes(15)};
  std::chrono::milliseconds preview_interval{1000};
};

// The X-Telegram-Bot-Api-Secret-Token moatd sets with setWebhook and expects on every delivery:
// HMAC-SHA256(token, "moat telegram webhook secret"), 64 hex characters (Telegram allows A-Z a-z 0-9 _ -,
// 1 to 256 of them). Empty for an empty token.
std::string webhook_secret_for(std::string_view token);

class TelegramChannel : public router::Channel {
 public:
  TelegramChannel(TokenFn token, AcceptBatchFn accept, CursorFn cursor, TelegramOptions opts);
  ~TelegramChannel() override;  // stop()s
  TelegramChannel(const TelegramChannel&) = delete;
  TelegramChannel& operator=(const TelegramChannel&) = delete;

  std::string_view name() const override { return "telegram"; }
  router::DeliveryResult deliver(const router::Outbound& msg) override;
  router::MessageLimit message_limit() const override { return {4096, router::TextUnit::Utf16}; }
  void live(const router::LiveEvent& ev) override;
  std::chrono::milliseconds preview_interval() const override { return opts_.preview_interval; }
  router::DeliveryResult preview(const router::Preview& p) override;

  // Webhook mode: serves POST <webhook_path> on `server` (before it starts). Nothing in polling mode.
  void register_routes(net::HttpServer& server);

  // Starts the polling thread (after the router has started: what it accepts is queued at once).
  void start();
  // Stops polling (an open long poll is cancelled within ~100 ms) and joins the thread.
  void stop();

  ChannelStatus status() const;

 private:
  struct ApiError {
    int code = 0;  // HTTP status; 0 for a network or protocol failure
    std::string description;
    std::chrono::milliseconds retry_after{0};
  };
  using ApiResult = std::expected<Json, ApiError>;

  void run();
  void run_typing();
  // sendMessage of `text` to `chat`; the message id.
  router::DeliveryResult send_text(int64_t chat, const std::string& text, std::string_view reply_to);
  // editMessageText of message `message_id`; "message is not modified" counts as done. An error
  // whose description says the message is gone is returned as NotFound (the caller sends anew).
  router::DeliveryResult edit_text(int64_t chat, std::string_view message_id, const std::string& text);
  router::DeliveryResult send_failure(const ApiError& e, std::string_view chat) const;
  bool ensure_token();
  // Webhook mode: setWebhook with our URL and secret; false on failure (status set).
  bool set_webhook();
  // Webhook mode: getWebhookInfo, its findings as status; false when the webhook must be set again.
  bool check_webhook();
  // Polling mode: if the stored cursor says a webhook was ours, deleteWebhook first.
  bool leave_webhook_mode();
  net::ServerResponse handle_webhook(const net::ServerRequest& req);
  // Stores what one fetch or delivery brought with the cursor after it; the offset then moves.
  Result<size_t> store_updates(const Json& updates, int64_t next, std::string_view mode);
  // Downloads the envelope's files (getFile, then the file URL, which carries the token) into the
  // staging area; each that cannot be staged says why (channels/attachment_fetch.h).
  void download_attachments(router::Envelope& e);
  bool webhook_mode() const { return !opts_.webhook_url.empty(); }
  // Webhook mode's loop between checks; false when the webhook must be set again (after backoff).
  bool watch_webhook();
  void forget_bot();  // identify again next
  telegram::BotIdentity bot() const;
  // One Bot API call: POST <api_base>/bot<token>/<method> with a JSON body; the "result" on ok.
  ApiResult call(std::string_view method, const Json& params, std::chrono::milliseconds timeout);
  bool identify();  // getMe; false on failure (status set)
  // One getUpdates and the commit of what it brought; false on failure (status set, wait computed).
  bool poll_once(std::chrono::milliseconds& wait);
  bool load_token();
  bool token_changed();  // the vault holds another token than the one last used

  void set_state(ChannelState s, std::string error = {});
  std::string redact(std::string text) const;
  std::string describe(const ApiError& e) const;
  // Sleeps up to `d`, waking early on stop(); false when stopping.
  bool pause(std::chrono::milliseconds d);

  TokenFn token_fn_;
  AcceptBatchFn accept_;
  CursorFn cursor_;
  TelegramOptions opts_;
  net::Url base_;
  std::string base_error_;  // api_base did not parse
  std::unique_ptr<net::HttpClient> client_;

  mutable std::mutex token_mu_;
  std::string token_;  // wiped when replaced and at destruction

  std::atomic<bool> stopping_{false};
  std::mutex wait_mu_;
  std::condition_variable wake_;
  std::thread thread_;

  // The next update_id to take: what the stored cursor says, advanced by each commit. The poll thread
  // and (webhook mode) the HTTP server's handler threads take accept_mu_ for a fetch's commit, which
  // also keeps webhook deliveries in order.
  std::mutex accept_mu_;
  std::optional<int64_t> offset_;
  std::string stored_mode_;  // the cursor's "mode" at start: "polling", "webhook" or "" (none)

  mutable std::mutex bot_mu_;
  telegram::BotIdentity bot_;  // the poll thread writes it before Connected; webhook handlers read it
  int64_t webhook_set_s_ = 0;  // when our setWebhook succeeded (Telegram's clock is in seconds)
  std::atomic<int64_t> webhook_ok_s_{0};  // the last delivery we answered 2xx

  // Typing: chat -> the turns running there and when to show "typing" next.
  struct Typing {
    int turns = 0;
    std::chrono::steady_clock::time_point next, started;
  };
  std::mutex typing_mu_;
  std::condition_variable typing_cv_;
  std::unordered_map<int64_t, Typing> typing_;
  std::thread typing_thread_;

  mutable std::mutex status_mu_;
  ChannelStatus status_;

  std::mutex sent_mu_;
  std::unordered_map<std::string, std::string> sent_;  // key -> platform message id, this process
  std::deque<std::string> sent_order_;                 // bounds sent_
};

}  // namespace moat::channels
